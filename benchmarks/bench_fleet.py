"""A whole district on one machine: N real node daemons on one Mosquitto, an emergency to all of them, a
synchronised start, a broker restart (the reconnect storm), and what each part costs.

    .venv/bin/python benchmarks/bench_fleet.py                   # N = 50, 100, 200 (≈ 15 min)
    .venv/bin/python benchmarks/bench_fleet.py --sizes 200       # one size
    .venv/bin/python benchmarks/bench_fleet.py --quick           # N = 5, 10 (CI)

Real parts for every node: its own certificate, `speaker-node run --simulate` as its own process
(MockFactory pins, WAV output through libVLC, no modem), the district's real Mosquitto with the shipped
configuration and per-node ACL, the district content server (mutual TLS) for the audio. Reconnect
backoff is the node's production setting (1 s .. 120 s, full jitter).

Measured per size:
  * start: time from the first Popen until 99 % / 100 % of nodes published their retained online status;
    node RSS (median, sum) and idle CPU (% of one core per node, over 20 s);
  * emergency to `all` (two signatures, audio downloaded by every node on demand): publish -> amplifier
    relay on (the node's urgent heartbeat delta, as the district receives it) and publish -> first
    decoded sample (its WAV file grows past the header; one polling thread, 5 ms resolution): p50, p99,
    max, share within 1 s;
  * synchronised `start_at` to all (audio already cached): spread of first samples across nodes;
  * broker restart: time until 99 % of nodes are online again, the peak connection rate the broker logged
    (connections per second), and whether every node's play record of the emergency arrived exactly once
    at a persistent district subscriber;
  * broker CPU seconds and RSS at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_records import COLLECTOR_PROCESS  # noqa: E402
from common import (  # noqa: E402
    Subscriber,
    command_line,
    machine_line,
    median,
    ntp_flag,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    tone_wav,
)

from provisioning.district.box import DistrictInABox, simulated_node_toml  # noqa: E402
from provisioning.district.records_store import RecordStore  # noqa: E402
from provisioning.district.simulator import DistrictSimulator  # noqa: E402

UTC = dt.timezone.utc
TOPICS = ["spk/node/+/status", "spk/node/+/events", "spk/node/+/delta"]


def communes(n: int):
    """n node identities: 12 clusters per commune, as in a real district."""
    for i in range(n):
        yield str(27700 + i // 12), "760", "75", i % 12 + 1


class WavWatcher:
    """One thread that notes, per node, when a WAV file whose name starts with `prefix` first grows."""

    def __init__(self, nodes, prefix: str, interval: float = 0.005):
        self.nodes, self.prefix, self.interval = nodes, prefix, interval
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        pending = {n.node_id: n.wav_dir for n in self.nodes}
        while pending and not self._stop.is_set():
            now = time.time()
            for node_id, d in list(pending.items()):
                try:
                    for path in d.glob(f"{self.prefix}*.wav"):
                        if path.stat().st_size > 44:
                            self.first[node_id] = now
                            del pending[node_id]
                            break
                except OSError:
                    pass
            time.sleep(self.interval)

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.first) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()


def stats(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {"n": len(samples), "p50": median(samples), "p99": percentile(samples, 99), "max": max(samples),
            "within_1s": sum(1 for s in samples if s <= 1.0) / len(samples)}


def online_nodes(sub: Subscriber, since: float) -> set[str]:
    return {s.topic.split("/")[2] for s in list(sub.seen)
            if s.t >= since and s.topic.endswith("/status") and (s.obj or {}).get("online") is True}


def wait_online(sub: Subscriber, node_ids: set[str], since: float, share: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    need = share * len(node_ids)
    while time.monotonic() < deadline:
        if len(online_nodes(sub, since) & node_ids) >= need:
            return time.monotonic() - since
        time.sleep(0.05)
    return None


def connection_rate(log_path: Path, since_wall: float) -> tuple[int, int]:
    """(connections logged after since_wall, peak per second) from Mosquitto's timestamped log."""
    per_second: Counter = Counter()
    pattern = re.compile(r"^(\d+): New client connected")
    for line in log_path.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if m and int(m.group(1)) >= int(since_wall):
            per_second[int(m.group(1))] += 1
    return sum(per_second.values()), max(per_second.values(), default=0)


def run_size(n: int, base: Path) -> dict:
    box = DistrictInABox(base / f"fleet-{n}", district="fleet")
    box.create()
    for commune, district, province, cluster in communes(n):
        box.add_node(commune, district, province, cluster)
    broker = box.start_broker()
    flag = ntp_flag(box.dir)
    for node in box.nodes.values():
        text = simulated_node_toml(node.node_dir, node.node_id, node.groups, [broker.address],
                                   state_dir=node.state_dir, modem=False, warmup=0.05, tail=0.2, idle_hold=1.0,
                                   min_off=0.2, reconnect_max=120.0, ntp_file=flag,
                                   await_signed=0)
        node.config.write_text(text.replace('reconnect_min = "0.2s"', 'reconnect_min = "1s"'))
    content = box.start_content_server()
    sub = sim = collector = None
    db = box.dir / "records.db"
    ids = set(box.nodes)
    result: dict = {"n": n}
    try:
        sub = Subscriber(box.workspace, broker.address, TOPICS, client_id=f"district:fleet-{os.getpid()}-{n}")
        collector = subprocess.Popen([sys.executable, "-c", COLLECTOR_PROCESS, str(box.serve_dir), str(db),
                                      broker.address], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        if collector.stdout.readline().strip() != "ready":
            raise RuntimeError("the collector did not start")
        sim = DistrictSimulator(box.workspace, broker.address)
        t0 = time.monotonic()
        box.start_nodes()
        result["online99_s"] = wait_online(sub, ids, t0, 0.99, 120 + n)
        result["online100_s"] = wait_online(sub, ids, t0, 1.0, 60)
        time.sleep(20)                                   # idle window: let start-up work settle
        pids = [node.proc.pid for node in box.nodes.values()]
        cpu0 = {p: proc_cpu_seconds(p) for p in pids}
        time.sleep(20)
        result["idle_cpu_pct"] = median([(proc_cpu_seconds(p) - cpu0[p]) / 20 * 100 for p in pids])
        rss = [proc_status_kib(p, "VmRSS") / 1024 for p in pids]
        result["rss_median_mb"], result["rss_sum_mb"] = median(rss), sum(rss)

        # 1. emergency to all, audio fetched on demand by every node
        audio = tone_wav(box.dir / "alarm.wav", 2.0)
        url = content.publish(audio)
        watcher = WavWatcher(box.nodes.values(), "")
        t_pub, t_pub_mono = time.time(), time.monotonic()
        sim.send("play", sim.play_body(audio, url, level="emergency"), ["all"],
                 keys=[sim.ws.key("emergency-a"), sim.ws.key("emergency-b")])
        watcher.wait(n, 60 + n / 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = [r for r in play_records_any(sub) if r.get("level") == "emergency"]
            if len({r["node"] for r in records}) >= n:
                break
            time.sleep(0.2)
        # Relay on: the node's urgent heartbeat delta that says so (published at once, QoS 0), as the
        # district receives it - so MQTT transit is included, as it is for a dashboard.
        relay_on = {}
        for seen in list(sub.seen):
            relays = (seen.obj or {}).get("relays") if seen.topic.endswith("/delta") else None
            node_id = seen.topic.split("/")[2]
            if seen.t >= t_pub_mono and relays and (relays.get("amp") or relays.get("amplifier")) \
                    and node_id not in relay_on:
                relay_on[node_id] = seen.t - t_pub_mono
        relay_on = list(relay_on.values())
        result["emergency_relay"] = stats(relay_on)
        result["emergency_sample"] = stats([t - t_pub for t in watcher.first.values()])
        emergency_ids = Counter(r["id"] for r in records)

        # 2. synchronised start_at, audio cached now
        start_at = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=10 + n // 20)
        for node in box.nodes.values():
            for wav in node.wav_dir.glob("*.wav"):
                wav.rename(wav.with_suffix(".done"))
        watcher = WavWatcher(box.nodes.values(), "")
        body = sim.play_body(audio, url, level="normal")
        body["start_at"] = start_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        sim.send("play", body, ["all"])
        watcher.wait(n, 40 + n / 2)
        firsts = list(watcher.first.values())
        result["sync_spread_ms"] = (max(firsts) - min(firsts)) * 1000 if firsts else None
        result["sync_vs_start_at_ms"] = median([(t - start_at.timestamp()) * 1000 for t in firsts]) \
            if firsts else None
        result["sync_started"] = len(firsts)

        # 3. broker restart: the reconnect storm
        wall_before = time.time()
        broker_cpu_before = proc_cpu_seconds(broker.proc.pid)
        result["broker_rss_before_mb"] = proc_status_kib(broker.proc.pid, "VmRSS") / 1024
        broker.stop()
        time.sleep(2)
        t_up = time.monotonic()
        broker.start()
        result["restart_online99_s"] = wait_online(sub, ids, t_up, 0.99, 180)
        result["restart_online100_s"] = wait_online(sub, ids, t_up, 1.0, 60)
        total, peak = connection_rate(broker.log_path, wall_before)
        result["reconnects"], result["peak_conn_per_s"] = total, peak
        time.sleep(3)
        records = [r for r in play_records_any(sub) if r.get("level") == "emergency"]
        per_node = Counter(r["node"] for r in {r["id"]: r for r in records}.values())
        result["emergency_records_nodes"] = len(per_node)
        result["emergency_records_dupe_ids"] = sum(c - 1 for c in Counter(r["id"] for r in records).values())
        result["emergency_records_first_delivery"] = len(emergency_ids)
        result["collector_rss_mb"] = proc_status_kib(collector.pid, "VmRSS") / 1024
        result["collector_cpu_s"] = proc_cpu_seconds(collector.pid)
        bpid = broker.proc.pid
        result["broker_cpu_s"] = broker_cpu_before + proc_cpu_seconds(bpid)
        result["broker_rss_mb"] = proc_status_kib(bpid, "VmRSS") / 1024
        return result
    finally:
        if sim:
            sim.close()
        if sub:
            sub.close()
        codes = box.stop()                       # nodes first: their last records reach the collector
        result["clean_stops"] = sum(1 for c in codes.values() if c == 0)
        if collector is not None:             # a start-up failure propagates; nothing to read then
            collector.send_signal(signal.SIGTERM)
            try:
                out, _ = collector.communicate(timeout=30)
                result["collector"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            except (subprocess.TimeoutExpired, ValueError):
                collector.kill()
                result["collector"] = {}
            store = RecordStore(str(db))
            try:
                rows = store.query("SELECT node, count(*) FROM records WHERE kind = 'play' AND level = 'emergency' "
                                   "GROUP BY node")
                result["db_emergency_nodes"] = sum(1 for _, c in rows if c == 1)
                result["db_emergency_dupes"] = sum(c - 1 for _, c in rows if c > 1)
                result["db_records"] = store.count()
            finally:
                store.close()


def play_records_any(sub: Subscriber) -> list[dict]:
    return [s.obj for s in list(sub.seen) if s.topic.endswith("/events") and (s.obj or {}).get("kind") == "play"]


def fmt(v, digits=2, unit=""):
    if v is None:
        return "timeout"
    return f"{v:.{digits}f}{unit}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,100,200")
    p.add_argument("--quick", action="store_true", help="N = 5, 10 (CI)")
    a = p.parse_args(argv)
    sizes = [5, 10] if a.quick else [int(x) for x in a.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bf-") as tmp:
        for n in sizes:
            print(f"fleet: N = {n} ...", file=sys.stderr, flush=True)
            results.append(run_size(n, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(f"\nCommand: `{command_line('bench_fleet.py', argv)}` — {machine_line()}\n")
    cols = [r["n"] for r in results]
    print("| measure | " + " | ".join(f"N = {n}" for n in cols) + " |")
    print("|---|" + "---|" * len(cols))

    def row(label, fn):
        print(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("start → 99 % online (s)", lambda r: fmt(r["online99_s"], 1))
    row("start → 100 % online (s)", lambda r: fmt(r["online100_s"], 1))
    row("node RSS, median (MB)", lambda r: fmt(r["rss_median_mb"], 1))
    row("node RSS, sum (MB)", lambda r: fmt(r["rss_sum_mb"], 0))
    row("node idle CPU, median (% of a core)", lambda r: fmt(r["idle_cpu_pct"], 3))
    for key, label in (("emergency_relay", "emergency → amplifier relay on"),
                       ("emergency_sample", "emergency → first decoded sample")):
        row(f"{label}: p50 / p99 / max (s)", lambda r, k=key: (
            f"{fmt(r[k].get('p50'))} / {fmt(r[k].get('p99'))} / {fmt(r[k].get('max'))}" if r[k]["n"] else "none"))
        row(f"{label}: nodes, share within 1 s", lambda r, k=key: (
            f"{r[k]['n']}, {r[k].get('within_1s', 0):.0%}" if r[k]["n"] else "0"))
    # Wall time of each node's first WAV write: in simulation that includes a new libVLC instance per play
    # (~110 ms CPU each, all nodes at once on 2 cores); the nodes seek so the *content* stays aligned to
    # start_at (bench_sync_start.py measures that alignment from the samples).
    row("synchronised start_at: first WAV write, spread across nodes (ms)", lambda r: fmt(r["sync_spread_ms"], 0))
    row("synchronised start_at: first WAV write, median after start_at (ms)",
        lambda r: fmt(r["sync_vs_start_at_ms"], 0))
    row("broker restart → 99 % online again (s)", lambda r: fmt(r["restart_online99_s"], 1))
    row("broker restart → 100 % online again (s)", lambda r: fmt(r["restart_online100_s"], 1))
    row("reconnections logged / peak per second", lambda r: f"{r['reconnects']} / {r['peak_conn_per_s']}")
    row("emergency play records: nodes with one / duplicate ids", lambda r: (
        f"{r['emergency_records_nodes']} / {r['emergency_records_dupe_ids']}"))
    row("district database: nodes with exactly one emergency record / extra copies", lambda r: (
        f"{r.get('db_emergency_nodes')} / {r.get('db_emergency_dupes')}"))
    row("district database: records stored (all kinds) / collector duplicates dropped", lambda r: (
        f"{r.get('db_records')} / {(r.get('collector') or {}).get('duplicates')}"))
    row("collector RSS (MB) / CPU (s, whole run)", lambda r: (
        f"{fmt(r.get('collector_rss_mb'), 1)} / {fmt(r.get('collector_cpu_s'), 1)}"))
    row("broker CPU (s, whole run) / RSS before restart (MB)",
        lambda r: f"{fmt(r['broker_cpu_s'], 1)} / {fmt(r['broker_rss_before_mb'], 1)}")
    row("clean stops (exit 0)", lambda r: f"{r['clean_stops']}/{r['n']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
