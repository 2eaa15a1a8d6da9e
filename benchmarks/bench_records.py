"""Records stored per second (SQLite and PostgreSQL) and the collector's memory with a 200-node backlog.

    .venv/bin/python benchmarks/bench_records.py            # 200 nodes x 50 records, 3 store runs of 20,000
    .venv/bin/python benchmarks/bench_records.py --quick    # 20 nodes x 10 records, 1 store run of 2,000

1. Store only: `RecordStore.store_batch` with batches of 500 play records (what the collector's store
   thread does), SQLite (WAL, synchronous=FULL) and a private PostgreSQL 15 cluster (fsync on).
2. End to end: a real Mosquitto (shipped config and ACL) and the collector; N node identities (own
   certificates) each publish their backlog at once, as nodes do when the collector comes back; time
   from the first publish until every record is committed, and the collector's memory (Python heap
   peak by tracemalloc, and the process's peak RSS growth).
"""

from __future__ import annotations

import argparse
import json
import resource
import ssl
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402

from benchmarks.common import command_line, machine_line, median  # noqa: E402
from node.reporting.outbox import new_id  # noqa: E402
from provisioning import pki  # noqa: E402
from provisioning.district.collector import Collector  # noqa: E402
from provisioning.district.localbroker import LocalBroker, client_tls  # noqa: E402
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


def node_clients(ws: Path, broker: LocalBroker, nodes: list[str]) -> list[mqtt.Client]:
    ca_key, ca = pki.load_private_key(ws / "tls" / "ca.key"), pki.load_cert(ws / "tls" / "ca.crt")
    clients = []
    for node in nodes:
        d = ws / "nodes" / node
        key, cert = pki.issue_client_cert(ca_key, ca, node)
        pki.write_private_key(d / "node.key", key)
        pki.write_cert(d / "node.crt", cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(ws / "tls" / "ca.crt"))
        ctx.load_cert_chain(str(d / "node.crt"), str(d / "node.key"))
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=node, protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(0)
        c.connect(broker.host, broker.port, keepalive=60)
        c.loop_start()
        clients.append(c)
    return clients


def backlog_run(tmp: Path, n_nodes: int, per_node: int) -> dict:
    ws = tmp / "district"
    init_workspace(ws, district="bench")
    nodes = [f"{27000 + i}-01" for i in range(n_nodes)]
    broker = LocalBroker(ws, tmp / "broker", nodes={n: [f"c{n[:5]}"] for n in nodes}).start()
    clients: list[mqtt.Client] = []
    store = RecordStore(str(tmp / "records.db"))
    collector = None
    try:
        clients = node_clients(ws, broker, nodes)
        backlog = {node: [json.dumps(play_record(node, n)) for n in range(per_node)] for node in nodes}
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        collector = Collector(store, [broker.address], client_tls(ws, "district"),
                              Workspace.load(ws).key("collector"), client_id="district:bench").start()
        assert collector.wait_connected(20)
        time.sleep(0.5)  # SUBACK
        total = n_nodes * per_node
        start = time.perf_counter()

        def send(client, node):
            for payload in backlog[node]:
                client.publish(f"spk/node/{node}/events", payload, qos=1)

        threads = [threading.Thread(target=send, args=(c, n)) for c, n in zip(clients, nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 600
        while collector.stats.stored < total and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        return {"total": total, "stored": collector.stats.stored, "seconds": elapsed,
                "rate": collector.stats.stored / elapsed, "heap_peak_mb": heap_peak / 2**20,
                "rss_growth_mb": rss_growth / 1024, "acks": collector.stats.acks_sent,
                "dropped_by_broker": "Outgoing messages are being dropped" in broker.log_tail(500)}
    finally:
        if collector:
            collector.stop()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        store.close()
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
    print(f"| end to end, {n_nodes} nodes x {per_node} backlog -> Mosquitto -> collector -> SQLite | "
          f"{backlog['rate']:,.0f} records/s ({backlog['stored']}/{backlog['total']} in {backlog['seconds']:.1f} s) "
          f"| 1 |")
    print(f"| collector memory during that backlog | Python heap peak {backlog['heap_peak_mb']:.1f} MiB, "
          f"peak RSS growth {backlog['rss_growth_mb']:.1f} MiB | 1 |")
    print(f"\n{backlog['acks']} signed acknowledgements sent; broker dropped messages: "
          f"{backlog['dropped_by_broker']}; {machine_line()}")
    return 0 if backlog["stored"] == backlog["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
