"""Benchmark synchronised start: two simulated nodes of one commune play a command with start_at; how far
apart do their first samples come out?

    .venv/bin/python benchmarks/bench_sync_start.py            # 20 commands
    .venv/bin/python benchmarks/bench_sync_start.py --quick    # 3 commands (CI)

A DistrictInABox with two nodes of commune 27787 (`speaker-node run` child processes: MockFactory pins,
libVLC writing WAV, pty modem simulator), a real Mosquitto and the HTTPS content server. Both nodes are
told the wall clock is NTP-synchronised (clock.ntp_sync_file points at an existing file), as a field
node with 4G and NTP is; they share this machine's clock, so the spread measured is the node software's
(timer, player start), not NTP's. The clip is downloaded once first, so every timed command plays from
the cache. Each command: play to group c27787 with start_at = the next whole second + 5 s; the node
offers it so the amplifier warm-up ends at start_at and starts the player at that instant. This
process polls both nodes' WAV files (~1 ms) and takes the moment each first grows past its 44-byte
header as that node's first sample.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Subscriber,
    command_line,
    configure,
    first_growth,
    machine_line,
    median,
    ms,
    ntp_flag,
    tone_wav,
    verdict,
)

from provisioning.district.box import DistrictInABox  # noqa: E402
from provisioning.district.simulator import DistrictSimulator  # noqa: E402

GOAL_S = 0.020
LEAD_S = 5


def wait_records(sub: Subscriber, nodes: list[str], content_id: str, since: float, timeout: float) -> dict:
    got = {}
    deadline = time.monotonic() + timeout
    for node_id in nodes:
        seen = sub.wait_for(lambda s, n=node_id: s.t >= since and s.topic == f"spk/node/{n}/events"
                            and (s.obj or {}).get("kind") == "play" and s.obj.get("content_id") == content_id,
                            max(0.1, deadline - time.monotonic())) if node_id not in got else None
        got[node_id] = seen.obj
    return got


def seed_time_floor(state_dir: Path, floor: dt.datetime) -> None:
    """A node that had trusted time (NTP or signed) at `floor`. Cellular time is believed only within
    [floor, floor + 30 days] (node/trust/time_trust.py): with only the build date as its floor, a fresh
    node refuses it once the build is more than 30 days old - and then plays nothing."""
    from node.adapters.store import StateStore

    state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(state_dir / "state.db")
    try:
        store.put("birth", 1)           # a node that ran before: its state is continuous, not lost
        store.put("time_floor", floor.isoformat())
    finally:
        store.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_sync_start.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="synchronised commands (default 20, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="small counts for CI (< 60 s)")
    parser.add_argument("--clock", choices=("ntp", "cellular"), default="ntp",
                        help="what the nodes trust for wall time: NTP (default) or only the (simulated) "
                             "modem's network time")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 20)

    deltas: list[float] = []
    late: dict[str, list[float]] = {}
    missing = 0
    warmup = 0.3
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        tmp = Path(tmp)
        box = DistrictInABox(tmp)
        sub = sim = None
        try:
            box.create()
            nodes = [box.add_node("27787", "760", "75", 1), box.add_node("27787", "760", "75", 2)]
            broker = box.start_broker()
            content = box.start_content_server()
            flag = ntp_flag(tmp) if args.clock == "ntp" else tmp / "never-synchronized"
            for node in nodes:
                configure(node, [broker.address], warmup=warmup, tail=0.2, idle_hold=2, min_off=0.5,
                          modem=True, modem_poll=10, ntp_file=flag)
            if args.clock == "cellular":
                for node in nodes:
                    seed_time_floor(node.state_dir, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
            sub = Subscriber(box.workspace, broker.address, ["spk/node/+/status", "spk/node/+/events"])
            box.start_nodes()
            ids = [n.node_id for n in nodes]
            for node_id in ids:
                sub.wait_for(lambda s, n=node_id: s.topic == f"spk/node/{n}/status"
                             and (s.obj or {}).get("online") is True, 60)
            sim = DistrictSimulator(box.workspace, broker.address)
            clip = tone_wav(tmp / "bulletin.wav", 1.0)
            body = sim.play_body(clip, content.publish(clip), content_id="bench-sync")
            t = time.monotonic()
            sim.send("play", body, ["c27787"])  # download into both caches first
            wait_records(sub, ids, body["content_id"], t, 60)
            for _ in range(runs):
                now = time.time()
                start_at = math.ceil(now) + LEAD_S
                command = sim.command("play", dict(body, start_at=dt.datetime.fromtimestamp(
                    start_at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")), ["c27787"])
                envelope = sim.sign(command)
                first: dict[str, float | None] = {}
                stop = threading.Event()
                pollers = [threading.Thread(target=lambda n=n: first.__setitem__(n.node_id, first_growth(
                    n.wav_dir, command["id"], time.monotonic() + LEAD_S + 10, stop=stop)), daemon=True)
                    for n in nodes]
                for p in pollers:
                    p.start()
                t = time.monotonic()
                start_mono = t + (start_at - time.time())
                sim.send_envelope(envelope, ["c27787"])
                for p in pollers:
                    p.join(LEAD_S + 12)
                stop.set()
                if any(first.get(i) is None for i in ids):
                    missing += 1
                else:
                    deltas.append(abs(first[ids[0]] - first[ids[1]]))
                    for i in ids:
                        late.setdefault(i, []).append(first[i] - start_mono)
                wait_records(sub, ids, body["content_id"], t, 30)
        finally:
            if sim:
                sim.close()
            codes = box.stop()
            if sub:
                sub.close()

    print(f"### Synchronised start: two nodes, one start_at ({runs} commands)\n")
    print(f"`{command_line('bench_sync_start.py', argv)}` on {machine_line()}\n")
    trust = ("both nodes NTP-trusted, same machine clock" if args.clock == "ntp" else
             "no NTP: each node trusts only its modem simulator's network time (AT+CCLK), within 30 days of "
             "its time floor (seeded: trusted time one day ago)")
    print(f"Relay warm-up {ms(warmup, 0)}; start_at = next whole second + {LEAD_S} s; {trust}.\n")
    print("| measure | median | max | goal |")
    print("|---|---:|---:|---|")
    if deltas:
        print(f"| \\|Δ\\| first sample, node 1 vs node 2 | {ms(median(deltas))} | {ms(max(deltas))} | "
              f"±{ms(GOAL_S, 0)}: {verdict(max(deltas) <= GOAL_S)} |")
        for node_id, values in late.items():
            print(f"| {node_id}: first sample after start_at | {ms(median(values))} | {ms(max(values))} | |")
    print()
    print(f"- commands where a node produced no WAV output in time: {missing}")
    print(f"- node exit codes after SIGTERM: {codes}")
    return 0 if deltas and not missing else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
