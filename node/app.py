"""NodeApp: the whole node — its parts, built in order, and the handlers the loop dispatches to.

Construction reads top to bottom: each part is built from the ones above it and its close is pushed
on one ExitStack at once, so a part that fails in construction unwinds the ones already built (relays
end off). `start()` starts what runs; `shutdown()` stops it in reverse; `close()` unwinds the stack.
Nothing is attached after construction: callbacks between parts are bound methods of this object, and
parts only post events into the one loop (STYLE.md point 7, Mopidy's `_app/server.py`).

Handlers run only on the loop thread, so nothing here needs a lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass

from node import __version__, wiring
from node.adapters.broker import BrokerConnected, BrokerDisconnected, MessageReceived, PublishAcked, Will
from node.adapters.floorfile import FloorFile
from node.adapters.inbound import InboundReady
from node.adapters.store import StateStore, classify
from node.adapters.system_clock import SystemClock
from node.adapters.systemd_notify import Notifier
from node.filemodes import private_dir
from node.loop import EventLoop, HandlerFailed
from node.playback.player import PlayerEvent
from node.playback.relays import InputChanged
from node.reporting.heartbeat import encode, will_payload
from node.reporting.outbox import OutboxPump
from node.service import settings
from node.service.fetcher import FetchDone
from node.service.health import HealthService, LadderDone, ModemReading, relay_states, request_reboot
from node.service.intake import CommandIntake, TrustedTime, load_clock_trust
from node.service.onair import OnAir
from node.service.reporter import STORAGE_ERRORS, Reporter
from node.service.storage import StorageWatch, open_outbox, restore_documents
from node.service.timekeeper import TimeKeeper
from node.topics import Topics
from node.trust.commands import Limits
from node.trust.verifier import verify_stored

log = logging.getLogger(__name__)

HEALTH_TICK_S = 5.0
CLOCK_TICK_S = 60.0
# A power cut loses at most this much of the floor. One save dirties one 4 KiB page of the floor file:
# 144 a day = 576 KiB, inside the idle SD-write budget of 1 MB/day (benchmarks/bench_floor_writes.py).
FLOOR_SAVE_S = 600.0
RESET_EPOCH_SLACK = dt.timedelta(seconds=60)
FINAL_ACKS_S = 5.0  # a clean stop waits this long for the PUBACKs of its last records


@dataclass
class LinkState:
    connected: bool = False
    server: str | None = None
    down_since: float | None = None


@dataclass(frozen=True)
class Urgent:
    """Posted by kick(): send an urgent heartbeat delta once per loop turn, after the change is done."""


class NodeApp:
    def __init__(self, cfg, *, clock=None, notifier=None, make_broker=None, pin_factory=None, player=None):
        self._closing = contextlib.ExitStack()
        try:
            self._build(cfg, clock=clock, notifier=notifier, make_broker=make_broker, pin_factory=pin_factory,
                        player=player)
        except BaseException:
            self._closing.close()  # whatever was built is closed in reverse: relays off, files closed
            raise

    def _build(self, cfg, *, clock, notifier, make_broker, pin_factory, player) -> None:  # noqa: PLR0915
        push = self._closing.callback
        state_dir = wiring.private_dir_if_possible(cfg.storage.state_dir)
        lock_fd = wiring.hold_daemon_lock(cfg)
        push(os.close, lock_fd)
        self.clock = clock = clock or SystemClock.from_config(cfg.clock)
        self.loop = loop = EventLoop(clock.monotonic)
        # Never raises for the medium: a damaged state.db is rebuilt, a full or read-only one runs in memory.
        self.store = store = StateStore(state_dir / "state.db")
        push(store.close)
        wiring.private_files_if_possible(state_dir / "state.db")
        # Trust first: the remote settings kept from earlier are verified again against it before they apply.
        self.trust = wiring.trust_keeper(cfg, store)
        file_limits = Limits(max_envelope_bytes=cfg.trust.max_message_bytes,
                             audio_max_bytes=cfg.audio.max_audio_mb * wiring.MB,
                             audio_max_duration=cfg.audio.max_duration, skew_seconds=cfg.trust.clock_skew)
        cfg, refused_settings = settings.apply_stored(cfg, store, lambda envelope: verify_stored(
            envelope, trust=self.trust.document, node_id=cfg.node.id, groups=cfg.all_groups, kinds=("config",),
            limits=file_limits))
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.birth = store.next_birth()
        self.topics = Topics(cfg.broker.topic_prefix, cfg.node.id)
        self.link = LinkState(down_since=clock.monotonic())
        self.status_published = False  # a full status reached the broker (an update's health check)
        self.broker = (make_broker or wiring.broker_factory(cfg))(
            post=loop.post,
            # Time answers at QoS 0: one that waited in a queue is useless (its nonce is stale) anyway.
            subscriptions=[(t, 1) for t in self.topics.subscriptions(cfg.node.groups)]
            + [(self.topics.time_answer, 0)],
            will=Will(self.topics.status, encode(will_payload(cfg.node.id, self.birth))),
            triage=self._triage, max_message_bytes=cfg.trust.max_message_bytes,
        )
        self.pin_factory = pin_factory = pin_factory or wiring.simulated_pins(cfg)
        self.relays = wiring.relay_board(cfg, pin_factory, clock)
        if self.relays is not None:
            push(self.relays.close)  # pushed early, closed late: the relays end off whatever fails after
        self.inputs = wiring.cabinet_inputs(cfg, pin_factory, loop)
        if self.inputs is not None:
            push(self.inputs.close)
        downloader = wiring.downloader(cfg, cfg.audio.max_audio_mb * wiring.MB)
        self.player = player or wiring.audio_player(cfg, loop, downloader)
        push(self.player.close)
        self.cache = wiring.content_cache(cfg)
        push(self.cache.close)
        self.fetcher = wiring.fetcher(loop, downloader)
        push(self.fetcher.close)
        self.outbox, outbox_fault = open_outbox(state_dir / "outbox.db", node_id=cfg.node.id,
                                                max_rows=cfg.health.outbox_max_rows,
                                                max_event_rows=min(20_000, cfg.health.outbox_max_rows),
                                                resend_after=cfg.health.resend_after,
                                                resend_max=cfg.health.resend_max)
        push(self.outbox.close)
        wiring.private_files_if_possible(state_dir / "outbox.db")
        self.pump = OutboxPump(self.outbox, self._publish_event)
        self.reporter = Reporter(self.outbox, node_id=cfg.node.id, wall=lambda: clock.wall().timestamp(),
                                 kick=self.kick)
        self._urgent = False
        self._last_floor_save = self._started_mono = clock.monotonic()
        for data in refused_settings:
            self.emit_event("stored_envelope_refused", data)
        limits = Limits(max_envelope_bytes=cfg.trust.max_message_bytes,
                        audio_max_bytes=cfg.audio.max_audio_mb * wiring.MB,
                        audio_max_duration=cfg.audio.max_duration, skew_seconds=cfg.trust.clock_skew)
        restore_documents(store, self.trust, limits)  # a rebuilt state.db gets the safe copy's schedule, verified
        self.floor_file = FloorFile(state_dir / "time-floor")
        self.clock_trust = clock_trust = load_clock_trust(store, self.floor_file)
        self._saved_floor: str | None = None
        trusted_time = TrustedTime(clock, clock_trust)
        run_dir = private_dir(wiring.runtime_dir(cfg))
        self.modem_poller = wiring.modem_poller(cfg, loop, self._closing)
        self.health = HealthService(
            cfg=cfg, birth=self.birth, clock=clock, publish_full=self.publish_status,
            publish_delta=self._publish_delta, emit_event=self.emit_event, collect=self.collect,
            runtime_dir=run_dir, power_cycle=wiring.power_cycler(cfg, pin_factory, loop),
            reboot=lambda: request_reboot(run_dir), poller=self.modem_poller)
        # The programme already in force may play by schedule-grade time (a bounded source past its lead
        # after a long outage); commands are verified, and journalled ones expired, only by trusted time.
        self.onair = OnAir(cfg=cfg, loop=loop, clock=clock, now_trusted=trusted_time.schedule_now,
                           now_strict=trusted_time.now,
                           player=self.player, relays=self.relays, inputs_state=self.health.inputs,
                           cache=self.cache, fetcher=self.fetcher, store=store, reporter=self.reporter,
                           health=self.health, changed=self.kick, read_stored=self._read_stored,
                           max_queue=cfg.audio.max_queue, limits=limits)
        from node.update.wire import build_update_service

        self.updates, self.restarter = build_update_service(
            cfg, loop=loop, clock=clock, emit=self.emit_event, trust_keeper=self.trust, onair=self.onair,
            now_trusted=trusted_time.now, health_checks=self._update_health,
            downloader_factory=lambda max_bytes: wiring.downloader(cfg, max_bytes),
            request_install=lambda: wiring.request_install(run_dir))
        self.timekeeper = TimeKeeper(node_id=cfg.node.id, request_topic=self.topics.time_request, clock=clock,
                                     clock_trust=clock_trust, trust_document=lambda: self.trust.document,
                                     publish=self._publish_time_request, loop=loop, emit=self.emit_event,
                                     on_signed=self._on_signed_time, trusted_now=trusted_time.now,
                                     on_unanswered=self._on_time_unanswered, await_s=cfg.clock.await_signed,
                                     refresh_s=cfg.clock.time_refresh)
        push(self.timekeeper.stop)
        self.intake = CommandIntake(node_id=cfg.node.id, groups=cfg.all_groups, store=store, trust=self.trust,
                                    clock=clock, clock_trust=clock_trust, limits=limits,
                                    max_message_bytes=cfg.trust.max_message_bytes, dispatcher=self.onair,
                                    emit=self.emit_event, on_update=self.updates.on_command,
                                    on_storage_error=self.reporter.storage_error,
                                    time_topic=self.topics.time_answer, time_answers=self.timekeeper.on_answer,
                                    awaiting_signed=self.timekeeper.awaiting_signed)
        self.storage = StorageWatch(loop=loop, store=store, outbox=self.outbox, outbox_path=state_dir / "outbox.db",
                                    outbox_fault=outbox_fault, cache=self.cache, emit_event=self.emit_event,
                                    trusted_now=trusted_time.now, retry_s=cfg.storage.fault_retry,
                                    pump=self.pump, on_change=self.kick)
        push(self.storage.close)
        if cfg.node.simulate:
            push(wiring.SimControl(run_dir / "sim.sock", pin_factory, cfg).close)
        handlers = {BrokerConnected: self.on_connected, BrokerDisconnected: self.on_disconnected,
                    MessageReceived: self.on_message, InboundReady: self.on_inbound_ready,
                    PublishAcked: self.on_publish_acked,
                    PlayerEvent: self._on_player_event, InputChanged: self._on_input,
                    FetchDone: self._on_fetch_done, ModemReading: self._on_modem, LadderDone: self._on_ladder_done,
                    Urgent: self._on_urgent, HandlerFailed: self._on_handler_failed}
        for event_type, handler in handlers.items():
            loop.on(event_type, handler)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("speaker-node %s starting: node %s, birth %d", __version__, self.cfg.node.id, self.birth)
        self.storage.start()  # storage_fault / state_reset from opening the stores, then retries
        self.intake.observe_clock(rtc=True)
        if self.inputs:
            self.health.inputs.update(self.inputs.read())
        self.onair.start()
        try:
            self.updates.start()
        except OSError as exc:
            # Its state file cannot be written (read-only or full card): no update may act without its
            # persisted state, so updates wait for the next start; playback goes on.
            log.error("software updates not started: %s", exc)
            self.emit_event("storage_fault", {"store": "update", "reason": classify(exc, exc.filename),
                                              "action": "disabled", "detail": str(exc)[:200]})
        if self.modem_poller:
            self.modem_poller.start()
        self.emit_event("started", {"birth": self.birth, "clock": self.intake.clock_trust.status()["source"]})
        self.loop.call_later(HEALTH_TICK_S, self._health_tick)
        self.loop.call_later(CLOCK_TICK_S, self._clock_tick)
        self.broker.start()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog_tick(interval)
        self.notifier.ready(f"node {self.cfg.node.id}: waiting for broker")

    def shutdown(self) -> None:
        """SIGTERM: stop playback and relays off, report, wait (bounded) for the final acknowledgements,
        publish the offline status, disconnect. close() then releases the parts."""
        self.notifier.stopping()
        try:
            self.updates.stop()
            self.onair.stop()
            self.emit_event("stopping", {"reason": "restart" if self.restarter.requested else "shutdown"})
            self._await_final_acks(FINAL_ACKS_S)
        finally:
            self.timekeeper.stop()
            self._save_floor(everywhere=True)
            if self.modem_poller:
                self.modem_poller.close()
        offline = self.health.heartbeat.shutdown(self.clock.wall().timestamp())
        acked = self.broker.stop(final=(self.topics.status, encode(offline), True))
        log.info("stopped (offline status %s)", "acknowledged" if acked else "not delivered")

    def close(self) -> None:
        self._closing.close()

    def _await_final_acks(self, timeout: float) -> None:
        """While connected, run the loop until the broker acknowledged (PUBACK) every stored record and
        event (or `timeout`): a clean stop then leaves nothing unsent that it could have sent now. The
        district's signed acknowledgement may come later; until then the rows stay (docs/protocol.md 9b)."""
        if not self.pump.connected:
            return
        deadline = time.monotonic() + timeout  # real seconds: the node's clock may be a test's virtual one
        self._outbox_io(self.pump.pump)
        while self.pump.connected and (self.pump.inflight or self.outbox.unsent()) \
                and time.monotonic() < deadline:
            self.loop.run_once(max_wait=min(0.1, max(0.0, deadline - time.monotonic())))
        self._outbox_io(self.pump.flush)

    # --- ticks ---------------------------------------------------------------------------------------
    def _watchdog_tick(self, interval: float) -> None:
        # Pinged from the loop thread only, and only while on-air makes progress: a hung loop or an
        # item stuck on air stops the pings and systemd restarts the node (then the resume table runs).
        self.loop.call_later(interval, lambda: self._watchdog_tick(interval))
        stuck = self.onair.stuck(self.clock.monotonic())
        if stuck:
            log.error("on air stuck (%s): watchdog not pinged", stuck)
            return
        self.notifier.watchdog()

    def _health_tick(self) -> None:
        self.loop.call_later(HEALTH_TICK_S, self._health_tick)  # first: an error below must not stop it
        self.reporter.retry()
        if self.link.connected:
            self._outbox_io(self.pump.pump)  # delivered records the district has not confirmed fall due again
            self.health.tick()

    def _clock_tick(self) -> None:
        self.loop.call_later(CLOCK_TICK_S, self._clock_tick)
        if self.intake.observe_clock(rtc=True) is not None:
            # Trusted by any source that may admit commands (NTP synchronised since, an RTC...): what was
            # held only for want of time is decided now, not dropped as clock_untrusted after 120 s.
            for decision in self.intake.retry_held():
                if decision.outcome == "accepted":
                    self.kick()
        self.intake.expire_held()
        if self.clock.monotonic() - self._last_floor_save >= FLOOR_SAVE_S:
            self._save_floor()
        # Seen ids are forgotten only by a floor a signed answer confirmed in this run, never by the raw
        # system clock nor by a floor loaded at start (a torn or wrong floor file a year ahead would
        # forget the ids of still-valid commands, and a replay would be accepted).
        if self.clock_trust.signed_age(self.clock.monotonic()) is not None:
            try:
                self.store.forget_expired(self.clock_trust.floor.timestamp())
            except STORAGE_ERRORS as exc:
                self.reporter.storage_error("state", exc)

    def _publish_time_request(self, topic: str, payload: bytes) -> None:
        self.broker.publish(topic, payload, qos=0)   # a lost request is simply asked again

    def _on_signed_time(self, corrected: float | None) -> None:
        """A signed answer was accepted (TimeKeeper): persist a floor it corrected (or the first one) at
        once, bound a reset epoch set by a wrong clock, decide the held commands, play the schedule."""
        saved = dt.datetime.fromisoformat(self._saved_floor) if self._saved_floor else None
        if saved is None or corrected is not None or self.clock_trust.floor < saved:
            self._save_floor(everywhere=True)
        if corrected is not None:
            self._reset_epoch_at_correction()
        self._bound_reset_epoch()
        for decision in self.intake.retry_held():
            if decision.outcome == "accepted":
                self.kick()
        self.onair.on_clock_trusted()
        self.kick()

    def _on_time_unanswered(self) -> None:
        """No signed answer within 5 s of a request (a district without the time duty, or it is down):
        what waited for it is decided by the bounded sources, if they trust the clock."""
        for decision in self.intake.retry_held():
            if decision.outcome == "accepted":
                self.kick()

    def _reset_epoch_at_correction(self) -> None:
        """A signed answer moved the floor back (a floor saved from a wrong clock, or the district's clock
        stepped back): ids forgotten by the higher floor may belong to commands still valid at the lower
        one. Commands issued before the corrected time are refused issued_before_reset from now on
        (docs/protocol.md §6/§7): lowering the floor never reopens a replay."""
        epoch = self.clock_trust.floor.replace(microsecond=0) - dt.timedelta(seconds=1)
        current = self.store.reset_epoch(None)
        if current is not None and current >= epoch:
            return
        try:
            self.store.put("reset_epoch", epoch.isoformat())
        except STORAGE_ERRORS as exc:
            self.reporter.storage_error("state", exc)
            return
        log.warning("time floor moved back by signed time: commands issued before %s are refused",
                    epoch.isoformat())

    def _bound_reset_epoch(self) -> None:
        """A state reset settled while the clock was wrong (NTP years ahead) would refuse every command
        as issued_before_reset for years. No reset of this run happened before this process started, so
        an epoch ahead of signed time is moved back to the start of this run (by signed time)."""
        now = self.intake.observe_clock()
        epoch = self.store.reset_epoch(None)
        if now is None or epoch is None or epoch <= now + RESET_EPOCH_SLACK:
            return
        started = now - dt.timedelta(seconds=self.clock.monotonic() - self._started_mono + 1.0)
        try:
            self.store.put("reset_epoch", started.isoformat())
        except STORAGE_ERRORS as exc:
            self.reporter.storage_error("state", exc)
            return
        log.warning("state reset epoch %s was ahead of signed time: set to %s", epoch.isoformat(),
                    started.isoformat())
        self.emit_event("clock_floor_corrected", {"reset_epoch_ahead_s": round((epoch - now).total_seconds(), 3)})

    def _save_floor(self, everywhere: bool = False) -> None:
        """Every FLOOR_SAVE_S to the floor file (one page, no journal); to the state store too at a clean
        stop or a correction, or when the file cannot be written (a failing SD card must not stop the node)."""
        self._last_floor_save = self.clock.monotonic()
        floor = self.clock_trust.floor
        text = floor.isoformat()
        if text == self._saved_floor and not everywhere:
            return   # an unchanged floor costs no SD write
        wrote_file = False
        try:
            self.floor_file.save(floor)
            wrote_file = True
        except OSError as exc:
            log.error("time floor file: %s", exc)
        if everywhere or not wrote_file:
            try:
                self.store.put("time_floor", text)
            except STORAGE_ERRORS as exc:  # a full disk must not stop the node
                self.reporter.storage_error("state", exc)
                return
        self._saved_floor = text

    # --- reporting -------------------------------------------------------------------------------------
    def emit_event(self, type_: str, data: dict) -> None:
        self.reporter.event(type_, data)

    def kick(self) -> None:
        """Something changed: pump the outbox and send an urgent heartbeat delta, once per loop turn."""
        self._outbox_io(self.pump.pump)
        if not self._urgent:
            self._urgent = True
            self.loop.post(Urgent())

    def _outbox_io(self, step) -> None:
        """Marking rows sent or acknowledged may fail on a full disk: the rows are then simply sent
        again later (same ids), so count it and carry on."""
        try:
            step()
        except STORAGE_ERRORS as exc:
            self.reporter.storage_error("outbox", exc)

    def _on_urgent(self, _ev: Urgent) -> None:
        self._urgent = False
        if self.link.connected:
            self.health.tick()

    def _publish_event(self, payload: bytes) -> int | None:
        return self.broker.publish(self.topics.events, payload, qos=1)

    def _publish_delta(self, payload: dict) -> None:
        self.broker.publish(self.topics.delta, encode(payload), qos=0)

    def publish_status(self, payload: dict | None = None) -> None:
        """The retained status: a full heartbeat snapshot (node/schemas/status.json)."""
        self.broker.publish(self.topics.status, encode(payload or self.health.snapshot()), qos=1, retain=True)
        if self.link.connected:
            self.status_published = True

    def _read_stored(self, envelope: bytes, kinds: tuple[str, ...], where: str, stored_id: str | None = None):
        """Stored envelopes are verified again by the intake before on-air acts on them."""
        return self.intake.read_stored(envelope, kinds, where, stored_id)

    def _update_health(self) -> dict[str, bool]:
        """What a new version must show before it is committed (the self-test's core, live)."""
        return {"broker_connected": self.link.connected, "status_published": self.status_published,
                "trust_loaded": self.trust.document is not None, "player_ready": self.player is not None}

    def collect(self) -> dict:
        """What the heartbeat needs from the rest of the node."""
        trusted = self.intake.clock_trust.trusted_now()
        status = self.intake.clock_trust.status()
        stats = self.outbox.stats()
        return {
            "clk": {"ok": status["trusted"], "src": status["source"], "conflict": status["conflict"]},
            "trust_d": self.intake.trust.days_left(trusted or self.clock.wall()),
            "play": self.onair.status(),
            "relays": relay_states(self.relays),
            "outbox": stats.get("pending", stats.get("rows", 0)) + self.reporter.unstored,
            "dropped": stats.get("dropped", 0) + self.reporter.lost,
            "outbox_drop": stats.get("drop"),
            "in_drop": self.broker.inbound.dropped,
            "unstored": self.reporter.unstored,
            "failed_to_sound": self.onair.failed_to_sound,
            "sw": self.updates.status(),
            "storage": self.storage.degraded(),
        }

    # --- broker events -----------------------------------------------------------------------------
    def on_connected(self, ev: BrokerConnected) -> None:
        down_for = self.clock.monotonic() - self.link.down_since if self.link.down_since is not None else 0.0
        self.link.connected, self.link.server, self.link.down_since = True, ev.server, None
        log.info("connected to %s (session present: %s) after %.1f s", ev.server, ev.session_present, down_for)
        self.notifier.status(f"node {self.cfg.node.id}: connected to {ev.server}")
        self.timekeeper.on_connected()   # first: trusted time unlocks the commands queued for us
        self.publish_status()
        self.health.on_broker(True)
        self._outbox_io(self.pump.on_connect)
        self._outbox_io(self.pump.pump)

    def on_disconnected(self, ev: BrokerDisconnected) -> None:
        if self.link.connected:
            self.link.down_since = self.clock.monotonic()
        self.link.connected = False
        log.warning("broker link down: %s", ev.reason)
        self.notifier.status(f"node {self.cfg.node.id}: broker unreachable ({ev.reason})")
        self.health.on_broker(False)
        self.timekeeper.on_disconnected()
        self.pump.on_disconnect()

    def on_message(self, ev: MessageReceived) -> None:
        if ev.topic == self.topics.ack:
            self._on_district_ack(ev.payload)
            self.kick()
            return
        decision = self.intake.handle(ev.topic, ev.payload, size=ev.size)
        # A refused message changed nothing (its event, if any, kicked already): under a flood of junk,
        # an urgent heartbeat tick per message would cost more than verifying it.
        if decision.outcome == "accepted":
            self.kick()

    def on_inbound_ready(self, ev: InboundReady) -> None:
        # One message per event: timers, player events and a Stop interleave with a backlog.
        item = self.broker.inbound.pop()
        if item is not None:
            self.on_message(MessageReceived(item.topic, item.payload, item.retained, item.size))

    def _triage(self, topic: str, payload: bytes) -> int:
        """On the broker's network thread: the inbound queue lane of a message (the intake's cheap check)."""
        return self.intake.triage(topic, payload)

    def _on_district_ack(self, payload: bytes) -> None:
        """Records the district's store committed: delete them from the outbox. A forged or malformed
        acknowledgement deletes nothing and is reported like any rejected message (docs/protocol.md 9b)."""
        ids = self.intake.verify_ack(self.topics.ack, payload)
        if ids:
            self._outbox_io(lambda: self.pump.on_district_ack(ids))

    def on_publish_acked(self, ev: PublishAcked) -> None:
        self.pump.on_puback(ev.mid)
        self._outbox_io(self.pump.flush)
        self._outbox_io(self.pump.pump)

    # --- device events -----------------------------------------------------------------------------
    def _on_player_event(self, ev: PlayerEvent) -> None:
        self.onair.on_player_event(ev)
        self.kick()

    def _on_input(self, ev: InputChanged) -> None:
        self.health.on_input(ev)
        self.onair.on_input(ev)
        self.kick()

    def _on_fetch_done(self, ev: FetchDone) -> None:
        self.onair.on_fetch_done(ev)
        self.kick()

    def _on_modem(self, ev: ModemReading) -> None:
        _, cellular = self.health.on_modem(ev)
        if cellular is not None:
            self.intake.observe_clock(cellular=cellular)
        self.kick()

    def _on_handler_failed(self, ev: HandlerFailed) -> None:
        """A bug in a handler (the loop kept running): the district hears of it (docs/heartbeat.md)."""
        self.emit_event("handler_failed", {"handler": ev.handler, "event": ev.event, "error": ev.error,
                                           "where": ev.where})

    def _on_ladder_done(self, ev: LadderDone) -> None:
        self.emit_event("recovery_step_done", {"step": ev.step, "ok": ev.ok, "detail": ev.detail or None})
