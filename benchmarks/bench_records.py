"""Records stored per second (SQLite and PostgreSQL) and the collector's memory with a 200-node backlog.

    .venv/bin/python benchmarks/bench_records.py            # 200 nodes x 50 records, 3 store runs of 20,000
    .venv/bin/python benchmarks/bench_records.py --quick    # 20 nodes x 10 records, 1 store run of 2,000

1. Store only: `RecordStore.store_batch` with batches of 500 play records (what the collector's store
   thread does), SQLite (WAL, synchronous=FULL) and a private PostgreSQL 15 cluster (fsync on).
2. End to end: a real Mosquitto (shipped config and ACL, max_queued_messages 1000) and the collector in
   its own process; N simulated nodes (own certificates, the real Outbox and OutboxPump, signed
   acknowledgements verified the node's way) release their backlog at once, as nodes do when the
   collector comes back; time until every outbox is empty (each record stored exactly once), and the
   collector process's resident memory (idle, and peak during the backlog).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402

from benchmarks.common import command_line, machine_line, median  # noqa: E402
from node.reporting.outbox import new_id  # noqa: E402
from provisioning import pki  # noqa: E402
from provisioning.district.localbroker import LocalBroker  # noqa: E402
from provisioning.district.records_store import Incoming, RecordStore  # noqa: E402
from provisioning.district.workspace import Workspace, init_workspace  # noqa: E402


def play_record(node: str, n: int) -> dict:
    now = time.time()
    return {"v": 1, "id": new_id(now), "node": node, "ts": int(now), "kind": "play", "content_id": f"ban-tin-{n % 7}",
            "sha256": "ab" * 32, "level": "normal", "source": "schedule", "command_id": None, "slot_id": "sang",
            "scheduled_at": now, "started_at": now, "ended_at": now + 120, "seconds": 120.0, "result": "completed",
            "volume": 80, "relays": [[now - 0.3, "amp", True], [now + 120.2, "amp", False]], "reason": None,
            "title": "Bản tin sáng"}


def store_rate(url: str, total: int, batch: int = 500) -> float:
    store = RecordStore(url)
    try:
        messages = []
        for n in range(total):
            record = play_record(f"{27000 + n % 200}-01", n)
            messages.append(Incoming("play", record["node"], "b", time.time(), record, json.dumps(record)))
        start = time.perf_counter()
        for i in range(0, total, batch):
            store.store_batch(messages[i:i + batch])
        return total / (time.perf_counter() - start)
    finally:
        store.close()


COLLECTOR_PROCESS = """
import json, signal, sys, threading
from provisioning.district.collector import CollectorDuty
from provisioning.district.serve_dir import tls_identity
# a serve-dir (bench_fleet: the box's export) connects as district-serve, a workspace as district
duty = CollectorDuty(sys.argv[1], db=sys.argv[2], brokers=[sys.argv[3]], identity=tls_identity(sys.argv[1]))
duty.start()
duty.collector.wait_connected(20)
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
stats = duty.collector.stats
duty.stop()
print(json.dumps({"stored": stats.stored, "duplicates": stats.duplicates, "acks": stats.acks_sent}), flush=True)
"""


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class SimulatedOutboxNode:
    """A node reduced to what the backlog needs: its real Outbox and OutboxPump, its own certificate, and
    acknowledgements verified the node's way. Used from the driver thread only (callbacks only queue)."""

    def __init__(self, node: str, ws: Path, broker: LocalBroker, tmp: Path, events, records: int):
        from node.reporting.outbox import Outbox, OutboxPump

        ca_key, ca = pki.load_private_key(ws / "tls" / "ca.key"), pki.load_cert(ws / "tls" / "ca.crt")
        d = ws / "nodes" / node
        key, cert = pki.issue_client_cert(ca_key, ca, node)
        pki.write_private_key(d / "node.key", key)
        pki.write_cert(d / "node.crt", cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(ws / "tls" / "ca.crt"))
        ctx.load_cert_chain(str(d / "node.crt"), str(d / "node.key"))
        self.node = node
        self.outbox = Outbox(tmp / f"{node}.db", node_id=node, resend_after=RESEND_AFTER, resend_max=RESEND_MAX)
        for n in range(records):
            self.outbox.add("play", play_record(node, n))
        self.published = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=node, protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(f"spk/node/{node}/ack", 1), events.put(("up", self)))
        c.on_disconnect = lambda cl, u, f, rc, p: events.put(("down", self))
        c.on_publish = lambda cl, u, mid, rc, p: events.put(("puback", self, mid, not rc.is_failure))
        c.on_message = lambda cl, u, msg: events.put(("ack", self, bytes(msg.payload)))
        self.client = c
        self.pump = OutboxPump(self.outbox, self._publish)
        c.connect(broker.host, broker.port, keepalive=60)
        c.loop_start()

    def _publish(self, payload: bytes):
        info = self.client.publish(f"spk/node/{self.node}/events", payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        self.published += 1
        return info.mid

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()


RESEND_AFTER, RESEND_MAX = 2.0, 8.0  # the node defaults are 60 s / 1 h: scaled down so the run takes a minute


NODES_PER_WORKER = 60  # paho waits in select(): one process must stay below 1024 file descriptors


def drive(sims: list[SimulatedOutboxNode], events, trust, deadline: float) -> tuple[int, int]:
    """The nodes' loop for a slice of nodes: PUBACKs, acknowledgements, pumping (re-sends fall due)."""
    import queue

    from node.trust.ack import verify_ack

    reconnects = -len(sims)  # the first CONNACK of each is not a reconnect
    remaining = {sim.node: sim for sim in sims}
    last_pump = 0.0
    while remaining and time.monotonic() < deadline:
        try:
            while True:
                ev = events.get(timeout=0.02)
                sim = ev[1]
                if ev[0] == "up":  # every CONNACK, as the node does: re-queue what was in flight
                    sim.pump.on_connect()
                    reconnects += 1
                elif ev[0] == "down":
                    sim.pump.on_disconnect()
                elif ev[0] == "puback":
                    sim.pump.on_puback(ev[2], ev[3])
                elif ev[0] == "ack":
                    sim.pump.on_district_ack(verify_ack(ev[2], trust, sim.node))
                    if sim.outbox.count() == 0:
                        remaining.pop(sim.node, None)
                if events.empty():
                    break
        except queue.Empty:
            pass
        if time.monotonic() - last_pump > 0.05:
            last_pump = time.monotonic()
            for sim in list(remaining.values()):
                sim.pump.flush()
                sim.pump.pump()
    return reconnects, len(remaining)


def node_worker(nodes, ws, host, port, tmp, per_node, ready, go, results, deadline_s):
    import queue

    broker = type("B", (), {"host": host, "port": port})()
    events: queue.Queue = queue.Queue()
    sims = [SimulatedOutboxNode(node, ws, broker, tmp, events, per_node) for node in nodes]
    ready.put(len(sims))
    go.wait()
    reconnects, unfinished = drive(sims, events, Workspace.load(ws).trust, time.monotonic() + deadline_s)
    results.put({"published": sum(s.published for s in sims), "reconnects": reconnects, "unfinished": unfinished,
                 "refused": sum(s.pump.refused for s in sims)})
    for sim in sims:
        sim.close()


def backlog_run(tmp: Path, n_nodes: int, per_node: int) -> dict:
    import multiprocessing
    import subprocess

    ws = tmp / "district"
    init_workspace(ws, district="bench")
    nodes = [f"{27000 + i}-01" for i in range(n_nodes)]
    broker = LocalBroker(ws, tmp / "broker", nodes={n: [f"c{n[:5]}"] for n in nodes}).start()
    ctx = multiprocessing.get_context("fork")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline_s = float(os.environ.get("BENCH_RECORDS_DEADLINE", "900"))
    workers = []
    proc = None
    try:
        for i in range(0, n_nodes, NODES_PER_WORKER):  # the backlog: committed in each node's outbox
            w = ctx.Process(target=node_worker, args=(nodes[i:i + NODES_PER_WORKER], ws, broker.host, broker.port,
                                                       tmp, per_node, ready, go, results, deadline_s))
            w.start()
            workers.append(w)
        for _ in workers:
            ready.get(timeout=300)
        db = str(tmp / "records.db")
        proc = subprocess.Popen([sys.executable, "-c", COLLECTOR_PROCESS, str(ws), db, broker.address],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout.readline().strip() == "ready"
        rss_idle = rss_peak = proc_status_kb(proc.pid, "VmRSS")
        total = n_nodes * per_node
        start = time.perf_counter()
        go.set()
        parts = []
        while len(parts) < len(workers):
            try:
                parts.append(results.get(timeout=0.1))
            except Exception:  # noqa: BLE001 - queue.Empty: sample memory meanwhile
                rss_peak = max(rss_peak, proc_status_kb(proc.pid, "VmRSS"))
        elapsed = time.perf_counter() - start
        hwm = proc_status_kb(proc.pid, "VmHWM")
        proc.terminate()
        stats = json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])
        proc = None
        store = RecordStore(db)
        stored = store.count()
        distinct = store.query("SELECT count(DISTINCT id) FROM records")[0][0]
        store.close()
        return {"total": total, "stored": stored, "distinct": distinct, "seconds": elapsed, "rate": stored / elapsed,
                "published": sum(p["published"] for p in parts), "duplicates": stats["duplicates"],
                "acks": stats["acks"], "rss_idle_mb": rss_idle / 1024, "rss_peak_mb": max(rss_peak, hwm) / 1024,
                "dropped_by_broker": "Outgoing messages are being dropped" in broker.log_tail(5000),
                "unfinished": sum(p["unfinished"] for p in parts), "reconnects": sum(p["reconnects"] for p in parts),
                "refused": sum(p["refused"] for p in parts), "stuck_inflight": 0}
    finally:
        if proc:
            proc.kill()
            proc.wait(10)
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
        broker.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--per-node", type=int)
    args = parser.parse_args(argv)
    n_nodes = args.nodes or (20 if args.quick else 200)
    per_node = args.per_node or (10 if args.quick else 50)
    runs, total = (1, 2000) if args.quick else (3, 20000)
    from pg_server import PgServer

    print(f"command: {command_line('bench_records.py', argv)}")
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp_dir:
        tmp = Path(tmp_dir)
        sqlite_rates = [store_rate(str(tmp / f"store-{i}.db"), total) for i in range(runs)]
        pg = PgServer().start()
        try:
            pg_rates = [store_rate(pg.new_database(), total) for _ in range(runs)]
        finally:
            pg.stop()
        backlog = backlog_run(tmp, n_nodes, per_node)
    print()
    print("| what | median | runs |")
    print("|---|---|---|")
    print(f"| store_batch, SQLite WAL synchronous=FULL, batches of 500 | {median(sqlite_rates):,.0f} records/s | "
          f"{', '.join(f'{r:,.0f}' for r in sqlite_rates)} |")
    print(f"| store_batch, PostgreSQL 15 (fsync on), batches of 500 | {median(pg_rates):,.0f} records/s | "
          f"{', '.join(f'{r:,.0f}' for r in pg_rates)} |")
    print(f"| end to end: {n_nodes} nodes' outboxes ({per_node} records each) -> Mosquitto (shipped config) -> "
          f"collector -> SQLite, until every outbox is empty | {backlog['rate']:,.0f} records/s "
          f"({backlog['stored']} stored, {backlog['distinct']} distinct, of {backlog['total']}, in "
          f"{backlog['seconds']:.1f} s) | 1 |")
    print(f"| collector process memory during that backlog | RSS {backlog['rss_idle_mb']:.1f} MiB connected and idle, "
          f"peak {backlog['rss_peak_mb']:.1f} MiB | 1 |")
    print(f"\n{backlog['published']} publishes for {backlog['total']} records (re-sends: the broker dropped the "
          f"collector queue's overflow: {backlog['dropped_by_broker']}); {backlog['duplicates']} duplicates "
          f"de-duplicated; {backlog['acks']} signed acknowledgements; {backlog['reconnects']} node reconnects; "
          f"re-send {RESEND_AFTER:g}-{RESEND_MAX:g} s; "
          f"{machine_line()}")
    if backlog["unfinished"]:
        print(f"UNFINISHED: {backlog['unfinished']} nodes; PUBACKs refused {backlog['refused']}, "
              f"still in flight {backlog['stuck_inflight']}")
    return 0 if backlog["stored"] == backlog["distinct"] == backlog["total"] and not backlog["unfinished"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
