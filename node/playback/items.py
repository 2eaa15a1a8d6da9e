"""What a queue item carries: typed content for the three things a node plays.

The arbiter treats `QueueItem.content` as opaque; the on-air controller, the programme and the recorder
read these fields. Every class round-trips through `to_dict()` / `content_from_dict()` because the
item on air is written to the journal (docs/playback.md, "Crash and resume").

Times are epoch seconds (signed wall times); the arbiter's deadlines stay on the loop's monotonic clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Clip:
    """One signed audio file: a bulletin's content or one entry of a programme's playlist."""

    content_id: str
    sha256: str
    duration: float
    length: int | None = None
    codec: str | None = None
    url: str | None = None      # where to fetch it when it is not cached; None: must be cached already
    volume: int | None = None
    zones: tuple[str, ...] | None = None  # None: every zone of the cabinet
    title: str | None = None    # the signed title, carried into the play record (royalty report)

    @classmethod
    def from_dict(cls, data: dict) -> Clip:
        zones = data.get("zones")
        return cls(content_id=data["content_id"], sha256=data["sha256"], duration=data.get("duration") or 0.0,
                   length=data.get("length"), codec=data.get("codec"), url=data.get("url"),
                   volume=data.get("volume"), zones=None if zones is None else tuple(zones),
                   title=data.get("title"))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["zones"] = None if self.zones is None else list(self.zones)
        return data


@dataclass(frozen=True)
class Bulletin:
    """A `play` command: one clip, maybe synchronised to a signed instant."""

    clip: Clip
    command_id: str
    start_at: float | None = None

    kind = "clip"

    @property
    def slot_id(self) -> None:
        return None

    @property
    def scheduled_at(self) -> float | None:
        return self.start_at

    @property
    def volume(self) -> int | None:
        return self.clip.volume

    @property
    def zones(self) -> tuple[str, ...] | None:
        return self.clip.zones

    def to_dict(self) -> dict:
        return {"kind": self.kind, "clip": self.clip.to_dict(), "command_id": self.command_id,
                "start_at": self.start_at}


@dataclass(frozen=True)
class Live:
    """A live relay: a `live` command (command_id) or a programme slot that relays a stream (slot_id)."""

    url: str
    until: float                    # the relay ends here (command expiry/max duration, or slot end)
    volume: int | None = None
    grace: float = 30.0             # a dropped stream is retried for this long before the item fails
    command_id: str | None = None
    slot_id: str | None = None
    starts_at: float | None = None  # slots only: sounds at the slot start

    kind = "live"

    @property
    def scheduled_at(self) -> float | None:
        return self.starts_at

    @property
    def zones(self) -> None:
        return None

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Slot:
    """One occurrence of a programme slot: its playlist plays radio-style between starts_at and ends_at."""

    slot_id: str
    starts_at: float
    ends_at: float
    volume: int | None = None
    playlist: tuple[Clip, ...] = field(default_factory=tuple)

    kind = "slot"

    @property
    def command_id(self) -> None:
        return None

    @property
    def scheduled_at(self) -> float:
        return self.starts_at

    @property
    def zones(self) -> None:
        return None

    def entry(self, index: int) -> Clip:
        """The playlist entry at `index`, with the slot's volume when the entry has none."""
        clip = self.playlist[index]
        return clip if clip.volume is not None else replace(clip, volume=self.volume)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "slot_id": self.slot_id, "starts_at": self.starts_at, "ends_at": self.ends_at,
                "volume": self.volume, "playlist": [clip.to_dict() for clip in self.playlist]}


Content = Bulletin | Live | Slot


def content_from_dict(data: dict) -> Content:
    """Inverse of `to_dict()` (the journal's copy of the item on air)."""
    kind = data.get("kind")
    if kind == "clip":
        return Bulletin(Clip.from_dict(data["clip"]), data["command_id"], data.get("start_at"))
    if kind == "live":
        return Live(**{k: v for k, v in data.items() if k != "kind"})
    if kind == "slot":
        return Slot(data["slot_id"], data["starts_at"], data["ends_at"], data.get("volume"),
                    tuple(Clip.from_dict(c) for c in data.get("playlist", ())))
    raise ValueError(f"unknown content kind {kind!r}")
