"""District-in-a-box: a district workspace, a real Mosquitto, an HTTPS content server and simulated
nodes (`speaker-node run --simulate` child processes), all on this machine's loopback.

Used by `speaker-district demo`, the benchmarks and the end-to-end tests: the same product code a district
and a node run, with only the hardware simulated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from provisioning.district.content_server import ContentServer
from provisioning.district.localbroker import LocalBroker, die_with_parent
from provisioning.district.serve_dir import export_serve_dir, tls_identity
from provisioning.district.workspace import init_workspace
from provisioning.node_new import create_node
from provisioning.nodeid import NodeIdentity


def simulated_node_toml(node_dir: Path, node_id: str, groups: list[str], servers: list[str], *,
                        state_dir: Path, trust_file: Path | None = None, ca_file: Path | None = None,
                        cert_file: Path | None = None, key_file: Path | None = None, keepalive: int = 60,
                        reconnect_max: float = 5.0, relays: bool = True, warmup: float = 0.3, tail: float = 0.2,
                        idle_hold: float = 2.0, min_off: float = 0.5, modem: bool = True, modem_poll: float = 10.0,
                        heartbeat_full: float = 900.0, delta_min_interval: float = 5.0,
                        resend_after: float = 60.0, resend_max: float = 3600.0, failback_interval: float = 300.0,
                        ntp_file: Path | None = None, runtime_dir: Path | None = None, extra: str = "",
                        await_signed: float | None = None) -> str:
    """node.toml for a simulated node (the demo, the tests and the benchmarks all use this one):
    the node's own key material, state under state_dir, WAV output, MockFactory pins, optionally the
    pty modem simulator. ntp_file: a file whose existence means "NTP synchronised"."""
    hardware = f"""
[relays]
amplifier = {{ pin = 17, active_high = true }}
zones = [ {{ name = "main", pin = 27, active_high = true }} ]
warmup = {warmup}
tail = {tail}
idle_hold = {idle_hold}
min_off = {min_off}

[inputs]
door = {{ pin = 5, active_high = false }}
mains = {{ pin = 6, active_high = true }}
amp_fault = {{ pin = 13, active_high = false }}
""" if relays else ""
    clock = f'\n[clock]\nntp_sync_file = "{ntp_file}"\n' if ntp_file else ""
    if await_signed is not None:   # 0: no district time service expected (tests that trust an NTP flag)
        clock = (clock or "\n[clock]\n") + f"await_signed = {await_signed}\n"
    runtime = f'runtime_dir = "{runtime_dir}"\n' if runtime_dir else ""
    return f"""# simulated node {node_id} (district-in-a-box)
[node]
id = "{node_id}"
groups = {json.dumps(groups)}
simulate = true

[broker]
servers = {json.dumps(servers)}
ca_file = "{ca_file or node_dir / 'ca.crt'}"
cert_file = "{cert_file or node_dir / 'node.crt'}"
key_file = "{key_file or node_dir / 'node.key'}"
keepalive = {keepalive}
reconnect_min = "0.2s"
reconnect_max = {reconnect_max}
failback_interval = {failback_interval}

[trust]
file = "{trust_file or node_dir / 'trust.json'}"

[storage]
state_dir = "{state_dir}"
{runtime}
[audio]
output = "wav"
{hardware}
[modem]
enabled = {str(modem).lower()}
port = "sim"
poll_interval = {modem_poll}

[health]
heartbeat_full = {heartbeat_full}
delta_min_interval = {delta_min_interval}
resend_after = {resend_after}
resend_max = {resend_max}
{clock}{extra}
"""


class SimulatedNode:
    def __init__(self, node_id: str, groups: list[str], node_dir: Path, config: Path, state_dir: Path,
                 toml_kw: dict | None = None):
        self.node_id, self.groups = node_id, groups
        self.toml_kw = toml_kw or {}
        self.node_dir, self.config, self.state_dir = node_dir, config, state_dir
        self.proc: subprocess.Popen | None = None
        self.log_path = node_dir / "node.log"
        self.argv: list[str] | None = None       # e.g. a release tree's current/venv/bin/speaker-node run ...
        self.env_drop: tuple[str, ...] = ()

    def start(self, python: str | None = None, env: dict | None = None) -> None:
        log = open(self.log_path, "ab")
        root = Path(__file__).resolve().parents[2]
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        full_env["PYTHONPATH"] = str(root) + os.pathsep + full_env.get("PYTHONPATH", "")
        for name in self.env_drop:
            full_env.pop(name, None)
        argv = self.argv or [python or sys.executable, "-m", "node", "run", "--config", str(self.config)]
        # die_with_parent: a demo (or test) killed with SIGKILL leaves no node behind
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                     preexec_fn=die_with_parent)
        log.close()

    def terminate(self, timeout: float = 15) -> int | None:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def wait_stopped(self, timeout: float) -> int | None:
        """After SIGTERM: the exit code, or kill it when it does not stop within `timeout`."""
        if not self.proc:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def wav_dir(self) -> Path:
        return self.state_dir / "wav"


class DistrictInABox:
    def __init__(self, directory: str | Path, *, district: str = "demo"):
        self.dir = Path(directory).resolve()
        self.workspace = self.dir / "district"
        self.district = district
        self.nodes: dict[str, SimulatedNode] = {}
        self.broker: LocalBroker | None = None
        self.content: ContentServer | None = None
        self.collector = None  # provisioning.district.collector.CollectorDuty
        self.records_db = self.dir / "records.db"
        self.district_server = None  # provisioning.district.serve.DistrictServer (the time duty)
        # What a district's always-online server holds (`speaker-district serve-dir`): the time and
        # collector duties run from here, never from the workspace with the offline keys.
        self.serve_dir = self.dir / "serve"

    def create(self) -> None:
        init_workspace(self.workspace, district=self.district, force=True)
        shutil.rmtree(self.serve_dir, ignore_errors=True)   # the old export's keys are useless now
        export_serve_dir(self.workspace, self.serve_dir)

    def add_node(self, commune: str, district: str, province: str, cluster: int, **toml_kw) -> SimulatedNode:
        identity = NodeIdentity(commune=commune, district=district, province=province, cluster=cluster)
        nodes_root = self.dir / "nodes"
        node_dir, _ = create_node(self.workspace, identity, nodes_root, servers=["127.0.0.1:8883"], replace=True,
                                   allow_loopback=True)
        node = SimulatedNode(identity.node_id, identity.groups, node_dir, node_dir / "node-sim.toml",
                             node_dir / "state", toml_kw)
        self.nodes[identity.node_id] = node
        return node

    def start_broker(self, extra_conf: str = "") -> LocalBroker:
        """The shipped broker config (extra_conf: lines a benchmark appends, e.g. "set_tcp_nodelay false")."""
        self.broker = LocalBroker(self.workspace, self.dir / "broker",
                                  nodes={n.node_id: n.groups for n in self.nodes.values()}, extra_conf=extra_conf)
        self.broker.start()
        # No NTP flag: a simulated node has no NTP (nor does a fresh Debian: nothing may read the host's
        # /run/systemd/timesync/synchronized). Its clock is trusted once the district's time service
        # (start_district) answers its nonce, as on a pole.
        for node in self.nodes.values():
            node.config.write_text(simulated_node_toml(node.node_dir, node.node_id, node.groups,
                                                       [self.broker.address], state_dir=node.state_dir,
                                                       **node.toml_kw))
        return self.broker

    def start_district(self):
        """The district's long-running service as `speaker-district serve` runs it, from the online-only
        directory, with its time duty (signed answers to node nonces, docs/protocol.md §7a)."""
        from provisioning.district.serve import DistrictServer
        from provisioning.district.timeservice import TimeService

        self.district_server = DistrictServer([TimeService(self.serve_dir, self.broker.address,
                                                           identity=tls_identity(self.serve_dir))]).start()
        return self.district_server

    def start_collector(self):
        """The district's record collector (a `speaker-district serve` duty): stores what the nodes report
        in records.db and acknowledges it, so the nodes' outboxes empty."""
        from provisioning.district.collector import CollectorDuty

        self.collector = CollectorDuty(self.serve_dir, db=str(self.records_db), brokers=[self.broker.address],
                                       identity=tls_identity(self.serve_dir))
        self.collector.start()
        return self.collector

    def start_content_server(self) -> ContentServer:
        self.content = ContentServer(self.workspace, self.dir / "content").start()
        return self.content

    def start_nodes(self, python: str | None = None) -> None:
        for node in self.nodes.values():
            node.start(python)

    def stop(self, node_timeout: float = 15) -> dict[str, int | None]:
        for node in self.nodes.values():   # all at once: each takes a moment to go off air
            if node.proc and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        codes = {node_id: node.wait_stopped(node_timeout) for node_id, node in self.nodes.items()}
        if self.collector:  # after the nodes: their last events ("stopping") are stored too
            time.sleep(0.5)
            self.collector.stop()
            self.collector = None
        if self.district_server:
            self.district_server.stop()
            self.district_server = None
        if self.content:
            self.content.stop()
            self.content = None
        if self.broker:
            self.broker.stop()
            self.broker = None
        return codes
