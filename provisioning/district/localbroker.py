"""A real Mosquitto for a district-in-a-box (the demo), the tests and the benchmarks: the config
`speaker-district broker-config` writes (TLS, the generated ACL, the identity fence plugin, the CRL), a
free loopback port, started and stopped as a child process, nothing left running.

This is the only place that starts a Mosquitto: tests and benchmarks that need another broker shape turn
the knobs of LocalBroker (max_queued, fenced, extra_conf) rather than writing a config of their own.
Readiness is a real event: start() returns once a TLS + MQTT CONNECT with the district's certificate
gets its CONNACK; reload() returns once the fence plugin has been loaded again."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

from provisioning.district.broker_config import write_broker_config

READY_CLIENT_ID = "district:localbroker-ready"
# The fence plugin prints this whenever it is (re)initialised: at start and after every reload.
FENCE_LOADED = "speaker_fence: CRL "
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to this child when the process that started it dies, so a
    demo killed with SIGKILL leaves no broker or node behind (prctl(2) PR_SET_PDEATHSIG). The signal
    follows the *thread* that forked: start children from a thread that outlives them (the main one)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: stop() still cleans up
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BrokerNotReady(RuntimeError):
    pass


class LocalBroker:
    """The shipped broker config on HOST:PORT, its files (config, ACL, persistence in data/, log) in
    workdir. Knobs for tests and benchmarks, all off by default so the default is what ships:

    max_queued: replaces max_queued_messages (0 = no per-client limit; a small number makes the broker
        drop a persistent session's overflow, as it does silently in the field).
    fenced=False: the config as it was before the identity fence (no plugin, use_identity_as_username),
        for comparisons and for tests of the listener's own CRL only. Never shipped.
    extra_conf: lines appended to mosquitto.conf (e.g. "set_tcp_nodelay false").

    stop() is a clean shutdown (Mosquitto writes its persistence file); kill9() is a crash (what arrived
    since the last autosave is lost); start() again in the same workdir resumes the same persistence."""

    def __init__(self, workspace: str | Path, workdir: str | Path, *, port: int | None = None,
                 host: str = "127.0.0.1", nodes: dict[str, list[str]] | None = None, prefix: str = "spk",
                 max_queued: int | None = None, fenced: bool = True, extra_conf: str = ""):
        self.workspace = Path(workspace)
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.nodes = nodes
        self.prefix = prefix
        self.max_queued = max_queued
        self.fenced = fenced
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def persistence_dir(self) -> Path:
        return self.workdir / "data"

    def write_config(self) -> Path:
        conf = write_broker_config(
            self.workspace, self.workdir, port=self.port, bind=self.host, prefix=self.prefix, nodes=self.nodes,
            run_as_root=os.geteuid() == 0, log_dest=f"file {self.log_path}",
        )
        text = conf.read_text()
        if self.max_queued is not None:
            if "max_queued_messages 1000" not in text:
                raise RuntimeError("the shipped config no longer sets max_queued_messages 1000")
            text = text.replace("max_queued_messages 1000", f"max_queued_messages {self.max_queued}")
        if not self.fenced:
            text = "\n".join(line for line in text.splitlines() if not line.startswith("plugin"))
            text = text.replace("require_certificate true", "require_certificate true\nuse_identity_as_username true")
        if self.extra_conf:
            text += "\n" + self.extra_conf + "\n"
        conf.write_text(text)
        return conf

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        if self.running:
            raise RuntimeError(f"the broker on {self.address} is already running")
        conf = self.write_config()
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        try:
            self._wait_serving(timeout)
        except BaseException:
            self.kill9()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_serving(self, timeout: float) -> None:
        """Until the broker answers an MQTT CONNECT over TLS (listener, certificates and plugin loaded).
        Before it listens the connection is refused at once; retry until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BrokerNotReady(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self._probe()
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise BrokerNotReady(f"mosquitto did not serve MQTT over TLS on {self.address} within "
                                         f"{timeout} s: {self.log_tail()}") from None
                time.sleep(0.05)

    def _probe(self) -> None:
        if (self.workspace / "tls" / "district.crt").exists():
            self.connack()
            return
        # A workspace without a district identity (a test's bare CA): a completed TLS handshake, which a
        # client without a certificate still gets before the broker refuses it.
        with socket.create_connection((self.host, self.port), timeout=2) as raw:
            with self._tls(client=False).wrap_socket(raw):
                pass

    def _tls(self, client: bool = True) -> ssl.SSLContext:
        tls = self.workspace / "tls"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(tls / "ca.crt"))
        ctx.check_hostname = False  # the broker certificate names the district's hosts; loopback may not be one
        if client:
            ctx.load_cert_chain(str(tls / "district.crt"), str(tls / "district.key"))
        return ctx

    def connack(self, client_id: str = READY_CLIENT_ID) -> int:
        """One MQTT 3.1.1 CONNECT (clean session) over TLS with the district certificate; the CONNACK
        return code. Raises OSError (refused, TLS failure) or ValueError (no CONNACK)."""
        cid = client_id.encode()
        body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x02]) + struct.pack("!H", 10)
        body += struct.pack("!H", len(cid)) + cid
        with socket.create_connection((self.host, self.port), timeout=2) as raw:
            with self._tls().wrap_socket(raw) as conn:
                conn.sendall(bytes([0x10, len(body)]) + body)
                reply = conn.recv(4)
                if len(reply) != 4 or reply[0] != 0x20:
                    raise ValueError(f"no CONNACK: {reply!r}")
                conn.sendall(b"\xe0\x00")  # DISCONNECT
                return reply[3]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_count(self, needle: str) -> int:
        """How often the broker's log holds `needle` (for waiting on what the broker says it did)."""
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0

    def wait_reloaded(self, loads_before: int, timeout: float = 10.0) -> None:
        """Wait until a reload that started after log_count(FENCE_LOADED) was `loads_before` is done
        (SIGHUP from reload(), or the fence's own when the CRL changed): the plugin prints its line in the
        middle of the reload, and Mosquitto's one loop answers a CONNECT only after the whole reload."""
        deadline = time.monotonic() + timeout
        while self.log_count(FENCE_LOADED) <= loads_before:
            if time.monotonic() > deadline or not self.running:
                raise BrokerNotReady(f"mosquitto did not finish the reload: {self.log_tail()}")
            time.sleep(0.05)
        self._probe()

    def stop(self) -> None:
        """Clean shutdown (SIGTERM): Mosquitto saves its persistence before it exits."""
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill9(self) -> None:
        """A crash (SIGKILL): no shutdown, persistence only as of the last autosave."""
        if self.running:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill -9 with crash=True) and start again on the same port with the same persistence."""
        if crash:
            self.kill9()
        else:
            self.stop()
        self.start()

    def reload(self, timeout: float = 10.0) -> None:
        """Re-read the config, ACL and CRL (SIGHUP), e.g. after a node was added to the registry. With the
        fence, returns once the reload is done (wait_reloaded). An unfenced broker prints nothing then, so
        its caller waits for the effect it expects."""
        self.write_config()
        if not self.running:
            return
        before = self.log_count(FENCE_LOADED)
        self.proc.send_signal(signal.SIGHUP)
        if self.fenced:
            self.wait_reloaded(before, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def client_tls(workspace: str | Path, identity: str) -> ssl.SSLContext:
    """TLS context for a client whose cert/key are DIR/tls/IDENTITY.{crt,key} (district, monitor...)."""
    tls = Path(workspace) / "tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(tls / "ca.crt"))
    ctx.load_cert_chain(str(tls / f"{identity}.crt"), str(tls / f"{identity}.key"))
    return ctx
