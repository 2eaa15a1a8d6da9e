"""A real Mosquitto for a district-in-a-box (the demo) and for the tests: generated config, free
loopback port, started and stopped as a child process, nothing left running."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from provisioning.district.broker_config import write_broker_config


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalBroker:
    def __init__(self, workspace: str | Path, workdir: str | Path, *, port: int | None = None,
                 host: str = "127.0.0.1", nodes: dict[str, list[str]] | None = None, prefix: str = "spk"):
        self.workspace = Path(workspace)
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.nodes = nodes
        self.prefix = prefix
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def write_config(self) -> Path:
        return write_broker_config(
            self.workspace, self.workdir, port=self.port, bind=self.host, prefix=self.prefix, nodes=self.nodes,
            run_as_root=os.geteuid() == 0, log_dest=f"file {self.log_path}",
        )

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self.write_config()
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.address}: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read the config and ACL (SIGHUP), e.g. after a node was added to the registry."""
        self.write_config()
        if self.proc:
            self.proc.send_signal(1)

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
