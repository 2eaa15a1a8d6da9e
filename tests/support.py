"""Test helpers shared by the suites: a district workspace, MQTT probes, waiting without sleeping blindly."""

from __future__ import annotations

import datetime as dt
import json
import queue
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from provisioning import pki
from provisioning.district.localbroker import client_tls
from provisioning.district.workspace import init_workspace

NODES = {
    "27787-01": ["c27787", "d760", "p75"],
    "27787-02": ["c27787", "d760", "p75"],
    "27788-01": ["c27788", "d760", "p75"],
}


def make_tls_workspace(ws: Path, nodes: dict[str, list[str]] = NODES) -> Path:
    """A district workspace (`speaker-district init`: keys, trust.json, TLS) plus a dashboard identity,
    node certificates (ws/nodes/ID/node.{crt,key}) and odd cases:
    an expired node certificate and a certificate from a foreign CA."""
    tls = ws / "tls"
    if not (tls / "ca.crt").exists():
        init_workspace(ws, district="test")
    ca_key, ca = pki.load_private_key(tls / "ca.key"), pki.load_cert(tls / "ca.crt")
    if not (tls / "monitor.crt").exists():
        key, cert = pki.issue_client_cert(ca_key, ca, "monitor")
        pki.write_private_key(tls / "monitor.key", key)
        pki.write_cert(tls / "monitor.crt", cert)
    for node_id in nodes:
        d = ws / "nodes" / node_id
        if not (d / "node.crt").exists():
            key, cert = pki.issue_client_cert(ca_key, ca, node_id)
            pki.write_private_key(d / "node.key", key)
            pki.write_cert(d / "node.crt", cert)
    odd = ws / "odd"
    if not (odd / "expired.crt").exists():
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
        key, cert = pki.issue_client_cert(ca_key, ca, "27787-01", not_before=past,
                                          not_after=past + dt.timedelta(days=30))
        pki.write_private_key(odd / "expired.key", key)
        pki.write_cert(odd / "expired.crt", cert)
        foreign_key, foreign = pki.create_ca("someone else's CA")
        key, cert = pki.issue_client_cert(foreign_key, foreign, "27787-01")
        pki.write_private_key(odd / "foreign.key", key)
        pki.write_cert(odd / "foreign.crt", cert)
    return ws


def node_tls(ws: Path, node_id: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ws / "tls" / "ca.crt"))
    ctx.load_cert_chain(str(ws / "nodes" / node_id / "node.crt"), str(ws / "nodes" / node_id / "node.key"))
    return ctx


class Probe:
    """The tests' one MQTT recorder: a real client (mTLS, MQTT 5) that records everything it receives,
    in arrival order, for asserting on broker traffic. Returns from the constructor only after CONNACK
    and (when it subscribes) SUBACK, so nothing published afterwards is missed.

    session_expiry: a persistent session (clean start off) like a node's or the collector's: what the
    broker queued for it while it was away arrives when it connects again. reconnect: paho's
    (min, max) reconnect delay, for a client that must come back after a broker restart.
    Records: `seen` [(topic, payload, retain)], the queue `messages` (wait_for/drain consume it),
    `connack` (the reason code), `disconnects` (how often the broker or we closed the connection)."""

    def __init__(self, broker, ctx: ssl.SSLContext, client_id: str, subscribe=(), connect=True, *,
                 session_expiry: int | None = None, reconnect: tuple[float, float] | None = None):
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.seen: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.connack = threading.Event()
        self.subscribed = threading.Event()
        self.reason = None
        self.disconnects = 0
        self.acks: set[int] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(ctx)
        if reconnect:
            self.client.reconnect_delay_set(*reconnect)
        self._subscribe = list(subscribe)
        self._session_expiry = session_expiry
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.add(mid)
        self.client.on_disconnect = self._on_disconnect
        self.broker = broker
        if connect:
            self.connect()

    def connect(self, timeout: float = 10.0) -> "Probe":
        kwargs = {}
        if self._session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry
            kwargs = {"clean_start": False, "properties": props}
        self.connack.clear()
        self.subscribed.clear()
        self.client.connect(self.broker.host, self.broker.port, keepalive=30, **kwargs)
        self.client.loop_start()
        if not self.connack.wait(timeout):
            raise TimeoutError("no CONNACK")
        # Messages published before the broker's SUBACK would be missed: wait for it.
        if self._subscribe and not self.reason.is_failure and not self.subscribed.wait(timeout):
            raise TimeoutError("no SUBACK")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.reason = reason_code
        if not reason_code.is_failure and self._subscribe:
            client.subscribe([(t, 1) for t in self._subscribe])
        self.connack.set()

    def _on_disconnect(self, *_):
        self.disconnects += 1

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.seen.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        self.messages.put(msg)

    def payloads(self) -> list[bytes]:
        """Every payload received so far, in arrival order."""
        with self._lock:
            return [payload for _, payload, _ in self.seen]

    def wait_seen(self, predicate, timeout: float = 10.0) -> list[bytes]:
        """Wait until predicate(payloads received so far) holds; returns those payloads."""
        def holds():
            got = self.payloads()
            return (got,) if predicate(got) else None

        return wait_until(holds, timeout)[0]

    def wait_for(self, predicate, timeout: float = 10.0):
        """Return the first received message (topic, payload-json) for which predicate(topic, obj) holds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching message; saw {[(t, p[:120]) for t, p, _ in self.seen[-10:]]}")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            try:
                obj = json.loads(msg.payload)
            except ValueError:
                obj = None
            if predicate(msg.topic, obj):
                return msg.topic, obj

    def find(self, predicate, timeout: float = 10.0):
        """Like wait_for, but a matching message that already arrived counts too (order-insensitive)."""
        for topic, payload, _ in list(self.seen):
            try:
                obj = json.loads(payload)
            except ValueError:
                continue
            if predicate(topic, obj):
                return topic, obj
        return self.wait_for(predicate, timeout)

    def drain(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """The payloads of the next `count` messages (fewer if the deadline comes first)."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(bytes(self.messages.get(timeout=max(0.01, deadline - time.monotonic())).payload))
            except queue.Empty:
                break
        return got

    def publish(self, topic, payload, qos=1, retain=False, timeout=5.0) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        return info.is_published()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def district_probe(broker, ws: Path, subscribe=("spk/node/+/status", "spk/node/+/events", "spk/node/+/delta"),
                   client_id="district:probe"):
    """A client of the district identity. The broker accepts only "district" and "district:…" from the
    district certificate (docs/protocol.md §1a), so a bare purpose such as "acl-watcher" is namespaced."""
    if client_id != "district" and not client_id.startswith("district:"):
        client_id = f"district:{client_id}"
    return Probe(broker, client_tls(ws, "district"), client_id, subscribe)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def write_node_config(path: Path, ws: Path, node_id: str, servers: list[str], *, groups=None,
                      state_dir: Path | None = None, extra: str = "", trust_file: Path | None = None,
                      **toml_kw) -> Path:
    """A node.toml for a simulated node of the test district: its certificate from ws/nodes/ID, the
    district CA, no relays or inputs unless `extra` adds them, no modem, a short keep-alive, and a
    simulated "NTP synchronised" flag (so the node trusts its clock) and no wait for a district time
    service (await_signed = 0: these tests run none)."""
    from provisioning.district.box import simulated_node_toml

    nd = ws / "nodes" / node_id
    ntp_flag = path.parent / "timesync-synchronized"
    ntp_flag.touch()
    path.write_text(simulated_node_toml(
        nd, node_id, NODES.get(node_id, []) if groups is None else groups, servers,
        state_dir=state_dir or path.parent / f"state-{node_id}", trust_file=trust_file or ws / "trust.json",
        ca_file=ws / "tls" / "ca.crt", keepalive=10, reconnect_max=2, relays=False, modem=False,
        ntp_file=ntp_flag, extra=extra, **{"await_signed": 0, **toml_kw}))
    return path


class NodeProcess:
    """`speaker-node run` as a real child process."""

    def __init__(self, config: Path, python: str, env: dict | None = None, args=()):
        import os
        import subprocess
        import sys

        self.config = config
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        root = Path(__file__).resolve().parent.parent
        full_env["PYTHONPATH"] = str(root) + os.pathsep + full_env.get("PYTHONPATH", "")
        self.log_path = config.parent / f"{config.stem}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([python or sys.executable, "-m", "node", "run", "--config", str(config),
                                      *args], stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def kill9(self):
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout=15) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> str:
        """The log once it holds `needle` at least `count` times (lines are written as things happen)."""
        return wait_until(lambda: (text := self.log()).count(needle) >= count and text, timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def connack_code(broker, ctx: ssl.SSLContext, client_id: str, timeout: float = 10.0, *, mqtt311: bool = False,
                 auth_method: str | None = None) -> int | None:
    """One connection attempt as CLIENT_ID asking for its persistent session; returns the CONNACK reason
    code value (0 = accepted), or None when the connection failed before any CONNACK (TLS refused, or the
    broker closed the connection)."""
    protocol = mqtt.MQTTv311 if mqtt311 else mqtt.MQTTv5
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                    clean_session=False if mqtt311 else None)
    c.tls_set_context(ctx)
    result = {}
    c.on_connect = lambda _c, _u, _f, reason, _p: result.setdefault("rc", reason.value)
    kwargs = {}
    if not mqtt311:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        if auth_method:
            props.AuthenticationMethod = auth_method
        kwargs = {"clean_start": False, "properties": props}
    try:
        c.connect(broker.host, broker.port, keepalive=30, **kwargs)
        deadline = time.monotonic() + timeout
        while "rc" not in result and time.monotonic() < deadline:
            if c.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break  # the broker closed the connection
    except OSError:  # ssl.SSLError included
        return None
    finally:
        try:
            c.disconnect()
        except Exception:  # noqa: BLE001 - best effort on a socket that may be gone
            pass
    return result.get("rc")


def try_connect(broker, ctx: ssl.SSLContext, client_id: str) -> bool:
    """True if the broker accepts an MQTT 5 connection over CTX; False if the TLS handshake fails, the
    broker refuses (CONNACK failure) or never answers."""
    return connack_code(broker, ctx, client_id, timeout=5.0) == 0
