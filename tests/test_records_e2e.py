"""Every play record and event reaches the district's database exactly once, proved with real daemons:
three `speaker-node run` processes playing signed bulletins through libVLC, real Mosquitto brokers
with the shipped config and ACL, and the collector writing to SQLite. The faults of issue #14: the
collector down while nodes play, the broker killed with kill -9 mid-stream, the broker's queue forced
small, a failover and a fail-back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support import NODES, NodeProcess, wait_until, write_node_config

from provisioning.district.collector import Collector
from provisioning.district.content_server import ContentServer
from provisioning.district.localbroker import LocalBroker, client_tls
from provisioning.district.records_store import RecordStore
from provisioning.district.simulator import DistrictSimulator
from provisioning.district.workspace import Workspace

FAST_RESEND = {"resend_after": 1.0, "resend_max": 3.0}


def tone(path: Path, seconds: float = 0.4, rate: int = 16000) -> Path:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


class District:
    """The district side of one test: brokers, content server, signer, collector (started on demand)."""

    def __init__(self, ws: Path, tmp: Path, brokers: list[LocalBroker], python: str, **node_kw):
        self.ws, self.tmp, self.brokers, self.python = ws, tmp, brokers, python
        self.content = ContentServer(ws, tmp / "content").start()
        self.db_path = tmp / "records.db"
        self.collector: Collector | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.node_kw = {**FAST_RESEND, **node_kw}
        self.sent: list[str] = []

    def start_nodes(self):
        for node_id in NODES:
            cfg = write_node_config(self.tmp / f"{node_id}.toml", self.ws, node_id,
                                    [b.address for b in self.brokers], state_dir=self.tmp / f"state-{node_id}",
                                    **self.node_kw)
            self.nodes[node_id] = NodeProcess(cfg, self.python)
        for node_id in NODES:
            wait_until(lambda: self.connected(node_id), timeout=30)

    def connected(self, node_id, server: str | None = None) -> bool:
        log = self.nodes[node_id].log_path.read_text(errors="replace")
        return ("connected to" in log) if server is None else (f"connected to {server}" in log)

    def start_collector(self, store: RecordStore | None = None) -> Collector:
        ws = Workspace.load(self.ws)
        self.store = store or RecordStore(str(self.db_path))
        self.collector = Collector(self.store, [b.address for b in self.brokers], client_tls(self.ws, "district"),
                                   ws.key("collector")).start()
        assert self.collector.wait_connected(15)  # subscribed: SUBACK received
        return self.collector

    def stop_collector(self):
        if self.collector:
            self.collector.stop()
            self.collector = None
            self.store.close()

    def play(self, n: int, broker: LocalBroker | None = None):
        """n bulletins to every node (group 'all'), each its own content id."""
        sim = DistrictSimulator(self.ws, (broker or self.brokers[0]).address,
                                identity="district")
        try:
            for _ in range(n):
                index = len(self.sent)
                audio = tone(self.tmp / f"ban-tin-{index}.wav")
                content_id = f"ban-tin-{index}"
                body = sim.play_body(audio, self.content.publish(audio), content_id=content_id,
                                     title=f"Bản tin số {index}")
                sim.send("play", body, ["all"])
                self.sent.append(content_id)
        finally:
            sim.close()

    def wavs(self, node_id: str) -> int:
        return len(list((self.tmp / f"state-{node_id}" / "wav").glob("*.wav")))

    def wait_played(self, total: int, timeout: float = 60):
        wait_until(lambda: all(self.wavs(n) >= total for n in NODES), timeout=timeout, interval=0.2)

    def outbox_rows(self, node_id: str) -> int:
        db = sqlite3.connect(self.tmp / f"state-{node_id}" / "outbox.db", timeout=10)
        try:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            db.close()

    def outbox_plays(self, node_id: str, min_attempts: int = 0) -> int:
        """Play rows the node still holds that the broker took at least min_attempts times."""
        db = sqlite3.connect(self.tmp / f"state-{node_id}" / "outbox.db", timeout=10)
        try:
            return db.execute("SELECT count(*) FROM outbox WHERE kind = 'play' AND attempts >= ?",
                              (min_attempts,)).fetchone()[0]
        finally:
            db.close()

    def link_downs(self, node_id: str) -> int:
        return self.nodes[node_id].log().count("broker link down")

    def db_plays(self) -> list[tuple[str, str]]:
        db = sqlite3.connect(self.db_path, timeout=10)
        try:
            return db.execute("SELECT node, content_id FROM records WHERE kind = 'play' ORDER BY node, content_id"
                              ).fetchall()
        finally:
            db.close()

    def assert_everything_stored_exactly_once(self, timeout: float = 60):
        """Each bulletin once per node in the database, and every outbox empty: the nodes hold nothing
        the district has not confirmed (events included: `started`, `accepted`...)."""
        expected = sorted((node, cid) for node in NODES for cid in self.sent)
        wait_until(lambda: self.db_plays() == expected and all(self.outbox_rows(n) == 0 for n in NODES),
                   timeout=timeout, interval=0.3)
        db = sqlite3.connect(self.db_path)
        try:
            ids = [r[0] for r in db.execute("SELECT id FROM records")]
            assert len(ids) == len(set(ids))
            for node in NODES:  # each node's start and every accepted command are there as events
                accepted = db.execute("SELECT count(*) FROM records WHERE node = ? AND type = 'accepted'",
                                      (node,)).fetchone()[0]
                assert accepted == len(self.sent)
                assert db.execute("SELECT count(*) FROM records WHERE node = ? AND type = 'started'",
                                  (node,)).fetchone()[0] >= 1
            titles = {r[0] for r in db.execute("SELECT title FROM records WHERE kind = 'play'")}
            assert titles == {f"Bản tin số {i}" for i in range(len(self.sent))}
        finally:
            db.close()

    def close(self):
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.terminate()
        self.stop_collector()
        self.content.stop()
        for b in self.brokers:
            b.stop()


@pytest.fixture
def make_district(district_ws, tmp_path, python_exe):
    made = []

    def make(brokers, **node_kw):
        d = District(district_ws, tmp_path, brokers, python_exe, **node_kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def broker_in(ws, tmp_path, name, **kw):
    return LocalBroker(ws, tmp_path / name, nodes=NODES, **kw).start()


def test_records_survive_the_collector_being_down_while_nodes_play(district_ws, tmp_path, make_district):
    district = make_district([broker_in(district_ws, tmp_path, "broker")])
    district.start_nodes()
    district.play(3)
    district.wait_played(3)
    # PUBACKed, then re-sent (resend_after 1 s): nobody stored them, so the nodes keep them
    wait_until(lambda: all(district.outbox_plays(n, min_attempts=2) == 3 for n in NODES), timeout=30)
    assert all(district.outbox_plays(n) == 3 for n in NODES)
    district.start_collector()
    district.assert_everything_stored_exactly_once()


def test_records_survive_broker_kill_mid_stream(district_ws, tmp_path, make_district):
    broker = broker_in(district_ws, tmp_path, "broker")
    district = make_district([broker])
    district.start_collector()
    district.stop_collector()  # a persistent session now waits on the broker, in memory until autosave
    district.start_nodes()
    district.play(3)
    wait_until(lambda: all(district.wavs(n) >= 2 for n in NODES), timeout=60, interval=0.1)
    downs = {n: district.link_downs(n) for n in NODES}
    broker.kill9()  # kill -9 mid-stream: the collector's queued records die with it
    wait_until(lambda: all(district.link_downs(n) > downs[n] for n in NODES), timeout=30)  # every node saw it
    broker.start()  # same port, same persistence (as of its last autosave)
    district.wait_played(3)
    district.start_collector()
    district.assert_everything_stored_exactly_once()


def test_records_survive_a_broker_queue_forced_small(district_ws, tmp_path, make_district):
    broker = broker_in(district_ws, tmp_path, "broker", max_queued=2)
    district = make_district([broker])
    district.start_collector()
    district.stop_collector()
    district.start_nodes()
    district.play(4)
    district.wait_played(4)
    # the broker did drop some (it logs the drop when it happens)
    wait_until(lambda: "Outgoing messages are being dropped" in broker.log_tail(200), timeout=30)
    district.start_collector()
    district.assert_everything_stored_exactly_once()


def test_records_survive_failover_and_fail_back(district_ws, tmp_path, make_district):
    home = broker_in(district_ws, tmp_path, "home")
    spare = broker_in(district_ws, tmp_path, "spare")
    district = make_district([home, spare], failback_interval=2.0)
    district.start_collector()  # reads both brokers all the time
    district.start_nodes()
    assert all(district.connected(n, home.address) for n in NODES)
    district.play(1, home)
    district.wait_played(1)
    home.stop()  # the home broker goes away: the nodes fail over to the spare
    wait_until(lambda: all(district.connected(n, spare.address) for n in NODES), timeout=30)
    district.play(2, spare)
    district.wait_played(3)
    logs_before = {n: district.nodes[n].log_path.read_text(errors="replace").count(f"connected to {home.address}")
                   for n in NODES}
    home.start()  # it is back: every node returns to it (jittered), the collector reads both meanwhile
    wait_until(lambda: all(district.nodes[n].log_path.read_text(errors="replace")
                           .count(f"connected to {home.address}") > logs_before[n] for n in NODES), timeout=30)
    district.play(1, home)
    district.wait_played(4)
    district.assert_everything_stored_exactly_once()
    brokers_used = {r[0] for r in sqlite3.connect(district.db_path).execute("SELECT DISTINCT broker FROM records")}
    assert brokers_used == {home.address, spare.address}
