"""NodeApp: the node's state and the handlers the loop dispatches to.

Start-up reads top to bottom in `start()`; shutdown runs in reverse in `shutdown()`. Handlers run only
on the loop thread, so nothing here needs a lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from node import __version__
from node.adapters.broker import BrokerConnected, BrokerDisconnected, MessageReceived, PublishAcked, Will
from node.loop import EventLoop
from node.topics import Topics

log = logging.getLogger(__name__)


def compact(obj) -> bytes:
    """Mobile data is paid per byte: no spaces in what goes over the air."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class LinkState:
    connected: bool = False
    server: str | None = None
    connects: int = 0
    down_since: float | None = None
    history: list[tuple[float, str]] = field(default_factory=list)


class NodeApp:
    def __init__(self, cfg, *, loop: EventLoop, store, notifier, clock, birth: int, make_broker, parts=None):
        self.cfg = cfg
        self.loop = loop
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.topics = Topics(cfg.broker.topic_prefix, cfg.node.id)
        self.link = LinkState(down_since=clock.monotonic())
        self.birth = birth
        self.status_seq = 0
        self.parts = parts  # playback, health, trust, outbox: node.wiring.Parts
        self.broker = make_broker(
            post=loop.post,
            subscriptions=[(t, 1) for t in self.topics.command_topics(cfg.node.groups)],
            will=Will(self.topics.status, compact(self.offline_status("lost"))),
        )
        loop.on(BrokerConnected, self.on_connected)
        loop.on(BrokerDisconnected, self.on_disconnected)
        loop.on(MessageReceived, self.on_message)
        loop.on(PublishAcked, self.on_publish_acked)
        if parts:
            parts.attach(self)

    # --- status ------------------------------------------------------------------------------------
    def offline_status(self, reason: str) -> dict:
        """The Last Will ("lost") or the clean-shutdown status, as node/schemas/status.json describes."""
        from node.health.heartbeat import shutdown_payload, will_payload

        if reason == "lost":
            return will_payload(self.cfg.node.id, self.birth)
        if self.parts:
            return self.parts.health.heartbeat.shutdown(self.clock.wall().timestamp())
        self.status_seq += 1
        return shutdown_payload(self.cfg.node.id, self.birth, self.status_seq, self.clock.wall().timestamp())

    def snapshot(self) -> dict:
        if self.parts:
            return self.parts.snapshot(self)
        self.status_seq += 1
        return {"v": 1, "node": self.cfg.node.id, "online": True, "birth": self.birth, "seq": self.status_seq,
                "ts": int(self.clock.wall().timestamp()), "ver": __version__}

    def publish_status(self, payload: dict | None = None) -> None:
        self.broker.publish(self.topics.status, compact(payload or self.snapshot()), qos=1, retain=True)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("speaker-node %s starting: node %s, birth %d", __version__, self.cfg.node.id, self.birth)
        if self.parts:
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
        if self.parts:
            self.parts.stop(self)
        acked = self.broker.stop(final=(self.topics.status, compact(self.offline_status("shutdown")), True))
        log.info("stopped (offline status %s)", "acknowledged" if acked else "not delivered")

    # --- broker events -----------------------------------------------------------------------------
    def on_connected(self, ev: BrokerConnected) -> None:
        down_for = self.clock.monotonic() - self.link.down_since if self.link.down_since is not None else 0.0
        self.link.connected, self.link.server, self.link.down_since = True, ev.server, None
        self.link.connects += 1
        self.link.history.append((self.clock.monotonic(), f"connected {ev.server}"))
        log.info("connected to %s (session present: %s) after %.1f s", ev.server, ev.session_present, down_for)
        self.notifier.status(f"node {self.cfg.node.id}: connected to {ev.server}")
        self.publish_status()
        if self.parts:
            self.parts.on_connected(self, down_for)

    def on_disconnected(self, ev: BrokerDisconnected) -> None:
        if self.link.connected:
            self.link.down_since = self.clock.monotonic()
        self.link.connected = False
        self.link.history.append((self.clock.monotonic(), f"disconnected {ev.reason}"))
        log.warning("broker link down: %s", ev.reason)
        self.notifier.status(f"node {self.cfg.node.id}: broker unreachable ({ev.reason})")
        if self.parts:
            self.parts.on_disconnected(self)

    def on_message(self, ev: MessageReceived) -> None:
        if self.parts:
            self.parts.on_message(self, ev)
        else:
            log.info("message on %s (%d bytes) ignored: no command handling wired", ev.topic, len(ev.payload))

    def on_publish_acked(self, ev: PublishAcked) -> None:
        if self.parts:
            self.parts.on_publish_acked(self, ev.mid)
