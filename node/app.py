"""NodeApp: the node's state and the handlers the loop dispatches to.

Start-up reads top to bottom in `start()`; shutdown runs in reverse in `shutdown()`. Handlers run only
on the loop thread, so nothing here needs a lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node import __version__
from node.adapters.broker import BrokerConnected, BrokerDisconnected, MessageReceived, PublishAcked, Will
from node.adapters.inbound import InboundReady
from node.loop import EventLoop
from node.reporting.heartbeat import encode, will_payload
from node.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class LinkState:
    connected: bool = False
    server: str | None = None
    down_since: float | None = None


class NodeApp:
    def __init__(self, cfg, *, loop: EventLoop, store, notifier, clock, birth: int, make_broker, parts):
        self.cfg = cfg
        self.loop = loop
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.topics = Topics(cfg.broker.topic_prefix, cfg.node.id)
        self.link = LinkState(down_since=clock.monotonic())
        self.birth = birth
        self.parts = parts  # intake, on-air, health, outbox: node.service.parts.NodeParts
        self.status_published = False    # a full status reached the broker (an update's health check)
        self.broker = make_broker(
            post=loop.post,
            subscriptions=[(t, 1) for t in self.topics.subscriptions(cfg.node.groups)],
            will=Will(self.topics.status, encode(will_payload(cfg.node.id, birth))),
            triage=parts.intake.triage, max_message_bytes=cfg.trust.max_message_bytes,
        )
        loop.on(BrokerConnected, self.on_connected)
        loop.on(BrokerDisconnected, self.on_disconnected)
        loop.on(MessageReceived, self.on_message)
        loop.on(InboundReady, self.on_inbound_ready)
        loop.on(PublishAcked, self.on_publish_acked)
        parts.attach(self)

    # --- status ------------------------------------------------------------------------------------
    def publish_status(self, payload: dict | None = None) -> None:
        """The retained status: a full heartbeat snapshot (node/schemas/status.json)."""
        self.broker.publish(self.topics.status, encode(payload or self.parts.snapshot(self)), qos=1, retain=True)
        if self.link.connected:
            self.status_published = True

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("speaker-node %s starting: node %s, birth %d", __version__, self.cfg.node.id, self.birth)
        self.parts.start(self)
        self.broker.start()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog_tick(interval)
        self.notifier.ready(f"node {self.cfg.node.id}: waiting for broker")

    def _watchdog_tick(self, interval: float) -> None:
        # Pinged from the loop thread only: if the loop hangs, the pings stop and systemd restarts us.
        self.notifier.watchdog()
        self.loop.call_later(interval, lambda: self._watchdog_tick(interval))

    def shutdown(self) -> None:
        """SIGTERM: stop playback, relays off, publish offline status, disconnect."""
        self.notifier.stopping()
        self.parts.stop(self)
        offline = self.parts.health.heartbeat.shutdown(self.clock.wall().timestamp())
        acked = self.broker.stop(final=(self.topics.status, encode(offline), True))
        log.info("stopped (offline status %s)", "acknowledged" if acked else "not delivered")

    # --- broker events -----------------------------------------------------------------------------
    def on_connected(self, ev: BrokerConnected) -> None:
        down_for = self.clock.monotonic() - self.link.down_since if self.link.down_since is not None else 0.0
        self.link.connected, self.link.server, self.link.down_since = True, ev.server, None
        log.info("connected to %s (session present: %s) after %.1f s", ev.server, ev.session_present, down_for)
        self.notifier.status(f"node {self.cfg.node.id}: connected to {ev.server}")
        self.publish_status()
        self.parts.on_connected(self, down_for)

    def on_disconnected(self, ev: BrokerDisconnected) -> None:
        if self.link.connected:
            self.link.down_since = self.clock.monotonic()
        self.link.connected = False
        log.warning("broker link down: %s", ev.reason)
        self.notifier.status(f"node {self.cfg.node.id}: broker unreachable ({ev.reason})")
        self.parts.on_disconnected(self)

    def on_message(self, ev: MessageReceived) -> None:
        self.parts.on_message(self, ev)

    def on_inbound_ready(self, ev: InboundReady) -> None:
        # One message per event: timers, player events and a Stop interleave with a backlog.
        item = self.broker.inbound.pop()
        if item is not None:
            self.parts.on_message(self, MessageReceived(item.topic, item.payload, item.retained, item.size))

    def on_publish_acked(self, ev: PublishAcked) -> None:
        self.parts.on_publish_acked(self, ev.mid)
