"""On air: turns accepted commands and schedule slots into relay switching, playback and play records.

Pure decisions come from node.playback (Arbiter: what plays; RelaySequencer: when relays move;
schedule: which slot is on). This class performs them with the adapters (RelayBoard, Player, cache,
fetcher) and writes one proof-of-play record per item (per playlist entry for programmes) through
`emit_record`, which persists it in the outbox before anything is reported.

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
from node.playback.player import PlayerEvent
from node.playback.records import FAIL_AMP_FAULT, FAIL_RELAY_FEEDBACK, PlayResult
from node.playback.relays import InputChanged
from node.playback.sequencer import RelaySequencer
from node.service.fetcher import FetchDone, FetchJob
from node.service.programme import ProgrammeMixin
from node.service.recorder import RECORD_LEVEL, RecordsMixin

log = logging.getLogger(__name__)

# Relay sequencer phase -> "play.state" of the heartbeat (node/schemas/status.json).
PHASE_STATE = {"off": "idle", "waiting": "warming", "warming": "warming", "playing": "playing", "tail": "tail",
               "hold": "idle"}
LIVE_RETRY_S = 2.0
SLOT_END_GRACE_S = 0.5
PREFETCH_HORIZON = dt.timedelta(hours=24)


def _live_stall_s(on) -> float:
    """A live stream silent this long counts as dropped: well inside its grace (default 30 s -> 5 s),
    so the relay can reconnect before the grace window ends."""
    return max(1.0, min(5.0, on.item.content.get("grace", 30) / 2))


@dataclass
class Playing:
    """The item on air and what its current record needs."""

    item: QueueItem
    play_id: str | None = None      # id given to the player for the current media (late events are ignored)
    entry: dict | None = None       # the clip or playlist entry being played
    started_mono: float | None = None
    started_wall: float | None = None
    amp_fault_seen: bool = False
    failure: str | None = None      # why the current media could not start
    live_lost_since: float | None = None
    timers: list[int] = field(default_factory=list)


class OnAir(ProgrammeMixin, RecordsMixin):
    def __init__(self, *, cfg, loop, clock, now_trusted, player, relays, inputs_state, cache, fetcher, store,
                 emit_event, emit_record, max_queue: int, limits=None):
        self.cfg, self.loop, self.clock, self.now_trusted = cfg, loop, clock, now_trusted
        self.player, self.relays, self.inputs_state = player, relays, inputs_state
        self.cache, self.fetcher, self.store = cache, fetcher, store
        self.emit_event, self.emit_record = emit_event, emit_record
        r = cfg.relays
        self.sequencer = RelaySequencer(r.warmup, r.tail, r.idle_hold, r.min_off)
        self.arbiter = Arbiter(max_queue)
        self.on: Playing | None = None
        self.waiting: dict[str, list[QueueItem]] = {}  # sha256 -> items waiting for their download
        self.held: dict[str, tuple[int, QueueItem]] = {}  # item_id -> (timer, item) waiting for start_at
        self.fetch_failures: dict[str, tuple[int, float]] = {}  # sha256 -> (failures, next retry, monotonic)
        self.limits = limits
        self.read_stored = None  # set by the wiring: the intake's re-verification of stored envelopes
        self._recovery_pending = False
        self.schedule: dict | None = None
        self.schedule_version = 0
        self.started_occurrences: set[str] = set()
        self.failed_to_sound: str | None = None  # latched alarm until the next successful play
        self._seq_timer = self._arb_timer = self._sched_timer = None
        self._play_ids = itertools.count(1)
        self.relay_log: list[tuple[float, str, bool]] = []
        self.health = None  # set by the wiring: remote settings reach the heartbeat through it
        self.changed = lambda: None  # set by the wiring: relay changes are urgent heartbeat news

    # --- time helpers --------------------------------------------------------------------------
    def _mono_for(self, when: dt.datetime) -> float | None:
        """Monotonic deadline for a signed wall time; None when the clock is not trusted."""
        now = self.now_trusted()
        if now is None:
            return None
        return self.clock.monotonic() + (when - now).total_seconds()

    def _wall(self) -> float:
        now = self.now_trusted()
        return (now or self.clock.wall()).timestamp()

    # --- start / stop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._recover_after_crash()
        stored = self.store.document("schedule")
        if stored:
            try:
                self._load_schedule(stored[1])
            except Exception as exc:  # noqa: BLE001 - never let a stored document stop the node starting
                log.error("stored schedule version %s not loaded: %s", stored[0], exc)
                self.emit_event("schedule_unusable", {"version": stored[0], "detail": str(exc)[:200]})
        self._schedule_tick()

    def stop(self) -> None:
        """Shutdown: stop playback, record the interrupted item, relays off."""
        if self.on:
            # The command stays journalled: an emergency cut by an update or a reboot plays again.
            self._finish(PlayResult.STOPPED, "shutdown", advance=False, keep_journal=True)
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
            zones = [z for z in c.zones if z in known]
            if not zones:
                self.emit_event("unknown_zone", {"command_id": command.id, "zones": list(c.zones)})
                zones = None if not known else []
        entry = {"content_id": c.content_id, "sha256": c.sha256, "length": c.length, "duration": c.duration,
                 "codec": c.codec, "url": c.url, "volume": c.volume, "zones": zones, "title": c.title}
        item = QueueItem(item_id=command.id, level=Level(body.level), source="command",
                         content={"kind": "clip", "entry": entry, "command_id": command.id,
                                  "start_at": body.start_at.timestamp() if body.start_at else None},
                         enqueued_at=self.clock.monotonic(), expires_at=self._mono_for(command.expires),
                         duration=c.duration, resume_ok=False, content_id=c.content_id)
        if zones == []:
            self._record_skip(item, "unknown_zone")
            return
        self._when_content_ready(item, entry)

    def on_live(self, command) -> None:
        body = command.body
        deadline = min(command.expires, self.now_trusted() + dt.timedelta(seconds=body.max_duration))
        item = QueueItem(item_id=command.id, level=Level(body.level), source="live",
                         content={"kind": "live", "url": body.url, "volume": body.volume, "grace": body.grace,
                                  "command_id": command.id, "until": deadline.timestamp()},
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

    # --- content ---------------------------------------------------------------------------------
    def _when_content_ready(self, item: QueueItem, entry: dict) -> None:
        if self.cache.has(entry["sha256"]):
            self._offer_or_hold(item)
            return
        if not entry.get("url"):
            self._record_skip(item, "content_missing")
            self.emit_event("content_missing", {"content_id": entry["content_id"], "sha256": entry["sha256"]})
            return
        self.waiting.setdefault(entry["sha256"], []).append(item)
        self._fetch(entry, RECORD_LEVEL[item.level])

    def _fetch(self, entry: dict, level: str = "normal") -> None:
        # The level picks the download lane: an emergency's audio never waits behind another download.
        self.fetcher.request(FetchJob(entry["sha256"], entry["url"], entry["length"], entry["content_id"],
                                      entry["codec"], self.cache.partial_path(entry["sha256"]), level))

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
        start_at = item.content.get("start_at")
        if start_at:
            at = self._mono_for(dt.datetime.fromtimestamp(start_at, dt.timezone.utc))
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
        now = self.clock.monotonic()
        position = self.player.position() if self.on else 0.0
        decision = self.arbiter.offer(item, now, position)
        for d in decision.dropped:
            self._record_skip(d.item, d.reason)
        if decision.action is Action.PLAY_NOW:
            if decision.preempted and self.on:
                cut = self.on
                self.player.stop()
                self._finish(PlayResult.PREEMPTED, f"preempted by {item.level.value} {item.item_id}",
                             arbiter_done=True, advance=False)
                if decision.preempted_fate == "drop" and cut.item.content.get("command_id"):
                    self.store.journal_set(f"cmd:{cut.item.item_id}", None)
            self._begin(item)
        elif decision.action in (Action.REJECTED, Action.DROPPED) and decision.reason != "duplicate":
            self._record_skip(item, decision.reason)
            self.emit_event("queue_rejected", {"command_id": item.item_id, "reason": decision.reason})
        self._arm_arbiter_timer()

    def _next_if_idle(self) -> None:
        if self.on is not None:
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
        self.on = Playing(item)
        self.store.journal_set("onair", {"item": item.to_dict(), "since": self._wall()})
        zones = item.content.get("entry", {}).get("zones") if item.content.get("kind") == "clip" else None
        self._perform(self.sequencer.request_play(self.clock.monotonic(), zones))

    def _ready_to_play(self) -> None:
        if self.on is None:
            return
        # A synchronised command (start_at) or a programme slot (starts_at) sounds at its instant: the
        # relays were switched early enough for the warm-up to end before it.
        start_at = self.on.item.content.get("start_at") or self.on.item.content.get("starts_at")
        if start_at:
            at = self._mono_for(dt.datetime.fromtimestamp(start_at, dt.timezone.utc))
            if at is not None and at > self.clock.monotonic():
                self.on.timers.append(self.loop.call_at(at, self._start_media))
                return
        self._start_media()

    def _start_media(self) -> None:
        on = self.on
        if on is None:
            return
        kind = on.item.content["kind"]
        if kind == "clip":
            on.entry = on.item.content["entry"]
            if not self._play_entry(on.entry, offset=0.0):
                self._finish(PlayResult.FAILED, on.failure or "content_missing")
        elif kind == "live":
            on.entry = {"content_id": on.item.content_id, "sha256": None, "url": on.item.content["url"]}
            if not self._play_source(on.item.content["url"], on.item.content.get("volume"),
                                     stall_timeout=_live_stall_s(on)):
                self._finish(PlayResult.FAILED, on.failure)
                return
            until = self._mono_for(dt.datetime.fromtimestamp(on.item.content["until"], dt.timezone.utc))
            if until is not None:
                on.timers.append(self.loop.call_at(until, lambda: self._end_live(on)))
        else:
            ends = self._mono_for(dt.datetime.fromtimestamp(on.item.content["ends_at"], dt.timezone.utc))
            if ends is not None:
                # A little after the end: a playlist that fills its slot exactly should complete.
                on.timers.append(self.loop.call_at(ends + SLOT_END_GRACE_S, lambda: self._end_slot(on)))
            self._slot_next_entry()

    def _play_entry(self, entry: dict, offset: float) -> bool:
        """Start a cached clip; False (with on.failure set) when it cannot start."""
        path = self.cache.path_for(entry["sha256"])
        if path is None:
            self.on.failure = "content_missing"
            self.emit_event("content_missing", {"content_id": entry["content_id"], "sha256": entry["sha256"]})
            return False
        return self._play_source(str(path), entry.get("volume"), offset)

    def _play_source(self, source: str, volume: int | None, offset: float = 0.0, *, retry: bool = False,
                     stall_timeout: float | None = None) -> bool:
        on = self.on
        on.play_id = f"{on.item.item_id}-{next(self._play_ids)}"
        volume = volume if volume is not None else on.item.content.get("volume")
        if not retry:  # a live reconnect keeps the item's start: the record counts the whole relay
            on.started_mono, on.started_wall = None, None
        on.amp_fault_seen = bool(self.inputs_state().get("amp_fault"))
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
            if on.started_mono is None:
                on.started_mono, on.started_wall = self.clock.monotonic(), self._wall()
            on.live_lost_since = None
            return
        if ev.kind == "stopped":
            return
        kind = on.item.content["kind"]
        if kind == "live":
            self._live_dropped(on, ev)
        elif kind == "slot":
            result, reason = self._judge(ev)
            self._write_record(on, result, reason)
            self._slot_next_entry()
        else:
            result, reason = self._judge(ev)
            self._finish(result, reason)

    def _judge(self, ev: PlayerEvent) -> tuple[PlayResult, str | None]:
        if ev.kind == "error":
            return PlayResult.FAILED, "no_audio" if ev.detail == "no_audio" else f"player_error:{ev.detail}"
        if self.on.amp_fault_seen or self.inputs_state().get("amp_fault"):
            return PlayResult.FAILED, FAIL_AMP_FAULT
        feedback = self.inputs_state().get("relay_feedback")
        if feedback is False:
            return PlayResult.FAILED, FAIL_RELAY_FEEDBACK
        return PlayResult.COMPLETED, None

    def on_input(self, ev: InputChanged) -> None:
        """An amplifier fault while on air: nothing can sound, so stop, record it failed, and cut the
        relays at once rather than drive a faulty amplifier through the tail and idle hold."""
        if ev.name == "amp_fault" and ev.active and self.on:
            self.on.amp_fault_seen = True
            self.player.stop()
            self._finish(PlayResult.FAILED, FAIL_AMP_FAULT, advance=False)
            self._perform(self.sequencer.force_off(self.clock.monotonic()))
            self._next_if_idle()

    # --- live relay ------------------------------------------------------------------------------
    def _live_dropped(self, on: Playing, ev: PlayerEvent) -> None:
        now = self.clock.monotonic()
        if on.live_lost_since is None:
            on.live_lost_since = now
            self.emit_event("live_interrupted", {"command_id": on.item.item_id, "detail": ev.detail or ev.kind})
        if now - on.live_lost_since >= on.item.content.get("grace", 30):
            self._finish(PlayResult.FAILED, "stream_lost")
            return
        on.timers.append(self.loop.call_later(LIVE_RETRY_S, lambda: self._live_retry(on)))

    def _live_retry(self, on: Playing) -> None:
        if self.on is on and not self._play_source(on.item.content["url"], on.item.content.get("volume"),
                                                   retry=True, stall_timeout=_live_stall_s(on)):
            self._finish(PlayResult.FAILED, on.failure)

    def _end_live(self, on: Playing) -> None:
        if self.on is on:
            self.player.stop()
            self._finish(PlayResult.COMPLETED, None)

    # --- finishing and records ---------------------------------------------------------------------
    def _finish(self, result: PlayResult | None, reason: str | None, *, arbiter_done: bool = False,
                advance: bool = True, keep_journal: bool = False) -> None:
        on = self.on
        if on is None:
            return
        for token in on.timers:
            self.loop.cancel(token)
        if result is not None:
            self._write_record(on, result, reason)
        if not arbiter_done:
            self.arbiter.on_finished(on.item.item_id, (result or PlayResult.COMPLETED).value,
                                     self.clock.monotonic())
        self.on = None
        self.store.journal_set("onair", None)
        if on.item.content.get("command_id") and result is not PlayResult.PREEMPTED and not keep_journal:
            self.store.journal_set(f"cmd:{on.item.item_id}", None)
        if advance:
            self._next_if_idle()

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
        return {"state": state, "item": (on.entry or {}).get("content_id") if on else None,
                "level": RECORD_LEVEL[on.item.level] if on else None, "queue": len(self.arbiter.queued)}
