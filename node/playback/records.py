"""Proof-of-play records (royalty reporting and "did it really sound?") and the pure failure judge."""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Iterable


class PlayResult(enum.Enum):
    COMPLETED = "completed"  # played to its end and sounded
    PREEMPTED = "preempted"  # cut by a higher-level item (it may come back: a new record then)
    STOPPED = "stopped"      # a stop command (or shutdown) ended it
    FAILED = "failed"        # started but did not sound: see failure_reason
    SKIPPED = "skipped"      # never started: expired in the queue, queue full, stopped while queued


# Stable failure reasons (reported to the district; never rename).
FAIL_PLAYER_ERROR = "player_error"
FAIL_NO_AUDIO = "no_audio"
FAIL_AMP_FAULT = "amp_fault"
FAIL_RELAY_FEEDBACK = "relay_feedback_mismatch"


@dataclass
class PlayRecord:
    content_id: str
    sha256: str
    level: str
    source: str  # "command" | "schedule" | "live"
    result: PlayResult
    command_id: str | None = None  # for source "command"
    slot_id: str | None = None  # for source "schedule"/"live" (occurrence id)
    scheduled_at: float | None = None  # epoch seconds
    started_at: float | None = None  # epoch seconds, None when skipped
    ended_at: float | None = None
    seconds_played: float = 0.0
    volume: int | None = None
    relays: list[tuple[float, str, bool]] = field(default_factory=list)  # (seconds from start, name, on)
    failure_reason: str | None = None
    title: str | None = None  # the signed content item's title, for the district's royalty report
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        data = asdict(self)
        data["result"] = self.result.value
        data["relays"] = [list(change) for change in self.relays]
        return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PlayRecord:
        data = json.loads(text)
        data["result"] = PlayResult(data["result"])
        data["relays"] = [(float(t), str(name), bool(on)) for t, name, on in data.get("relays", [])]
        return cls(**data)


def relay_changes_during(history: Iterable[tuple[float, str, bool]], start: float, end: float,
                         lead: float = 10.0) -> list[tuple[float, str, bool]]:
    """RelayBoard.history entries from `lead` seconds before `start` to `end`, as offsets from start
    (the warm-up happens before the player starts, so it shows as negative offsets)."""
    return [(round(t - start, 3), name, on) for t, name, on in history if start - lead <= t <= end]


def judge_failure(player_events: Iterable, amp_fault_seen: bool, relay_feedback_mismatch: bool,
                  audio_produced: bool | None) -> str | None:
    """Why an item failed to sound, or None if nothing says it failed.

    player_events: the PlayerEvents of this item (objects with .kind and .detail).
    amp_fault_seen: the amp_fault input was active at any time while the item played.
    relay_feedback_mismatch: the relay_feedback input disagreed with the commanded relay state.
    audio_produced: whether output was observed (None = this output cannot tell).
    The first matching rule wins, most specific first.
    """
    for event in player_events:
        if event.kind == "error":
            return FAIL_NO_AUDIO if event.detail == "no_audio" else FAIL_PLAYER_ERROR
    if audio_produced is False:
        return FAIL_NO_AUDIO
    if amp_fault_seen:
        return FAIL_AMP_FAULT
    if relay_feedback_mismatch:
        return FAIL_RELAY_FEEDBACK
    return None
