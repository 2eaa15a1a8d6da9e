"""The programme: the signed schedule in force, turned into typed queue items.

Owned by OnAir (composition): it says which occurrence is due, when to look again, what the next 24 h
need in the cache, and which playlist entry is on at a wall-clock moment (radio-style: after a
preemption or a restart the programme continues where it would be, not where it stopped). It performs
no IO except re-reading the stored envelope, which it has verified again first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from node.playback import schedule as sched
from node.playback.arbiter import Level, QueueItem
from node.playback.items import Clip, Live, Slot
from node.trust.commands import DEFAULT_LIMITS
from node.trust.envelope import parse_envelope

log = logging.getLogger(__name__)

PREFETCH_HORIZON = dt.timedelta(hours=24)
LIVE_SLOT_GRACE_S = 30.0


def payload_of(envelope: bytes, limits=None) -> bytes:
    """The payload bytes of an envelope that read_stored has just verified again."""
    limits = limits or DEFAULT_LIMITS
    return parse_envelope(envelope, max_bytes=limits.max_envelope_bytes, max_signatures=limits.max_signatures).payload


def _epoch(when: dt.datetime) -> float:
    return when.timestamp()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


class Programme:
    """cfg is read at each use: signed remote settings change relays.warmup while running."""

    def __init__(self, cfg, read_stored, limits=None):
        """read_stored(envelope, kinds, where): the stored schedule verified again (the intake's), because
        local storage is not a trusted channel; raises RemoteDataError when it no longer verifies."""
        self.cfg, self.read_stored, self.limits = cfg, read_stored, limits
        self.body: dict | None = None
        self.version = 0
        self.started_occurrences: set[str] = set()

    # --- the schedule in force ---------------------------------------------------------------------
    def load(self, envelope: bytes) -> None:
        command = self.read_stored(envelope, ("schedule",), "schedule")
        self.body = json.loads(payload_of(envelope, self.limits))["body"]
        self.version = command.version
        log.info("schedule version %d in force (%d slots)", self.version, len(self.body.get("slots", [])))

    def due(self, now: dt.datetime, enqueued_at: float, mono_for) -> QueueItem | None:
        """The occurrence on at now + warm-up (so its first second is heard), once per occurrence.
        mono_for: signed wall time -> loop deadline."""
        if not self.body:
            return None
        occ = sched.active_at(self.body, self.cfg.node.timezone, now + dt.timedelta(seconds=self.cfg.relays.warmup))
        if occ is None or occ.occurrence_id in self.started_occurrences:
            return None
        self.started_occurrences.add(occ.occurrence_id)
        return self.slot_item(occ, enqueued_at, mono_for(occ.ends_at))

    def missed(self, since: dt.datetime, now: dt.datetime) -> list[sched.Occurrence]:
        """Occurrences over by `now` that started in [since, now) and never started: what a node without
        trusted time could not play. Marked started, so each is recorded once."""
        if not self.body:
            return []
        missed = sched.missed_between(self.body, self.cfg.node.timezone, since, now, self.started_occurrences)
        self.started_occurrences.update(occ.occurrence_id for occ in missed)
        return missed

    def seconds_to_next_check(self, now: dt.datetime | None) -> float:
        """At the next occurrence start (one-off items start at any second), at most a minute away."""
        if now is None:
            return 10.0  # no trusted time yet: nothing may start; look again soon
        delay = 60.0
        try:
            lead = dt.timedelta(seconds=self.cfg.relays.warmup)
            upcoming = sched.expand(self.body, self.cfg.node.timezone, now + lead + dt.timedelta(milliseconds=1),
                                    now + lead + dt.timedelta(seconds=60)) if self.body else []
        except Exception:  # noqa: BLE001 - reported by the tick itself
            upcoming = []
        if upcoming:
            delay = (upcoming[0].starts_at - now).total_seconds() - self.cfg.relays.warmup
        return max(0.005, delay)

    def wanted(self, now: dt.datetime) -> tuple[set[str], list[Clip]]:
        """(sha256 to pin in the cache, clips with a url to prefetch) for the next 24 hours."""
        if not self.body:
            return set(), []
        needed = sched.needed_content(self.body, self.cfg.node.timezone, now, PREFETCH_HORIZON)
        fetch = []
        for occ in sched.expand(self.body, self.cfg.node.timezone, now - dt.timedelta(hours=1), now + PREFETCH_HORIZON):
            for entry in occ.playlist or ():
                if entry["sha256"] in needed and entry.get("url"):
                    fetch.append(Clip.from_dict(entry))
        return needed, fetch

    # --- occurrences as queue items -------------------------------------------------------------------
    @staticmethod
    def slot_item(occ: sched.Occurrence, enqueued_at: float, expires_at: float | None) -> QueueItem:
        level = Level.PRIORITY if occ.level == "priority" else Level.SCHEDULED
        if occ.live:
            content = Live(url=occ.live["url"], until=_epoch(occ.ends_at), volume=occ.volume,
                           grace=LIVE_SLOT_GRACE_S, slot_id=occ.slot_id, starts_at=_epoch(occ.starts_at))
        else:
            content = Slot(occ.slot_id, _epoch(occ.starts_at), _epoch(occ.ends_at), occ.volume,
                           tuple(Clip.from_dict(entry) for entry in occ.playlist or ()))
        return QueueItem(item_id=occ.occurrence_id, level=level, source="live" if occ.live else "schedule",
                         content=content, enqueued_at=enqueued_at, expires_at=expires_at,
                         duration=(occ.ends_at - occ.starts_at).total_seconds(), content_id=occ.slot_id)

    @staticmethod
    def position(slot: Slot, now: dt.datetime | None, last_index: int | None) -> tuple[int, float] | None:
        """(entry index, seconds into it) to play now, or None when the playlist is done."""
        occ = sched.Occurrence(slot.slot_id, _utc(slot.starts_at), _utc(slot.ends_at), "normal", slot.volume,
                               tuple({"duration": c.duration} for c in slot.playlist), None)
        position = sched.playlist_position(occ, now) if now else None
        if last_index is not None and (position is None or position[0] <= last_index):
            # The entry ended a little before its signed duration: go on with the next one, never
            # replay the tail of the one that just finished.
            more = last_index + 1 < len(slot.playlist)
            position = (last_index + 1, 0.0) if more and position is not None else None
        return position
