"""NodeParts: the features the loop drives once the app skeleton (broker, status, watchdog) is up.

Wires intake (trust) -> on-air (playback) and health, and the outbox that carries their events and
play records to the district exactly once (deleted only when the district's store acknowledged them).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3

from node.adapters.broker import MessageReceived
from node.loop import HandlerFailed
from node.playback.player import PlayerEvent
from node.playback.records import PlayRecord
from node.playback.relays import InputChanged, wire_relay_name
from node.reporting.outbox import OutboxPump, make_event
from node.service.fetcher import FetchDone
from node.service.health import LadderDone, ModemReading, relay_states

log = logging.getLogger(__name__)

HEALTH_TICK_S = 5.0
CLOCK_TICK_S = 60.0
FLOOR_SAVE_S = 3600.0


def record_payload(record: PlayRecord, node_id: str, now: float) -> dict:
    """PlayRecord -> node/schemas/play_record.json (relay times as epoch seconds)."""
    return {"v": 1, "id": record.id, "node": node_id, "ts": int(now),
            "kind": "play", "content_id": record.content_id, "sha256": record.sha256, "level": record.level,
            "source": record.source, "command_id": record.command_id, "slot_id": record.slot_id,
            "scheduled_at": record.scheduled_at, "started_at": record.started_at, "ended_at": record.ended_at,
            "seconds": record.seconds_played, "result": record.result.value, "volume": record.volume,
            "relays": [[t, wire_relay_name(name), on] for t, name, on in record.relays][:64],
            "reason": record.failure_reason,
            "title": record.title}


class NodeParts:
    def __init__(self, *, cfg, loop, clock, store, outbox, intake, onair, health, relays, inputs, player, fetcher,
                 modem_poller=None, closers=(), updates=None, restarter=None):
        self.cfg, self.loop, self.clock, self.store = cfg, loop, clock, store
        self.outbox, self.intake, self.onair, self.health = outbox, intake, onair, health
        self.relays, self.inputs, self.player, self.fetcher = relays, inputs, player, fetcher
        self.modem_poller = modem_poller
        self.updates, self.restarter = updates, restarter   # node.update: signed software updates
        self.closers = list(closers)
        self.pump: OutboxPump | None = None
        self.storage = None  # node.service.storage.StorageWatch, set by the wiring
        self.app = None
        self._urgent = False
        self.outbox_errors = 0
        self._last_floor_save = clock.monotonic()

    # --- events into the outbox (persisted before anything is reported) ---------------------------
    def emit_event(self, type_: str, data: dict) -> None:
        self._add("event", make_event(self.cfg.node.id, type_, data, self.clock.wall().timestamp()))
        self.kick()

    def _add(self, kind: str, payload: dict) -> None:
        """A full or failing SD card must not stop playback: log it, count it, carry on."""
        try:
            self.outbox.add(kind, payload)
        except sqlite3.Error as exc:
            self.outbox_errors += 1
            log.error("outbox: could not store %s %s: %s", kind, payload.get("id"), exc)

    def emit_record(self, record: PlayRecord) -> None:
        self._add("play", record_payload(record, self.cfg.node.id, self.clock.wall().timestamp()))
        log.info("play record %s %s %s %.1fs %s", record.content_id, record.level, record.result.value,
                 record.seconds_played, record.failure_reason or "")
        self.kick()

    def kick(self) -> None:
        """Something changed: pump the outbox and send an urgent heartbeat delta, once per loop turn."""
        if self.pump:
            self.pump.pump()
        if not self._urgent:
            self._urgent = True
            self.loop.call_later(0, self._urgent_tick)

    def _urgent_tick(self) -> None:
        self._urgent = False
        if self.app and self.app.link.connected:
            self.health.tick()

    # --- what the heartbeat needs from the rest of the node ---------------------------------------
    def collect(self) -> dict:
        trusted = self.intake.clock_trust.trusted_now()
        status = self.intake.clock_trust.status()
        stats = self.outbox.stats()
        return {
            "clk": {"ok": status["trusted"], "src": status["source"]},
            "trust_d": self.intake.trust.days_left(trusted or self.clock.wall()),
            "play": self.onair.status(),
            "relays": relay_states(self.relays),
            "outbox": stats.get("pending", stats.get("rows", 0)),
            "dropped": stats.get("dropped", 0),
            "outbox_drop": stats.get("drop"),
            "in_drop": self.app.broker.inbound.dropped if self.app is not None else 0,
            "failed_to_sound": self.onair.failed_to_sound,
            **({"sw": self.updates.status()} if self.updates else {}),
            "storage": self.storage.degraded() if self.storage else [],
        }

    # --- NodeApp hooks -----------------------------------------------------------------------------
    def attach(self, app) -> None:
        self.app = app
        loop = self.loop
        loop.on(PlayerEvent, self._on_player_event)
        loop.on(InputChanged, self._on_input)
        loop.on(FetchDone, self._guarded(self.onair.on_fetch_done))
        loop.on(ModemReading, self._on_modem)
        loop.on(LadderDone, lambda ev: self.emit_event("recovery_step_done", {"step": ev.step, "ok": ev.ok,
                                                                               "detail": ev.detail or None}))
        # A bug in a handler (the loop kept running): the district hears of it (docs/heartbeat.md).
        loop.on(HandlerFailed, lambda ev: self.emit_event("handler_failed", {"handler": ev.handler,
                                                                             "event": ev.event, "error": ev.error,
                                                                             "where": ev.where}))
        events_topic = app.topics.events
        self.pump = OutboxPump(self.outbox, lambda payload: app.broker.publish(events_topic, payload, qos=1))
        if self.storage:
            self.storage.pump = self.pump

    def _guarded(self, fn):
        def run(ev):
            fn(ev)
            self.kick()
        return run

    def start(self, app) -> None:
        if self.storage:
            self.storage.start()  # storage_fault / state_reset from opening the stores, then retries
        self.intake.observe_clock()
        if self.inputs:
            self.health.inputs.update(self.inputs.read())
        self.onair.start()
        if self.updates:
            try:
                self.updates.start()
            except OSError as exc:
                # Its state file cannot be written (read-only or full card): no update may act without
                # its persisted state, so updates wait for the next start; playback goes on.
                from node.adapters.store import classify

                log.error("software updates not started: %s", exc)
                self.emit_event("storage_fault", {"store": "update", "reason": classify(exc, exc.filename),
                                                  "action": "disabled", "detail": str(exc)[:200]})
        if self.modem_poller:
            self.modem_poller.start()
        self.emit_event("started", {"birth": app.birth, "clock": self.intake.clock_trust.status()["source"]})
        self.loop.call_later(HEALTH_TICK_S, self._health_tick)
        self.loop.call_later(CLOCK_TICK_S, self._clock_tick)

    def _health_tick(self) -> None:
        self.loop.call_later(HEALTH_TICK_S, self._health_tick)  # first: an error below must not stop it
        if self.app.link.connected:
            self.pump.pump()  # delivered records the district has not confirmed fall due again
            self.health.tick()

    def _clock_tick(self) -> None:
        self.loop.call_later(CLOCK_TICK_S, self._clock_tick)
        self.intake.observe_clock()
        if self.clock.monotonic() - self._last_floor_save >= FLOOR_SAVE_S:
            self._save_floor()
        # Seen ids are forgotten by the *saved* floor, never by the raw system clock: a Pi whose clock
        # runs days ahead must not forget ids of commands that are still valid (and could be replayed).
        saved = self.store.get("time_floor")
        if saved:
            self.store.forget_expired(dt.datetime.fromisoformat(saved).timestamp())

    def _save_floor(self) -> None:
        self._last_floor_save = self.clock.monotonic()
        self.store.put("time_floor", self.intake.clock_trust.floor.isoformat())

    def stop(self, app) -> None:
        """Reverse of start: playback off and relays off first, then workers, then storage."""
        try:
            if self.updates:
                self.updates.stop()
            self.onair.stop()
            self.emit_event("stopping", {"reason": "restart" if self.restarter and self.restarter.requested
                                         else "shutdown"})
            if self.pump and app.link.connected:
                self.pump.pump()
        finally:
            self._save_floor()
            if self.modem_poller:
                self.modem_poller.close()
            for close in reversed(self.closers):
                try:
                    close()
                except Exception:  # noqa: BLE001 - keep closing the rest
                    log.exception("closing %s", close)

    def snapshot(self, app) -> dict:
        return self.health.snapshot()

    def on_connected(self, app, down_for: float) -> None:
        self.health.on_broker(True)
        self.pump.on_connect()
        self.pump.pump()

    def on_disconnected(self, app) -> None:
        self.health.on_broker(False)
        self.pump.on_disconnect()

    def on_message(self, app, ev: MessageReceived) -> None:
        if ev.topic == app.topics.ack:
            self._on_district_ack(ev.payload)
            self.kick()
            return
        decision = self.intake.handle(ev.topic, ev.payload, size=ev.size)
        # A refused message changed nothing (its event, if any, kicked already): under a flood of junk,
        # an urgent heartbeat tick per message would cost more than verifying it.
        if decision.outcome == "accepted":
            self.kick()

    def _on_district_ack(self, payload: bytes) -> None:
        """Records the district's store committed: delete them from the outbox. A forged or malformed
        acknowledgement deletes nothing and is reported like any rejected message (docs/protocol.md 9b)."""
        ids = self.intake.verify_ack(self.app.topics.ack, payload)
        if ids:
            self.pump.on_district_ack(ids)

    def on_publish_acked(self, app, mid: int) -> None:
        self.pump.on_puback(mid)
        self.pump.flush()
        self.pump.pump()

    # --- event handlers ----------------------------------------------------------------------------
    def _on_player_event(self, ev: PlayerEvent) -> None:
        self.onair.on_player_event(ev)
        self.kick()

    def _on_input(self, ev: InputChanged) -> None:
        self.health.on_input(ev)
        self.onair.on_input(ev)
        self.kick()

    def _on_modem(self, ev: ModemReading) -> None:
        _, cellular = self.health.on_modem(ev)
        if cellular is not None:
            self.intake.observe_clock(cellular=cellular)
        self.kick()
