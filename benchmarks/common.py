"""Shared helpers for the district-in-a-box benchmarks: statistics, node configuration, a district
subscriber, a byte-counting TLS proxy, /proc readers, an in-process node and test audio.

Everything started here is stopped by the caller's `finally` (each class has close()/stop()).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import struct
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- reporting ---------------------------------------------------------------------------------------
def command_line(script: str, argv: list[str]) -> str:
    return " ".join([".venv/bin/python", f"benchmarks/{script}", *argv])


def machine_line() -> str:
    load = os.getloadavg()[0]
    return (f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
            f"(shared; 1-min load {load:.2f} at the end)")


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): with 200 samples p99 is the 2nd largest."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- node configuration ----------------------------------------------------------------------------
def node_toml(node_dir: Path, node_id: str, groups: list[str], servers: list[str], state_dir: Path, *,
              modem_poll: float = 60.0, **knobs) -> str:
    """A benchmark node's node.toml: the demo's simulated node template with the knobs turned."""
    from provisioning.district.box import simulated_node_toml

    if knobs.get("ntp_file"):   # a simulated NTP flag and no district time service: decide at once
        knobs.setdefault("await_signed", 0)
    return simulated_node_toml(node_dir, node_id, groups, servers, state_dir=state_dir, modem_poll=modem_poll,
                               **knobs)


def configure(node, servers: list[str], **kw) -> None:
    """Rewrite a DistrictInABox node's config (after box.start_broker() wrote the default one)."""
    node.config.write_text(node_toml(node.node_dir, node.node_id, node.groups, servers, node.state_dir, **kw))


def ntp_flag(directory: Path) -> Path:
    """Simulated 'NTP synchronised' flag (systemd-timesyncd's file), so nodes trust the wall clock."""
    flag = Path(directory) / "timesync-synchronized"
    flag.touch()
    return flag


def start_broker(box, extra_conf: str = ""):
    """box.start_broker(), optionally with extra mosquitto.conf lines (e.g. "set_tcp_nodelay true")."""
    return box.start_broker(extra_conf=extra_conf)


# --- district side -----------------------------------------------------------------------------------
@dataclass
class Seen:
    t: float          # time.monotonic() when paho delivered it
    topic: str
    obj: dict | None
    size: int
    retain: bool


class Subscriber:
    """A district MQTT client (mTLS, district certificate) that timestamps what it receives."""

    def __init__(self, workspace: Path, address: str, topics: list[str], client_id: str = "district:bench-sub"):
        import paho.mqtt.client as mqtt

        from provisioning.district.localbroker import client_tls

        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        host, _, port = address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_tls(workspace, "district"))

        def on_connect(c, u, f, rc, p):
            c.subscribe([(t, 1) for t in topics])

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port), keepalive=60)
        self.client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise ConnectionError(f"bench subscriber: no SUBACK from {address}")

    def _on_message(self, client, userdata, msg):
        t = time.monotonic()
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            obj = None
        with self._cond:
            self.seen.append(Seen(t, msg.topic, obj, len(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> Seen:
        """The first message received so far (or until timeout) for which predicate holds; predicates
        usually filter on Seen.t >= a start time."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for seen in self.seen[checked:]:
                    if predicate(seen):
                        return seen
                checked = len(self.seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching message")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_startup_link_event(sub: "Subscriber", node_id: str, since: float, poll_interval: float) -> bool:
    """At start-up the first modem poll runs before the broker connects, so the recovery ladder reports
    one `link_restored` event at the second poll (a one-off; see BENCHMARKS.md). Idle measurements
    start after it. Returns whether it came (it will not once the product stops sending it)."""
    try:
        sub.wait_for(lambda s: s.t >= since and s.topic == f"spk/node/{node_id}/events"
                     and (s.obj or {}).get("type") == "link_restored", poll_interval + 15)
        return True
    except TimeoutError:
        return False


# --- byte-counting proxy ---------------------------------------------------------------------------
@dataclass
class Record:
    t: float        # monotonic time its header was seen
    direction: str  # "up" (node -> broker) or "down"
    content_type: int
    size: int       # bytes on the TCP stream: 5-byte TLS header + body


class _RecordParser:
    """Cuts a TLS byte stream into records without decrypting anything."""

    def __init__(self, direction: str, sink: list[Record]):
        self.direction, self.sink = direction, sink
        self.header = b""
        self.left = 0

    def feed(self, data: bytes, now: float) -> None:
        i = 0
        while i < len(data):
            if self.left:
                take = min(self.left, len(data) - i)
                self.left -= take
                i += take
                continue
            need = 5 - len(self.header)
            self.header += data[i:i + need]
            i += need
            if len(self.header) == 5:
                content_type, _, length = struct.unpack("!BHH", self.header)
                self.sink.append(Record(now, self.direction, content_type, 5 + length))
                self.header, self.left = b"", length


class ByteCountingProxy:
    """Loopback TCP proxy between a node and the broker: counts bytes both ways and logs TLS records.

    The node's broker.servers points at `address`; the TLS session is end to end (the proxy only sees
    ciphertext), so what it counts is exactly what the node's TCP connection carries."""

    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        self.upstream_host, _, port = upstream.rpartition(":")
        self.upstream_port = int(port)
        self.listener = socket.create_server((host, 0))
        self.address = f"{host}:{self.listener.getsockname()[1]}"
        self.records: list[Record] = []
        self.bytes = {"up": 0, "down": 0}
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accept = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.upstream_host, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                t = threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        parser = _RecordParser(direction, self.records)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                now = time.monotonic()
                with self._lock:
                    self.bytes[direction] += len(data)
                    parser.feed(data, now)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def snapshot(self) -> tuple[int, int, int]:
        """(bytes up, bytes down, number of records so far)."""
        with self._lock:
            return self.bytes["up"], self.bytes["down"], len(self.records)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2)
        self._accept.join(2)


# --- /proc readers ----------------------------------------------------------------------------------
def proc_status_kib(pid: int, key: str) -> int:
    """VmRSS, VmHWM, RssAnon... from /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_io(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        out[name.strip()] = int(value)
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (comm), summed over threads of the same name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


# --- audio ----------------------------------------------------------------------------------------
def tone_wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    """A mono 16-bit tone; one second is computed and repeated, so long clips are cheap to make."""
    second = b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(rate))
    whole, part = divmod(int(seconds * rate), rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for _ in range(whole):
            w.writeframes(second)
        w.writeframes(second[: part * 2])
    return path


# --- WAV output watching -----------------------------------------------------------------------------
def first_growth(directory: Path, prefix: str, deadline: float, header: int = 44, interval: float = 0.001,
                 stop: threading.Event | None = None) -> float | None:
    """Monotonic time at which a file DIR/PREFIX*.wav first grows past its WAV header (None on timeout)."""
    path = None
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        if path is None:
            found = sorted(directory.glob(f"{prefix}*.wav")) if directory.is_dir() else []
            path = found[0] if found else None
        if path is not None:
            try:
                if path.stat().st_size > header:
                    return time.monotonic()
            except FileNotFoundError:
                path = None
        time.sleep(interval)
    return None


# --- the node in this process -------------------------------------------------------------------------
class InProcessNode:
    """build_app() with the real MqttBroker, the real VlcPlayer (WAV) and gpiozero's MockFactory, its
    loop on a thread of this process: relay history and benchmark share one monotonic clock.

    The app is built, run, shut down and closed on that one thread (the outbox's SQLite connection
    belongs to the thread that opened it, as in the daemon). `prepare(app)` runs there before start()."""

    def __init__(self, config_path: Path, prepare=None, timeout: float = 30):
        from node.config import load_config

        self.cfg = load_config(config_path)
        self.app = None
        self._prepare = prepare
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="node-loop", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("in-process node did not start")
        if self._error:
            raise RuntimeError(f"in-process node failed to start: {self._error}") from self._error

    def _run(self) -> None:
        from gpiozero.pins.mock import MockFactory

        from node.wiring import build_app

        pins = MockFactory()
        try:
            self.app = build_app(self.cfg, pin_factory=pins)
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._ready.set()
            pins.reset()
            return
        try:
            if self._prepare:
                self._prepare(self.app)
            self.app.start()
            self._ready.set()
            self.app.loop.run()
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._ready.set()
        finally:
            try:
                self.app.shutdown()
            finally:
                self.app.close()
                pins.reset()

    def wait_connected(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.app.link.connected:
            if time.monotonic() > deadline:
                raise TimeoutError("in-process node did not connect to the broker")
            time.sleep(0.02)

    def close(self) -> None:
        if self.app is not None:
            self.app.loop.stop()
        self.thread.join(15)
