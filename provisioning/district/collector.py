"""The collector: a duty of `speaker-district serve` that stores what nodes report and acknowledges it.

For every broker in the district's list it keeps one persistent MQTT v5 session (clean start false,
7-day expiry, client id `district:collector`, the district's certificate) subscribed to
PREFIX/node/+/events and PREFIX/node/+/status. Nodes fail over between brokers, so the collector
reads all of them all the time.

Order, the point of it all (docs/protocol.md section 9b):
  1. a message arrives; it is queued, not yet PUBACKed (paho manual_ack): if the collector dies now
     the broker still holds it in our session and delivers it again;
  2. the store thread commits a batch to the database (SQLite WAL or PostgreSQL) - a record id already
     stored is a duplicate and is not stored again;
  3. only then the broker gets its PUBACKs, and each node gets a signed acknowledgement naming the
     committed ids (new and duplicate alike: a duplicate means our last acknowledgement was lost) on
     PREFIX/node/NODE/ack, through the broker the records came from.
A node deletes a record only at step 3, so a collector that was down, a broker that dropped our
queue's overflow (max_queued_messages), crashed before autosave or was replaced by failover, loses
nothing: the node re-sends until step 3 happens.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from node.adapters.broker import split_server
from node.trust.ack import MAX_IDS, encode_ack_body
from node.trust.envelope import PAYLOAD_ACK, sign_envelope
from provisioning.district.records_store import Incoming, RecordStore

log = logging.getLogger(__name__)

CLIENT_ID = "district:collector"  # "CN:purpose" (the broker binds client ids to certificate CNs)
SESSION_EXPIRY_S = 7 * 86400
MAX_PAYLOAD = 64 * 1024
MAX_BATCH = 500
_ID_RE = re.compile(r"[0-9A-Za-z_-]{8,64}")
_NODE_RE = re.compile(r"[0-9A-Za-z_.-]{1,64}")


@dataclass
class Received:
    broker: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    at: float


def parse_message(topic: str, payload: bytes, prefix: str, broker: str, now: float) -> Incoming | str:
    """A node's message -> Incoming, or the reason it is refused (a string)."""
    parts = topic.split("/")
    head = prefix.split("/")
    if len(parts) != len(head) + 3 or parts[:len(head)] != head or parts[len(head)] != "node":
        return "unexpected_topic"
    node, channel = parts[len(head) + 1], parts[len(head) + 2]
    if not _NODE_RE.fullmatch(node) or channel not in ("events", "status"):
        return "unexpected_topic"
    if len(payload) > MAX_PAYLOAD:
        return "too_large"
    try:
        raw = payload.decode("utf-8")
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return "malformed"
    if not isinstance(body, dict):
        return "malformed"
    if body.get("node") != node:
        return "wrong_node"  # the ACL lets a node publish only on its own topics: this is not one of ours
    if channel == "status":
        return Incoming("status", node, broker, now, body, raw)
    if not isinstance(body.get("id"), str) or not _ID_RE.fullmatch(body["id"]):
        return "malformed"
    if body.get("kind") not in ("event", "play"):
        return "malformed"
    return Incoming(body["kind"], node, broker, now, body, raw)


@dataclass
class CollectorStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    refused: int = 0
    acks_sent: int = 0
    store_errors: int = 0
    connected: dict = field(default_factory=dict)


class Collector:
    """start() / stop(); `stats` for the status line and the tests. Not tied to serve: tests and
    benchmarks run it alone."""

    def __init__(self, store: RecordStore, servers: list[str], tls: ssl.SSLContext, ack_key, *,
                 prefix: str = "spk", client_id: str = CLIENT_ID, session_expiry: int = SESSION_EXPIRY_S,
                 max_batch: int = MAX_BATCH):
        if not servers:
            raise ValueError("the collector needs at least one broker")
        self.store, self.servers, self.prefix = store, list(servers), prefix.rstrip("/")
        self.ack_key = ack_key
        self.max_batch = max_batch
        self.stats = CollectorStats(connected={s: False for s in self.servers})
        self._queue: queue.Queue[Received] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.clients = [self._client(index, tls, client_id, session_expiry) for index in range(len(self.servers))]

    # --- MQTT ------------------------------------------------------------------------------------
    def _client(self, index: int, tls: ssl.SSLContext, client_id: str, session_expiry: int) -> mqtt.Client:
        server = self.servers[index]
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.tls_set_context(tls)
        c.reconnect_delay_set(1, 30)
        c.max_inflight_messages_set(100)
        subscriptions = [(f"{self.prefix}/node/+/events", 1), (f"{self.prefix}/node/+/status", 1)]

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                log.warning("collector: %s refused the connection: %s", server, reason_code)
                return
            log.info("collector: connected to %s (session present: %s)", server, flags.session_present)
            client.subscribe(subscriptions)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            # "connected" means receiving: a record published before the SUBACK would not reach us
            self.stats.connected[server] = not any(rc.is_failure for rc in reason_codes)

        def on_disconnect(client, userdata, flags, reason_code, properties):
            self.stats.connected[server] = False

        def on_message(client, userdata, message):
            self._queue.put(Received(index, message.mid, message.qos, message.topic, bytes(message.payload),
                                     time.time()))

        c.on_connect, c.on_disconnect, c.on_message = on_connect, on_disconnect, on_message
        c.on_subscribe = on_subscribe
        return c

    def start(self) -> Collector:
        self._thread = threading.Thread(target=self._store_loop, name="collector-store", daemon=True)
        self._thread.start()
        for server, client in zip(self.servers, self.clients):
            host, port = split_server(server)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
            client.loop_start()  # paho retries the first connection too: a broker down at start is fine
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Store what has arrived, then disconnect. Messages received but not committed stay
        un-PUBACKed in our broker sessions and come again at the next start."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        for client in self.clients:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - already gone
                pass
            client.loop_stop()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once every broker has acknowledged the subscriptions (SUBACK), False at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.stats.connected.values()):
                return True
            time.sleep(0.05)
        return False

    # --- the store thread ------------------------------------------------------------------------
    def _store_loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._handle(batch)

    def _handle(self, batch: list[Received]) -> None:
        parsed: list[tuple[Received, Incoming]] = []
        for item in batch:
            self.stats.received += 1
            outcome = parse_message(item.topic, item.payload, self.prefix, self.servers[item.broker], item.at)
            if isinstance(outcome, str):
                self._refuse(item, outcome)
            else:
                parsed.append((item, outcome))
        delay = 0.5
        while True:
            try:
                new, duplicate = self.store.store_batch([m for _, m in parsed])
                break
            except Exception as exc:  # noqa: BLE001 - database down: keep the batch, never acknowledge it
                self.stats.store_errors += 1
                log.error("collector: storing %d messages failed (%s); retrying in %.1f s", len(parsed), exc, delay)
                if self._stop.wait(delay):
                    return  # not PUBACKed: the brokers deliver them again next time
                delay = min(delay * 2, 30.0)
        self.stats.stored += len(new)
        self.stats.duplicates += len(duplicate)
        self.stats.statuses += sum(1 for _, m in parsed if m.kind == "status")
        for item in batch:
            self._broker_ack(item)
        committed = {id(m) for m in new} | {id(m) for m in duplicate}
        by_node: dict[tuple[int, str], list[str]] = defaultdict(list)
        for item, msg in parsed:
            if id(msg) in committed:
                by_node[(item.broker, msg.node)].append(msg.payload["id"])
        for (broker, node), ids in by_node.items():
            self.acknowledge(broker, node, ids)

    def _refuse(self, item: Received, reason: str) -> None:
        self.stats.refused += 1
        log.warning("collector: refused a message on %s: %s", item.topic[:128], reason)
        try:
            self.store.store_refused(item.at, self.servers[item.broker], item.topic,
                                     reason, item.payload.decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - the refusal itself is only diagnostics
            log.exception("collector: could not store a refusal")

    def _broker_ack(self, item: Received) -> None:
        if item.qos:
            try:
                self.clients[item.broker].ack(item.mid, item.qos)
            except Exception:  # noqa: BLE001 - disconnected: the broker re-delivers, we de-duplicate
                pass

    def acknowledge(self, broker: int, node: str, ids: list[str]) -> None:
        """Signed acknowledgements (node/trust/ack.py), at most MAX_IDS ids each."""
        for start in range(0, len(ids), MAX_IDS):
            body = encode_ack_body(node, ids[start:start + MAX_IDS])
            envelope = sign_envelope(PAYLOAD_ACK, body, [self.ack_key])
            info = self.clients[broker].publish(f"{self.prefix}/node/{node}/ack", envelope, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.stats.acks_sent += 1


class CollectorDuty:
    """The collector as a duty of `speaker-district serve DIR` (start() / stop(), name)."""

    name = "collector"

    def __init__(self, directory, *, db: str | None = None, brokers: list[str] | None = None,
                 client_id: str | None = None, identity: str = "district"):
        from provisioning.district.workspace import Workspace

        # identity: the TLS client certificate DIR/tls/IDENTITY.{crt,key} ("district-serve" from a serve-dir)
        self.identity = identity
        # one collector per district: a second one would take over its sessions
        self.client_id = client_id or (CLIENT_ID if identity == "district" else f"{identity}:collector")

        self.workspace = Workspace.load(directory)
        self.db = db
        self.brokers = list(brokers or self.workspace.brokers)
        self.store: RecordStore | None = None
        self.collector: Collector | None = None

    def start(self) -> None:
        from provisioning.district.localbroker import client_tls
        from provisioning.district.workspace import WorkspaceError

        try:
            key = self.workspace.key("collector")
        except WorkspaceError:
            raise RuntimeError(f"{self.workspace.directory} has no 'collector' key (role ack) to sign record "
                               "acknowledgements (a workspace from before acknowledgements): run "
                               f"'speaker-district send {self.workspace.directory} trust --add-key collector:ack' "
                               "so that the nodes learn the key") from None
        self.store = RecordStore.open(self.db, self.workspace.directory)
        self.collector = Collector(self.store, self.brokers, client_tls(self.workspace.directory, self.identity), key,
                                   prefix=self.workspace.topic_prefix, client_id=self.client_id).start()
        log.info("collector: storing into %s from %s", self.store._safe_url(), ", ".join(self.brokers))

    def stop(self) -> None:
        if self.collector:
            self.collector.stop()
            self.collector = None
        if self.store:
            self.store.close()
            self.store = None
