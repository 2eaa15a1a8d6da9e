"""On air: accepted commands and programme slots -> relay switching, playback and one record per play.

The item on air moves through the explicit state machine of node.playback.onair_states (WARMING,
CUED, STARTING, SOUNDING, GAP, RECONNECTING, ENDING); every move goes through `_move`, which refuses
what the table does not allow. The pure decisions come from node.playback: Arbiter (what plays),
RelaySequencer (when relays move), onair_states.judge (did it sound). OnAir owns, by composition, a
Programme (the schedule as typed queue items) and a Recorder (records and the journal), and performs
the effects with the adapters (relays, player, cache, fetcher).

Times: the arbiter and sequencer work on the loop's monotonic clock; signed times (expiry, start_at,
slot times) are converted with the *trusted* wall time, never the raw system clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
from dataclasses import dataclass, field

from node.playback.arbiter import Action, Arbiter, Level, QueueItem
from node.playback.items import Bulletin, Clip, Live, Slot
from node.playback.onair_states import RESUME, OnAirState, Resume, Trigger, judge, overdue_after, step
from node.playback.player import PlayerEvent
from node.playback.records import FAIL_AMP_FAULT, PlayRecord, PlayResult
from node.playback.relays import InputChanged
from node.playback.sequencer import RelaySequencer
from node.service.fetcher import FetchDone, FetchJob
from node.service.programme import Programme
from node.service.recorder import RECORD_LEVEL, Recorder
from node.trust import reasons

log = logging.getLogger(__name__)

# Relay sequencer phase -> "play.state" of the heartbeat (node/schemas/status.json).
PHASE_STATE = {"off": "idle", "waiting": "warming", "warming": "warming", "playing": "playing", "tail": "tail",
               "hold": "idle"}
LIVE_RETRY_S = 2.0


def _live_stall_s(live: Live) -> float:
    """A live stream silent this long counts as dropped: well inside its grace (default 30 s -> 5 s),
    so the relay can reconnect before the grace window ends."""
    return max(1.0, min(5.0, live.grace / 2))
SLOT_END_GRACE_S = 0.5
# While sounding, the journal notes how far it got (1, 2, 4, 8 s, then every 10 s): after a power cut the
# interrupted record's seconds and end time are short by at most a second early on, ten seconds later.
PROGRESS_MARKS_S = (1.0, 1.0, 2.0, 4.0)
PROGRESS_S = 10.0


@dataclass
class Playing:
    """The item on air, its state, and what its current record needs."""

    item: QueueItem
    state: OnAirState = OnAirState.WARMING
    since: float = 0.0              # wall time it went on air
    relays_from: float = 0.0        # relay changes from here on belong to its next record
    play_id: str | None = None      # id given to the player for the current media (late events are ignored)
    entry: Clip | None = None       # the clip (bulletin or playlist entry) being played
    entry_index: int | None = None  # programmes: its place in the playlist
    started_mono: float | None = None
    started_wall: float | None = None
    amp_fault_seen: bool = False
    failure: str | None = None      # why the current media could not start
    live_lost_since: float | None = None
    timers: list[int] = field(default_factory=list)
    progress_timer: int | None = None


class OnAir:
    def __init__(self, *, cfg, loop, clock, now_trusted, player, relays, inputs_state: dict, cache, fetcher, store,
                 reporter, health, changed, read_stored, max_queue: int, limits=None, now_strict=None):
        """read_stored(envelope, kinds, where, stored_id): a stored envelope verified again before it
        acts (node.service.intake.CommandIntake.read_stored); raises RemoteDataError when refused.
        now_trusted: time to play the programme by (node.service.intake.TrustedTime.schedule_now);
        now_strict: the time commands are judged by (TrustedTime.now; default now_trusted)."""
        self.cfg, self.loop, self.clock, self.now_trusted = cfg, loop, clock, now_trusted
        self.now_strict = now_strict or now_trusted
        self.player, self.relays, self.inputs_state = player, relays, inputs_state
        self.cache, self.fetcher, self.store = cache, fetcher, store
        self.emit_event, self.health, self.changed = reporter.event, health, changed
        self.limits = limits
        r = cfg.relays
        self.sequencer = RelaySequencer(r.warmup, r.tail, r.idle_hold, r.min_off)
        self.arbiter = Arbiter(max_queue)
        self.read_stored = read_stored
        self.programme = Programme(cfg, read_stored, limits)
        self.recorder = Recorder(node_id=cfg.node.id, store=store, reporter=reporter, wall=self._wall,
                                 default_volume=lambda: cfg.audio.default_volume)
        self.on: Playing | None = None
        self.waiting: dict[str, list[QueueItem]] = {}  # sha256 -> items waiting for their download
        self.held: dict[str, tuple[int, QueueItem]] = {}  # item_id -> (timer, item) waiting for start_at
        self.fetch_failures: dict[str, tuple[int, float]] = {}  # sha256 -> (failures, next retry, monotonic)
        self._recovery_pending = False
        self._untimed_since: float | None = None   # monotonic time the programme lost trusted time
        self.failed_to_sound: str | None = None  # latched alarm until the next successful play
        self._seq_timer = self._arb_timer = self._sched_timer = None
        self._play_ids = itertools.count(1)
        self.relay_log: list[tuple[float, str, bool]] = []
        self.last_move = clock.monotonic()
        self._overdue_at: float | None = None  # the state should have moved on by then (watchdog)
        self.stopped = False  # after stop(): nothing new goes on air while the final records are sent

    @property
    def schedule(self) -> dict | None:
        """The signed schedule body in force (the update service waits for a quiet moment by it)."""
        return self.programme.body

    @property
    def state(self) -> OnAirState:
        return self.on.state if self.on else OnAirState.IDLE

    # --- time helpers --------------------------------------------------------------------------
    def _mono_for(self, when: dt.datetime) -> float | None:
        """Monotonic deadline for a signed wall time; None when the clock is not trusted."""
        now = self.now_trusted()
        if now is None:
            return None
        return self.clock.monotonic() + (when - now).total_seconds()

    def _mono_for_epoch(self, epoch: float) -> float | None:
        return self._mono_for(dt.datetime.fromtimestamp(epoch, dt.timezone.utc))

    def _wall(self) -> float:
        now = self.now_trusted()
        return (now or self.clock.wall()).timestamp()

    # --- the state machine ---------------------------------------------------------------------
    def _move(self, trigger: Trigger) -> OnAirState:
        on = self.on
        on.state = step(on.state, trigger)
        self._moved()
        return on.state

    def _moved(self) -> None:
        now = self.clock.monotonic()
        self.last_move = now
        on = self.on
        if on is None:
            self._overdue_at = None
            return
        r = self.cfg.relays
        self._overdue_at = now + overdue_after(on.state, warmup=r.warmup, min_off=r.min_off,
                                               media_seconds=self._media_seconds(on))

    def _media_seconds(self, on: Playing) -> float:
        """How long the current state may rightly last: to the start instant, the clip's or the
        relay's end."""
        content = on.item.content
        if on.state is OnAirState.CUED and content.scheduled_at:
            return max(0.0, content.scheduled_at - self._wall())
        if isinstance(content, Live):
            return max(0.0, content.until - self._wall())
        return on.entry.duration if on.entry is not None else 0.0

    def stuck(self, now: float) -> str | None:
        """Why on-air makes no progress (its state overdue), or None: the watchdog pings only then."""
        if self.on is None or self._overdue_at is None or now <= self._overdue_at:
            return None
        return f"{self.on.state.value} for {now - self.last_move:.0f} s ({self.on.item.item_id})"

    def _journal_row(self, on: Playing, *, with_entry: bool = True) -> dict:
        row = {"state": on.state.value, "item": on.item.to_dict(), "since": on.since}
        if with_entry and on.entry is not None and on.started_wall is not None:
            row.update(entry=on.entry.to_dict(), entry_index=on.entry_index, entry_started=on.started_wall,
                       aired_until=self._wall())
        return row

    # --- start / stop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._recover_after_crash()
        stored = self.store.document("schedule")
        if stored:
            try:
                self.programme.load(stored[1])
            except Exception as exc:  # noqa: BLE001 - never let a stored document stop the node starting
                log.error("stored schedule version %s not loaded: %s", stored[0], exc)
                self.emit_event("schedule_unusable", {"version": stored[0], "detail": str(exc)[:200]})
        self._schedule_tick()

    def stop(self) -> None:
        """Shutdown: stop playback, record the interrupted item, relays off."""
        self.stopped = True
        if self.on:
            # The command stays journalled: an emergency cut by an update or a reboot plays again.
            self._finish(PlayResult.STOPPED, "shutdown", advance=False, forget=False)
        self.player.stop()
        self._perform(self.sequencer.force_off(self.clock.monotonic()))
        if self.relays:
            self.relays.all_off()

    # --- commands (from intake) ------------------------------------------------------------------
    def on_play(self, command, envelope: bytes) -> None:
        body = command.body
        c = body.content
        zones = None
        if c.zones:
            # A group command may name zones other clusters have: play on the ones this cabinet has.
            known = self.relays.zone_names if self.relays else []
            zones = tuple(z for z in c.zones if z in known)
            if not zones:
                self.emit_event("unknown_zone", {"command_id": command.id, "zones": list(c.zones)})
                zones = None if not known else ()
        clip = Clip(content_id=c.content_id, sha256=c.sha256, duration=c.duration, length=c.length, codec=c.codec,
                    url=c.url, volume=c.volume, zones=zones, title=c.title)
        item = QueueItem(item_id=command.id, level=Level(body.level), source="command",
                         content=Bulletin(clip, command.id, body.start_at.timestamp() if body.start_at else None),
                         enqueued_at=self.clock.monotonic(), expires_at=self._mono_for(command.expires),
                         duration=c.duration, resume_ok=False, content_id=c.content_id)
        if zones == ():
            self._record_skip(item, "unknown_zone")
            return
        self._when_content_ready(item, clip)

    def on_live(self, command) -> None:
        body = command.body
        deadline = min(command.expires, self.now_trusted() + dt.timedelta(seconds=body.max_duration))
        item = QueueItem(item_id=command.id, level=Level(body.level), source="live",
                         content=Live(url=body.url, until=deadline.timestamp(), volume=body.volume,
                                      grace=body.grace, command_id=command.id),
                         enqueued_at=self.clock.monotonic(), expires_at=self._mono_for(deadline),
                         duration=body.max_duration, resume_ok=False, content_id=f"live:{command.id}")
        self._offer(item)

    def on_stop(self, command, roles=frozenset({"emergency"})) -> None:
        """Stop by content id, by level or all: queued, waiting for download, held for start_at, on air.
        A stop signed without the emergency role (a bulletin key may stop by content id) never touches
        an emergency: only the emergency keys can cancel what they started."""
        body = command.body
        now = self.clock.monotonic()
        level = Level(body.level) if body.level else None
        spare = None if "emergency" in roles else Level.EMERGENCY

        def matches(item: QueueItem) -> bool:
            if item.level is spare:
                return False
            return bool(body.all) or item.level is level or body.content_id in (item.content_id, item.item_id)

        current_id = self.on.item.item_id if self.on else None
        dropped = self.arbiter.stop(now, content_id=body.content_id, level=level, all=bool(body.all), spare=spare)
        for sha, items in list(self.waiting.items()):
            for gone in [i for i in items if matches(i)]:
                self._record_skip(gone, "stop_command")
            self.waiting[sha] = [i for i in items if not matches(i)]
        for item_id, (token, item) in list(self.held.items()):
            if matches(item):
                self.loop.cancel(token)
                del self.held[item_id]
                self._record_skip(item, "stop_command")
        for d in dropped:
            if d.was_current and self.on and self.on.item.item_id == current_id:
                self.player.stop()
                self._finish(PlayResult.STOPPED, "stop_command", arbiter_done=True, advance=False)
                if body.all:  # "stop everything" means silence now: no tail, no idle hold
                    self._perform(self.sequencer.force_off(self.clock.monotonic()))
            else:
                self._record_skip(d.item, d.reason)
        self._next_if_idle()

    def on_config(self, command) -> bool:
        """Signed remote settings (whitelist in node.service.settings); taken whole or not at all."""
        from node.service import settings

        applied, problems = settings.accept(self.cfg, self.store, dict(command.body.settings))
        if problems:
            log.warning("config %s refused: %s", command.body.version, "; ".join(problems))
            self.emit_event("config_refused", {"command_id": command.id, "version": command.body.version,
                                               "problems": problems[:10]})
            return False
        later = settings.apply_live(self.cfg, self, self.health, applied)
        self.emit_event("config_applied", {"command_id": command.id, "version": command.body.version,
                                           "keys": sorted(applied), "after_restart": sorted(later)})
        return True

    def on_schedule(self, command, envelope: bytes) -> None:
        self.programme.load(envelope)
        self._schedule_tick()

    # --- the programme -----------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        """Start the slot that is on now; prefetch and pin what the next 24 h need; re-arm."""
        self.loop.cancel(self._sched_timer)
        now = self.now_trusted()
        # Re-armed first: an exception below must not stop the schedule for good.
        self._sched_timer = self.loop.call_later(self.programme.seconds_to_next_check(now), self._schedule_tick)
        self._note_clock_gap(now)
        if now is not None and self._recovery_pending:
            self._recover_commands()
        if now is None:
            return
        try:
            item = self.programme.due(now, self.clock.monotonic(), self._mono_for)
            self._prefetch(now)
        except Exception as exc:  # noqa: BLE001 - a bad schedule must not stop the node
            log.error("schedule: %s", exc)
            item = None
        if item is not None:
            self._offer(item)

    def on_clock_trusted(self) -> None:
        """Signed time arrived: the programme looks at once (and records what the gap made it miss)."""
        if not self.stopped:
            self._schedule_tick()

    def _note_clock_gap(self, now: dt.datetime | None) -> None:
        """Slots that fell in a stretch without trusted time get `skipped` records (clock_untrusted) once
        time returns. The gap is measured on the monotonic clock, so it covers this run only (a reboot
        starts untrusted: its gap is measured from the start)."""
        mono = self.clock.monotonic()
        if now is None:
            if self._untimed_since is None:
                self._untimed_since = mono
            return
        if self._untimed_since is None:
            return
        since = now - dt.timedelta(seconds=mono - self._untimed_since)
        self._untimed_since = None
        try:
            missed = self.programme.missed(since, now)
        except Exception as exc:  # noqa: BLE001 - a bad schedule is reported by the tick itself
            log.error("schedule: %s", exc)
            return
        for occ in missed:
            self._record_skip(self.programme.slot_item(occ, mono, None), reasons.CLOCK_UNTRUSTED)
        if missed:
            log.warning("%d scheduled slot(s) missed while the clock was untrusted", len(missed))

    def _prefetch(self, now: dt.datetime) -> None:
        needed, clips = self.programme.wanted(now)
        if self.programme.body:
            self.cache.set_pinned(needed)
        for clip in clips:
            if not self.cache.has(clip.sha256):
                failed = self.fetch_failures.get(clip.sha256)
                if failed is None or self.clock.monotonic() >= failed[1]:
                    self._fetch(clip)

    # --- content ---------------------------------------------------------------------------------
    def _when_content_ready(self, item: QueueItem, clip: Clip) -> None:
        if self.cache.has(clip.sha256):
            self._offer_or_hold(item)
            return
        if not clip.url:
            self._record_skip(item, "content_missing")
            self.emit_event("content_missing", {"content_id": clip.content_id, "sha256": clip.sha256})
            return
        self.waiting.setdefault(clip.sha256, []).append(item)
        self._fetch(clip, RECORD_LEVEL[item.level])

    def _fetch(self, clip: Clip, level: str = "normal") -> None:
        # The level picks the download lane: an emergency's audio never waits behind another download.
        self.fetcher.request(FetchJob(clip.sha256, clip.url, clip.length, clip.content_id, clip.codec,
                                      self.cache.partial_path(clip.sha256), level))

    def on_fetch_done(self, ev: FetchDone) -> None:
        job = ev.job
        if ev.path is None and self.cache.has(job.sha256) and job.sha256 not in self.waiting:
            return  # the other lane delivered this content first (an emergency re-fetched it): nothing lost
        self.fetcher.finished(job.sha256)
        items = self.waiting.pop(job.sha256, [])
        if ev.path is not None:
            try:
                self.cache.admit(ev.path, job.sha256, job.length, job.content_id, job.codec)
            except Exception as exc:  # noqa: BLE001 - cache_full or disk errors: report, don't crash
                ev = FetchDone(job, None, getattr(exc, "reason", "cache_error"), str(exc)[:200])
        if ev.path is None:
            failures = self.fetch_failures.get(job.sha256, (0, 0.0))[0] + 1
            # Prefetch retries back off (1 min, 2, 4 ... capped at 6 h, jittered): a broken link must not
            # turn into an event a minute over paid mobile data.
            delay = min(6 * 3600.0, 60.0 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            self.fetch_failures[job.sha256] = (failures, self.clock.monotonic() + delay)
            log.warning("content %s not delivered: %s %s", job.content_id, ev.reason, ev.detail)
            self.emit_event("content_failed", {"content_id": job.content_id, "sha256": job.sha256,
                                               "reason": ev.reason, "detail": ev.detail or None})
            for item in items:
                self._record_skip(item, ev.reason or "download_failed")
            return
        self.fetch_failures.pop(job.sha256, None)
        for item in items:
            self._offer_or_hold(item)

    # --- arbitration -----------------------------------------------------------------------------
    def _offer_or_hold(self, item: QueueItem) -> None:
        """Synchronised start: offer the item so that the amplifier has warmed up at start_at."""
        start_at = item.content.scheduled_at if isinstance(item.content, Bulletin) else None
        if start_at:
            at = self._mono_for_epoch(start_at)
            lead = self.cfg.relays.warmup + 0.5
            if at is not None and at - lead > self.clock.monotonic():
                token = self.loop.call_at(at - lead, lambda: self._release_held(item.item_id))
                self.held[item.item_id] = (token, item)
                return
        self._offer(item)

    def _release_held(self, item_id: str) -> None:
        held = self.held.pop(item_id, None)
        if held:
            self._offer(held[1])

    def _offer(self, item: QueueItem) -> None:
        if self.stopped:
            return  # shutting down: a journalled command plays after the restart, a slot is offered again
        now = self.clock.monotonic()
        position = self.player.position() if self.on else 0.0
        decision = self.arbiter.offer(item, now, position)
        for d in decision.dropped:
            self._record_skip(d.item, d.reason)
        if decision.action is Action.PLAY_NOW:
            if decision.preempted and self.on:
                cut = self.on
                self.player.stop()
                # A cut bulletin comes back (restart) unless the arbiter dropped it: only then is it forgotten.
                self._finish(PlayResult.PREEMPTED, f"preempted by {item.level.value} {item.item_id}",
                             arbiter_done=True, advance=False,
                             forget=decision.preempted_fate == "drop" and bool(cut.item.content.command_id))
            self._begin(item)
        elif decision.action in (Action.REJECTED, Action.DROPPED) and decision.reason != "duplicate":
            self._record_skip(item, decision.reason)
            self.emit_event("queue_rejected", {"command_id": item.item_id, "reason": decision.reason})
        self._arm_arbiter_timer()

    def _next_if_idle(self) -> None:
        if self.on is not None or self.stopped:
            return
        item, dropped = self.arbiter.next(self.clock.monotonic())
        for d in dropped:
            self._record_skip(d.item, d.reason)
        if item is not None:
            self._begin(item)
        else:
            self._perform(self.sequencer.playback_finished(self.clock.monotonic()))
        self._arm_arbiter_timer()

    def _arm_arbiter_timer(self) -> None:
        self.loop.cancel(self._arb_timer)
        deadline = self.arbiter.next_deadline()
        self._arb_timer = None if deadline is None else self.loop.call_at(deadline, self._expire_queue)

    def _expire_queue(self) -> None:
        for d in self.arbiter.expire(self.clock.monotonic()):
            self._record_skip(d.item, d.reason)
        self._arm_arbiter_timer()

    # --- the item on air -------------------------------------------------------------------------
    def _begin(self, item: QueueItem) -> None:
        since = self._wall()
        on = Playing(item, state=OnAirState.WARMING, since=since, relays_from=since)
        self.recorder.enter(OnAirState.WARMING, item, on.since)  # written before it is entered
        self.on = on
        self._moved()
        zones = item.content.zones
        self._perform(self.sequencer.request_play(self.clock.monotonic(), None if zones is None else list(zones)))

    def _ready_to_play(self) -> None:
        if self.on is None:
            return
        self._move(Trigger.CUE)
        # A synchronised command (start_at) or a programme slot (starts_at) sounds at its instant: the
        # relays were switched early enough for the warm-up to end before it.
        start_at = self.on.item.content.scheduled_at
        if start_at:
            at = self._mono_for_epoch(start_at)
            if at is not None and at > self.clock.monotonic():
                self.on.timers.append(self.loop.call_at(at, self._start_media))
                return
        self._start_media()

    def _start_media(self) -> None:
        on = self.on
        if on is None:
            return
        content = on.item.content
        if isinstance(content, Bulletin):
            self._move(Trigger.START)
            on.entry = content.clip
            if not self._play_entry(on.entry, offset=0.0):
                self._finish(PlayResult.FAILED, on.failure or "content_missing")
        elif isinstance(content, Live):
            self._move(Trigger.START)
            on.entry = None
            if not self._play_source(content.url, content.volume, stall_timeout=_live_stall_s(content)):
                self._finish(PlayResult.FAILED, on.failure)
                return
            until = self._mono_for_epoch(content.until)
            if until is not None:
                on.timers.append(self.loop.call_at(until, lambda: self._end_live(on)))
        else:
            ends = self._mono_for_epoch(content.ends_at)
            if ends is not None:
                # A little after the end: a playlist that fills its slot exactly should complete.
                on.timers.append(self.loop.call_at(ends + SLOT_END_GRACE_S, lambda: self._end_slot(on)))
            self._slot_next_entry()

    def _slot_next_entry(self) -> None:
        """Play the playlist entry that should be on at this wall-clock moment (radio-style)."""
        on = self.on
        slot: Slot = on.item.content
        position = Programme.position(slot, self.now_trusted(), on.entry_index)
        if position is None:
            self._finish(None, None)  # playlist done: the slot item ends (its entries are recorded)
            return
        index, offset = position
        self._move(Trigger.START)
        on.entry, on.entry_index = slot.entry(index), index
        if not self._play_entry(on.entry, offset):
            self._move(Trigger.ENTRY_MISSING)
            self._write_record(on, PlayResult.SKIPPED, on.failure or "content_missing")
            # Nothing to play for this entry: look again when it would have ended.
            on.timers.append(self.loop.call_later(max(0.5, on.entry.duration - offset), self._slot_next_entry))

    def _play_entry(self, entry: Clip, offset: float) -> bool:
        """Start a cached clip; False (with on.failure set) when it cannot start."""
        path = self.cache.path_for(entry.sha256)
        if path is None:
            self.on.failure = "content_missing"
            self.emit_event("content_missing", {"content_id": entry.content_id, "sha256": entry.sha256})
            return False
        return self._play_source(str(path), entry.volume, offset)

    def _play_source(self, source: str, volume: int | None, offset: float = 0.0, *, retry: bool = False,
                     stall_timeout: float | None = None) -> bool:
        on = self.on
        on.play_id = f"{on.item.item_id}-{next(self._play_ids)}"
        if not retry:  # a live reconnect keeps the item's start: the record counts the whole relay
            on.started_mono, on.started_wall = None, None
        on.amp_fault_seen = bool(self.inputs_state.get("amp_fault"))
        # STARTING is written before the player gets the media: from here on, a power cut may cut audio
        # that was heard, and the interrupted record must name the clip.
        detail = self._entry_detail(on) or {"entry": on.entry.to_dict() if on.entry else None,
                                            "entry_index": on.entry_index}
        self.recorder.enter(on.state, on.item, on.since, **detail)
        try:
            extra = {"stall_timeout": stall_timeout} if stall_timeout is not None else {}
            self.player.play(source, volume=volume if volume is not None else self.cfg.audio.default_volume,
                             item_id=on.play_id, start_at=offset, **extra)
        except Exception as exc:  # noqa: BLE001 - libVLC or sound-card trouble must not wedge the node
            log.error("player could not start %s: %s", source, exc)
            on.failure = f"player_error:{type(exc).__name__}"
            return False
        return True

    # --- player events ---------------------------------------------------------------------------
    def on_player_event(self, ev: PlayerEvent) -> None:
        on = self.on
        if on is None or ev.item_id != on.play_id:
            return  # a late event of media we already stopped
        if ev.kind == "playing":
            first = on.started_mono is None
            if first:
                on.started_mono, on.started_wall = self.clock.monotonic(), self._wall()
            on.live_lost_since = None
            self._move(Trigger.HEARD)
            if first:  # what is on air, and from when: an interrupted record can name it after a power cut
                self.recorder.enter(OnAirState.SOUNDING, on.item, on.since, **self._entry_detail(on))
                self._arm_progress(on, 0)
            return
        if ev.kind == "stopped":
            return
        content = on.item.content
        if isinstance(content, Live):
            self._live_dropped(on, ev)
        elif isinstance(content, Slot):
            self._write_record(on, *self._judge(ev))
            self._slot_next_entry()
        else:
            self._finish(*self._judge(ev))

    def _judge(self, ev: PlayerEvent) -> tuple[PlayResult, str | None]:
        """The live judge: the player's end event and the cabinet inputs -> (result, failure reason)."""
        inputs = self.inputs_state
        return judge(ev.kind, ev.detail, amp_fault_seen=self.on.amp_fault_seen,
                     amp_fault_now=bool(inputs.get("amp_fault")), relay_feedback=inputs.get("relay_feedback"))

    def on_input(self, ev: InputChanged) -> None:
        """An amplifier fault while on air: nothing can sound, so stop, record it failed, and cut the
        relays at once rather than drive a faulty amplifier through the tail and idle hold."""
        if ev.name == "amp_fault" and ev.active and self.on:
            self.on.amp_fault_seen = True
            self.player.stop()
            self._finish(PlayResult.FAILED, FAIL_AMP_FAULT, advance=False)
            self._perform(self.sequencer.force_off(self.clock.monotonic()))
            self._next_if_idle()

    # --- progress while sounding -------------------------------------------------------------------
    def _entry_detail(self, on: Playing) -> dict:
        if on.started_wall is None:
            return {}
        return {"entry": on.entry.to_dict() if on.entry else None, "entry_index": on.entry_index,
                "entry_started": on.started_wall, "aired_until": self._wall()}

    def _arm_progress(self, on: Playing, count: int) -> None:
        started = on.started_wall

        def mark():
            if self.on is on and on.started_wall == started:  # the same entry still sounding
                self.recorder.enter(on.state, on.item, on.since, **self._entry_detail(on))
                self._arm_progress(on, count + 1)
        delay = PROGRESS_MARKS_S[count] if count < len(PROGRESS_MARKS_S) else PROGRESS_S
        self.loop.cancel(on.progress_timer)
        on.progress_timer = self.loop.call_later(delay, mark)

    # --- live relay ------------------------------------------------------------------------------
    def _live_dropped(self, on: Playing, ev: PlayerEvent) -> None:
        now = self.clock.monotonic()
        if on.live_lost_since is None:
            on.live_lost_since = now
            self.emit_event("live_interrupted", {"command_id": on.item.item_id, "detail": ev.detail or ev.kind})
        if now - on.live_lost_since >= on.item.content.grace:
            self._finish(PlayResult.FAILED, "stream_lost")
            return
        self._move(Trigger.STREAM_DROPPED)
        on.timers.append(self.loop.call_later(LIVE_RETRY_S, lambda: self._live_retry(on)))

    def _live_retry(self, on: Playing) -> None:
        if self.on is not on:
            return
        self._move(Trigger.START)
        if not self._play_source(on.item.content.url, on.item.content.volume, retry=True,
                                 stall_timeout=_live_stall_s(on.item.content)):
            self._finish(PlayResult.FAILED, on.failure)

    def _end_live(self, on: Playing) -> None:
        if self.on is on:
            self.player.stop()
            self._finish(PlayResult.COMPLETED, None)

    def _end_slot(self, on: Playing) -> None:
        if self.on is on:
            self.player.stop()
            sounding = on.started_mono is not None
            self._finish(PlayResult.STOPPED if sounding else None, "slot_end" if sounding else None)

    # --- finishing and records ---------------------------------------------------------------------
    def _finish(self, result: PlayResult | None, reason: str | None, *, arbiter_done: bool = False,
                advance: bool = True, forget: bool | None = None) -> None:
        """End the item on air: ENDING (its record and the journal in one transaction), then IDLE.
        forget: drop the journalled command (default: unless it was preempted and comes back)."""
        on = self.on
        if on is None:
            return
        self._move(Trigger.END)
        for token in on.timers + [on.progress_timer]:
            self.loop.cancel(token)
        if forget is None:
            forget = result is not PlayResult.PREEMPTED
        command_id = on.item.content.command_id if forget else None
        if result is not None:
            self._write_record(on, result, reason, forget_command=command_id, clear_onair=True)
        else:
            self.recorder.end_silently(forget_command=command_id)
        if not arbiter_done:
            self.arbiter.on_finished(on.item.item_id, (result or PlayResult.COMPLETED).value,
                                     self.clock.monotonic())
        self._move(Trigger.RECORDED)
        self.on = None
        self._moved()
        if advance:
            self._next_if_idle()

    def _write_record(self, on: Playing, result: PlayResult, reason: str | None, *,
                      forget_command: str | None = None, clear_onair: bool = False) -> None:
        seconds = 0.0
        if on.started_mono is not None:
            seconds = max(0.0, self.clock.monotonic() - on.started_mono)
        if result is PlayResult.COMPLETED and on.started_mono is None:
            result, reason = PlayResult.FAILED, "no_audio"
        entry = on.entry or getattr(on.item.content, "clip", None)
        # Since the item went on air (or since its previous record: a playlist's next entry). Not a window
        # before the first sound: a slow player start would push the warm-up out of the record.
        relays = [(round(t, 3), name, state) for t, name, state in self.relay_log if t >= on.relays_from]
        on.relays_from = self._wall()
        record = self.recorder.played(on.item, entry, result, reason, started_wall=on.started_wall,
                                      seconds=seconds, relays=relays)
        on.started_mono = on.started_wall = None
        # A playlist goes on: the journal keeps the slot on air without the entry just recorded.
        onair = None if clear_onair else self._journal_row(on, with_entry=False)
        self._commit(record, forget_command=forget_command, clear_onair=clear_onair, onair=onair)
        self.relay_log = self.relay_log[-32:]

    def _commit(self, record: PlayRecord, **journal) -> None:
        if record.result is PlayResult.FAILED:
            self.failed_to_sound = record.failure_reason
            self.emit_event("failed_to_sound", {"content_id": record.content_id, "reason": record.failure_reason})
        elif record.result is PlayResult.COMPLETED:
            self.failed_to_sound = None
        log.info("play record %s %s %s %.1fs %s", record.content_id, record.level, record.result.value,
                 record.seconds_played, record.failure_reason or "")
        self.recorder.commit(record, **journal)

    def _record_skip(self, item: QueueItem, reason: str) -> None:
        self._commit(self.recorder.skipped(item, reason), forget_command=item.content.command_id)

    # --- crash recovery --------------------------------------------------------------------------
    def _recover_after_crash(self) -> None:
        """After kill -9 or a power cut, by the persisted state (onair_states.RESUME, docs/playback.md):
        store pending records, record what aired of the interrupted item, then offer again the accepted
        commands that have not played yet (while still valid)."""
        self.recorder.store_pending()
        row = self.recorder.onair_row()
        if row:
            state = OnAirState(row.get("state", OnAirState.SOUNDING.value))
            item_id = row.get("item", {}).get("item_id")
            if RESUME[state] is Resume.RECORD_INTERRUPTED:
                self._commit(self.recorder.interrupted(row), clear_onair=True)
            else:
                self.recorder.clear_onair()
            self.emit_event("interrupted", {"item": item_id, "state": state.value})
        self._recover_commands()

    def _recover_commands(self) -> None:
        """Accepted play/live commands that have not been recorded yet: offer them again if still valid.
        Without trusted time (a Pi after a power cut, before NTP) nothing is decided: the rows wait."""
        now = self.now_strict()
        self._recovery_pending = now is None
        if now is None:
            return
        for command_id, envelope in self.recorder.commands():
            try:
                command = self.read_stored(envelope, ("play", "live"), "journal", command_id)
            except Exception as exc:  # noqa: BLE001 - a damaged journal row must not block start-up
                # A row that no longer verifies was reported (stored_envelope_refused) by read_stored.
                log.error("dropping unusable journal entry %s: %s", command_id, exc)
                self.recorder.forget_command(command_id)
                continue
            if now >= command.expires:
                self._commit(self.recorder.expired_command(command), forget_command=command.id)
                continue
            if command.type == "play":
                self.on_play(command, envelope)
            else:
                self.on_live(command)

    # --- relays ------------------------------------------------------------------------------------
    def _perform(self, actions: list[tuple]) -> None:
        try:
            for action in actions:
                if action[0] == "amp":
                    self._relay("amp", action[1])
                elif action[0] == "zones":
                    self._relay("zones", action[2], action[1])
                elif action[0] == "ready_to_play":
                    self._ready_to_play()
        finally:  # whatever failed above, the relay sequence must keep its timer (tail, idle hold, off)
            self.loop.cancel(self._seq_timer)
            deadline = self.sequencer.next_deadline()
            self._seq_timer = None if deadline is None else self.loop.call_at(
                deadline, lambda: self._perform(self.sequencer.tick(self.clock.monotonic())))

    def _relay(self, what: str, on: bool, names=None) -> None:
        if self.relays is None:
            return
        before = self.relays.states()
        if what == "amp":
            self.relays.amp_on() if on else self.relays.amp_off()
        elif on:
            self.relays.zones_on(names)
        else:
            self.relays.zones_off()
        wall = self._wall()
        for name, state in self.relays.states().items():
            if before.get(name) != state:
                self.relay_log.append((wall, name, state))
        self.changed()

    # --- status ------------------------------------------------------------------------------------
    def status(self) -> dict:
        on = self.on
        state = PHASE_STATE[self.sequencer.phase.value]
        if on is not None and on.started_mono is not None:
            state = "playing"
        item = None
        if on is not None:
            item = on.entry.content_id if on.entry else (on.item.content_id if isinstance(on.item.content, Live)
                                                         else None)
        return {"state": state, "item": item, "level": RECORD_LEVEL[on.item.level] if on else None,
                "queue": len(self.arbiter.queued)}
