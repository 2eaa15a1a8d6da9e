"""Broker adapter: MQTT v5 over mutual TLS with paho-mqtt, a broker list with failover, backoff with jitter.

The adapter owns one network thread. It never touches node state: every callback only posts an event
(BrokerConnected, BrokerDisconnected, MessageReceived, PublishAcked) to the node loop.

Why our own connect loop instead of paho's loop_forever(): paho reconnects to the same host with a
fixed doubling delay; a node needs failover across the district's brokers and full jitter so that
hundreds of nodes do not reconnect in lock-step after a broker restart.

Fail back: the first broker in the list is the district's home broker (commands are sent there first,
dashboards watch it). After a failover the node checks every `failback_interval` (jittered, 0.5x-1.5x,
so the nodes that failed over together do not return together) whether the first broker accepts a TLS
handshake again; if so it disconnects cleanly and reconnects there. Records in flight are safe: the
outbox re-sends everything the district has not acknowledged.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from node.adapters.backoff import Backoff
from node.adapters.inbound import InboundQueue, default_triage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerConnected:
    server: str
    session_present: bool


@dataclass(frozen=True)
class BrokerDisconnected:
    server: str
    reason: str


@dataclass(frozen=True)
class MessageReceived:
    topic: str
    payload: bytes
    retained: bool = False
    size: int | None = None  # bytes as received; payload is b"" when that was over the size cap


@dataclass(frozen=True)
class PublishAcked:
    mid: int


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def split_server(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def tls_context(ca_file: str, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """TLS >= 1.2, server certificate checked against the district CA (not the system store), our cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class MqttBroker:
    """One MQTT session to the first reachable broker of `servers`.

    subscriptions: (topic, qos) re-made on every connect, because a broker that lost its persistence
    (or a different broker after failover) does not know our session.
    """

    def __init__(
        self,
        *,
        client_id: str,
        servers: list[str],
        tls: ssl.SSLContext,
        post: Callable[[object], None],
        subscriptions: list[tuple[str, int]],
        will: Will | None = None,
        keepalive: int = 60,
        session_expiry: float = 7 * 86400,
        backoff: Backoff | None = None,
        max_inflight: int = 20,
        failback_interval: float = 300.0,
        rng: random.Random | None = None,
        triage=default_triage,
        max_message_bytes: int = 65536,
        inbound_max_messages: int = 256,
        inbound_max_bytes: int = 2 << 20,
    ):
        self.client_id = client_id
        self.servers = list(servers)
        self.post = post
        self.subscriptions = list(subscriptions)
        self.keepalive = keepalive
        self.session_expiry = int(session_expiry)
        self.backoff = backoff or Backoff(1.0, 120.0)
        self.current: str | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server_index = 0
        self.failback_interval = failback_interval
        self._rng = rng or random.Random()
        self._tls = tls
        self.failbacks = 0
        # Bounded in messages and bytes, drops counted: a flood on a command topic cannot grow the
        # daemon or bury an emergency (node/adapters/inbound.py).
        self.inbound = InboundQueue(post, max_messages=inbound_max_messages, max_bytes=inbound_max_bytes,
                                    max_message_bytes=max_message_bytes, triage=triage)

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.tls_set_context(tls)
        c.max_inflight_messages_set(max_inflight)
        if will:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        # Only the network thread may write to the TLS socket: two threads writing to one SSL object
        # corrupt the stream ("bad record mac"). With a socket-write hook registered, paho's publish()
        # from the node loop only queues the packet and wakes our network thread's select().
        c.on_socket_register_write = lambda client, userdata, sock: None
        self.client = c

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def stop(self, final: tuple[str, bytes, bool] | None = None, timeout: float = 3.0) -> bool:
        """Disconnect cleanly. `final` = (topic, payload, retain) published (QoS 1) and acknowledged
        first, e.g. the 'offline' status, so a clean shutdown does not look like a crash.
        Returns True when the final message was acknowledged."""
        acked = False
        if final and self.connected.is_set():
            info = self.client.publish(final[0], final[1], qos=1, retain=final[2])
            try:
                info.wait_for_publish(timeout)
                acked = info.is_published()
            except (RuntimeError, ValueError):
                acked = False
        self._stop.set()
        try:
            # A normal DISCONNECT tells the broker not to publish the Last Will.
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._thread:
            self._thread.join(timeout)
        return acked

    # --- publishing (any thread; paho serialises on its own lock) ---------------------------------
    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int | None:
        """Returns the message id to match a later PublishAcked, or None when not connected."""
        if not self.connected.is_set():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    # --- network thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            failing_back = False
            server = self.servers[self._server_index % len(self.servers)]
            host, port = split_server(server)
            self.current = server
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
            try:
                self.client.connect(host, port, keepalive=self.keepalive, clean_start=False, properties=props)
                next_check = time.monotonic() + self._failback_delay()
                while not self._stop.is_set():
                    rc = self.client.loop(timeout=0.5)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                    if self.on_fallback and time.monotonic() >= next_check:
                        next_check = time.monotonic() + self._failback_delay()
                        if self._primary_is_back():
                            log.info("broker: %s is back, failing back from %s", self.servers[0], server)
                            self.failbacks += 1
                            self._server_index = 0
                            failing_back = True
                            self.client.disconnect()  # clean: no Last Will, the session stays on both
                            self.client.loop(timeout=0.5)
                            break
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("broker %s: connection failed: %s", server, exc)
                self.post(BrokerDisconnected(server, f"connect failed: {exc}"))
            finally:
                was_connected = self.connected.is_set()
                self.connected.clear()
            if self._stop.is_set():
                break
            if failing_back:
                self._stop.wait(self._rng.uniform(0, 1.0))  # connect to the home broker at once, spread
                continue
            if not was_connected:
                self._server_index += 1  # failover: next broker in the list
            delay = self.backoff.next_delay()
            log.info("broker: reconnecting in %.1f s", delay)
            self._stop.wait(delay)

    @property
    def on_fallback(self) -> bool:
        """Connected to a broker other than the first in the list."""
        return len(self.servers) > 1 and self._server_index % len(self.servers) != 0

    def _failback_delay(self) -> float:
        return self.failback_interval * self._rng.uniform(0.5, 1.5)

    def _primary_is_back(self) -> bool:
        """A full TLS handshake with the first broker (a TCP accept alone could be a half-dead host)."""
        host, port = split_server(self.servers[0])
        try:
            with socket.create_connection((host, port), timeout=3) as raw:
                with self._tls.wrap_socket(raw, server_hostname=host):
                    return True
        except (OSError, ssl.SSLError, ValueError):
            return False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.current, reason_code)
            self.post(BrokerDisconnected(self.current or "", f"refused: {reason_code}"))
            client.disconnect()
            return
        self.backoff.reset()
        sock = client.socket()
        if sock is not None:
            try:  # commands and PUBACKs are small: never hold them back for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.subscriptions:
            client.subscribe([(t, q) for t, q in self.subscriptions])
        self.connected.set()
        self.post(BrokerConnected(self.current or "", bool(flags.session_present)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set():
            self.connected.clear()
            self.post(BrokerDisconnected(self.current or "", str(reason_code)))

    def _on_message(self, client, userdata, message):
        self.inbound.put(message.topic, message.payload, bool(message.retain))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if not reason_code.is_failure:
            self.post(PublishAcked(mid))


class FakeBroker:
    """In-memory stand-in recording everything published; `deliver` posts a message into the node."""

    def __init__(self, post: Callable[[object], None], subscriptions=(), triage=default_triage,
                 max_message_bytes: int = 65536, inbound_max_messages: int = 256, inbound_max_bytes: int = 2 << 20,
                 **_):
        self.post = post
        self.subscriptions = list(subscriptions)
        self.inbound = InboundQueue(post, max_messages=inbound_max_messages, max_bytes=inbound_max_bytes,
                                    max_message_bytes=max_message_bytes, triage=triage)
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.connected = threading.Event()
        self._mid = 0
        self.auto_ack = True

    def start(self) -> None:
        self.connected.set()
        self.post(BrokerConnected("fake:0", False))

    def stop(self, final=None, timeout: float = 0) -> bool:
        if final:
            self.published.append((final[0], final[1], 1, final[2]))
        self.connected.clear()
        return bool(final)

    def publish(self, topic, payload, qos=1, retain=False):
        if not self.connected.is_set():
            return None
        self._mid += 1
        data = payload.encode() if isinstance(payload, str) else payload
        self.published.append((topic, data, qos, retain))
        if self.auto_ack and qos:
            self.post(PublishAcked(self._mid))
        return self._mid

    def deliver(self, topic: str, payload: bytes) -> None:
        """As paho's on_message does: through the bounded inbound queue."""
        self.inbound.put(topic, payload)

    def messages(self, suffix: str) -> list[dict]:
        return [json.loads(p) for t, p, _, _ in self.published if t.endswith(suffix)]
