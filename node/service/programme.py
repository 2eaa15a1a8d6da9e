"""Programmes: the signed schedule on air (part of OnAir, split out to keep modules readable).

A slot is one arbiter item; its playlist is played radio-style: after a preemption or a restart the
programme continues where it would be at this wall-clock moment, not where it stopped. Content the
next 24 hours need is prefetched and pinned in the cache.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING

from node.playback import schedule as sched
from node.playback.arbiter import Level, QueueItem
from node.playback.records import PlayResult
from node.trust.commands import DEFAULT_LIMITS
from node.trust.envelope import parse_envelope

if TYPE_CHECKING:
    from node.service.onair import Playing

log = logging.getLogger(__name__)

PREFETCH_HORIZON = dt.timedelta(hours=24)
SLOT_END_GRACE_S = 0.5


class ProgrammeMixin:
    def on_schedule(self, command, envelope: bytes) -> None:
        self._load_schedule(envelope)
        self._schedule_tick()

    def _parse(self, envelope: bytes, kinds: tuple[str, ...], where: str, stored_id: str | None = None):
        """Re-read a stored envelope: verified again (self.read_stored, the intake's) before it acts,
        because local storage is not a trusted channel. Raises RemoteDataError when it does not verify."""
        limits = self.limits or DEFAULT_LIMITS
        if self.read_stored is None:
            raise RuntimeError("OnAir.read_stored is not wired: a stored envelope cannot be verified")
        command = self.read_stored(envelope, kinds, where, stored_id)
        payload = parse_envelope(envelope, max_bytes=limits.max_envelope_bytes,
                                 max_signatures=limits.max_signatures).payload
        return payload, command

    def _load_schedule(self, envelope: bytes) -> None:
        payload, command = self._parse(envelope, ("schedule",), "schedule")
        self.schedule = json.loads(payload)["body"]
        self.schedule_version = command.version
        log.info("schedule version %d in force (%d slots)", self.schedule_version, len(self.schedule.get("slots", [])))

    # --- schedule --------------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        """Start the slot that is on now; prefetch and pin what the next 24 h need; re-arm."""
        self.loop.cancel(self._sched_timer)
        now = self.now_trusted()
        # Re-armed first: an exception below must not stop the schedule for good.
        self._sched_timer = self.loop.call_later(self._seconds_to_next_check(now), self._schedule_tick)
        if now is not None and self._recovery_pending:
            self._recover_commands()
        if self.schedule and now is not None:
            try:
                # Look warm-up seconds ahead, so that the programme's first second is heard.
                lead = dt.timedelta(seconds=self.cfg.relays.warmup)
                occ = sched.active_at(self.schedule, self.cfg.node.timezone, now + lead)
                self._prefetch(now)
            except Exception as exc:  # noqa: BLE001 - a bad schedule must not stop the node
                log.error("schedule: %s", exc)
                occ = None
            if occ and occ.occurrence_id not in self.started_occurrences:
                self.started_occurrences.add(occ.occurrence_id)
                self._offer(self._slot_item(occ))

    def _seconds_to_next_check(self, now: dt.datetime | None) -> float:
        """At the next occurrence start (one-off items start at any second), at most a minute away."""
        if now is None:
            return 10.0  # no trusted time yet: nothing may start; look again soon
        delay = 60.0
        try:
            lead = dt.timedelta(seconds=self.cfg.relays.warmup)
            upcoming = sched.expand(self.schedule, self.cfg.node.timezone, now + lead + dt.timedelta(milliseconds=1),
                                    now + lead + dt.timedelta(seconds=60)) if self.schedule else []
        except Exception:  # noqa: BLE001 - reported by the tick itself
            upcoming = []
        if upcoming:
            delay = (upcoming[0].starts_at - now).total_seconds() - self.cfg.relays.warmup
        return max(0.005, delay)

    def _prefetch(self, now: dt.datetime) -> None:
        needed = sched.needed_content(self.schedule, self.cfg.node.timezone, now, PREFETCH_HORIZON)
        self.cache.set_pinned(needed)
        for occ in sched.expand(self.schedule, self.cfg.node.timezone, now - dt.timedelta(hours=1),
                                now + PREFETCH_HORIZON):
            for entry in occ.playlist or ():
                if entry["sha256"] in needed and not self.cache.has(entry["sha256"]) and entry.get("url"):
                    failed = self.fetch_failures.get(entry["sha256"])
                    if failed is None or self.clock.monotonic() >= failed[1]:
                        self._fetch(entry)

    def _slot_item(self, occ: sched.Occurrence) -> QueueItem:
        level = Level.PRIORITY if occ.level == "priority" else Level.SCHEDULED
        return QueueItem(
            item_id=occ.occurrence_id, level=level, source="live" if occ.live else "schedule",
            content={"kind": "live" if occ.live else "slot", "slot_id": occ.slot_id,
                     "starts_at": occ.starts_at.timestamp(), "ends_at": occ.ends_at.timestamp(),
                     "volume": occ.volume, "playlist": list(occ.playlist or []),
                     "url": (occ.live or {}).get("url"), "grace": 30, "until": occ.ends_at.timestamp()},
            enqueued_at=self.clock.monotonic(), expires_at=self._mono_for(occ.ends_at),
            duration=(occ.ends_at - occ.starts_at).total_seconds(), content_id=occ.slot_id)

    def _occurrence(self, content: dict) -> sched.Occurrence:
        return sched.Occurrence(content["slot_id"], dt.datetime.fromtimestamp(content["starts_at"], dt.timezone.utc),
                                dt.datetime.fromtimestamp(content["ends_at"], dt.timezone.utc), "normal",
                                content.get("volume"), tuple(content["playlist"]), None)

    def _slot_next_entry(self) -> None:
        """Play the playlist entry that should be on at this wall-clock moment (radio-style: after a
        preemption or a restart the programme continues where it would be, not where it stopped)."""
        on = self.on
        now = self.now_trusted()
        playlist = on.item.content["playlist"]
        position = sched.playlist_position(self._occurrence(on.item.content), now) if now else None
        last = on.entry.get("_index") if on.entry else None
        if last is not None and (position is None or position[0] <= last):
            # The entry ended a little before its signed duration: go on with the next one, never
            # replay the tail of the one that just finished.
            position = (last + 1, 0.0) if last + 1 < len(playlist) and position is not None else None
        if position is None:
            self._finish(None, None)  # playlist done: the slot item ends (its entries are recorded)
            return
        index, offset = position
        entry = playlist[index]
        on.entry = dict(entry, volume=entry.get("volume", on.item.content.get("volume")), _index=index)
        if not self._play_entry(on.entry, offset):
            self._write_record(on, PlayResult.SKIPPED, on.failure or "content_missing")
            # Nothing to play for this entry: look again when it would have ended.
            on.timers.append(self.loop.call_later(max(0.5, entry["duration"] - offset), self._slot_next_entry))

    def _end_slot(self, on: Playing) -> None:
        if self.on is on:
            self.player.stop()
            sounding = on.started_mono is not None
            self._finish(PlayResult.STOPPED if sounding else None, "slot_end" if sounding else None)

