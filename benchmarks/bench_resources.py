"""Benchmark the daemon's footprint: storage writes and CPU while idle, resident memory while playing.

    .venv/bin/python benchmarks/bench_resources.py            # 10-minute idle run, 10-minute clip
    .venv/bin/python benchmarks/bench_resources.py --quick    # 60 s idle run, 2-minute clip (CI)

A DistrictInABox with two simulated nodes at the default settings (keep-alive 60 s, full heartbeat
15 min, modem poll 60 s), side by side for the same idle window: node 1 with the pty modem simulator
(modem.port = "sim", which runs *inside* the daemon process: a thread answering AT commands, which a
real node does not have) and node 2 with modem.enabled = false. Both have their runtime directory on
tmpfs (/dev/shm), as /run/speaker-node is on a node, and NTP-trusted time. No commands while idle.

(a) storage writes: write_bytes of /proc/PID/io over the idle window (the daemon's stdout log goes to
    a file here; journald would take it on a node: its growth is shown and subtracted), per day;
(c) CPU: utime + stime from /proc/PID/stat over the idle window, as % of one core;
(b) then node 1 gets a signed play of a long WAV clip (downloaded over HTTPS first) and VmRSS is
    sampled every 20 ms until its play record arrives (libVLC in WAV mode decodes faster than real
    time, so the whole clip passes through the decoder in a few seconds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Subscriber,
    command_line,
    configure,
    machine_line,
    ntp_flag,
    proc_cpu_seconds,
    proc_io,
    proc_status_kib,
    tone_wav,
    verdict,
    wait_startup_link_event,
)

from provisioning.district.box import DistrictInABox  # noqa: E402
from provisioning.district.simulator import DistrictSimulator  # noqa: E402

DAY = 86400
GOAL_WRITES_MB_DAY = 1.0
GOAL_RSS_MB = 45.0
GOAL_CPU_PCT = 0.5


def sample(node) -> dict:
    pid = node.proc.pid
    return {"t": time.monotonic(), "io": proc_io(pid)["write_bytes"], "cpu": proc_cpu_seconds(pid),
            "log": node.log_path.stat().st_size if node.log_path.exists() else 0,
            "rss": proc_status_kib(pid, "VmRSS")}


def floor_save_bytes(runs: int = 20) -> int:
    """write_bytes of one floor-file save, the daemon's write every FLOOR_SAVE_S (median of runs);
    benchmarks/bench_floor_writes.py compares it with a state-store row and counts the journal too."""
    import datetime as dt
    import statistics

    from node.adapters.floorfile import FloorFile

    with tempfile.TemporaryDirectory(prefix="bench-floor-", dir=str(Path.home())) as tmp:
        floor_file = FloorFile(Path(tmp) / "time-floor")
        floor_file.save(dt.datetime.now(dt.timezone.utc))
        samples = []
        for i in range(runs):
            before = proc_io(os.getpid())["write_bytes"]
            floor_file.save(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=i + 1))
            samples.append(proc_io(os.getpid())["write_bytes"] - before)
    return int(statistics.median(samples))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_resources.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="idle window (default 600, --quick 60)")
    parser.add_argument("--clip", type=float, help="clip length in seconds (default 180, --quick 15)")
    parser.add_argument("--quick", action="store_true", help="small counts for CI")
    args = parser.parse_args(argv)
    window = args.seconds or (60 if args.quick else 600)
    clip_s = args.clip or (15 if args.quick else 180)
    modem_poll = 10 if args.quick else 60

    idle: dict[str, tuple[dict, dict]] = {}
    play = {}
    shm = Path(tempfile.mkdtemp(prefix="bench-resources-", dir="/dev/shm"))
    with tempfile.TemporaryDirectory(prefix="bench-resources-") as tmp:
        tmp = Path(tmp)
        box = DistrictInABox(tmp)
        sub = sim = None
        try:
            box.create()
            with_modem = box.add_node("27787", "760", "75", 1)
            without = box.add_node("27787", "760", "75", 2)
            broker = box.start_broker()
            content = box.start_content_server()
            flag = ntp_flag(tmp)
            for node, modem in ((with_modem, True), (without, False)):
                configure(node, [broker.address], modem=modem, modem_poll=modem_poll, ntp_file=flag,
                          runtime_dir=shm / node.node_id)
            sub = Subscriber(box.workspace, broker.address, ["spk/node/+/status", "spk/node/+/events"])
            started = time.monotonic()
            box.start_nodes()
            for node in (with_modem, without):
                sub.wait_for(lambda s, n=node.node_id: s.topic == f"spk/node/{n}/status"
                             and (s.obj or {}).get("online") is True, 60)
            wait_startup_link_event(sub, with_modem.node_id, started, modem_poll)
            time.sleep(5)  # past the outbox delivery of that event
            before = {n.node_id: sample(n) for n in (with_modem, without)}
            time.sleep(window)
            after = {n.node_id: sample(n) for n in (with_modem, without)}
            idle = {node_id: (before[node_id], after[node_id]) for node_id in before}

            sim = DistrictSimulator(box.workspace, broker.address)
            clip = tone_wav(tmp / "long.wav", clip_s)
            body = sim.play_body(clip, content.publish(clip), content_id="bench-long")
            pid = with_modem.proc.pid
            events_topic = f"spk/node/{with_modem.node_id}/events"
            t0 = time.monotonic()
            sim.send("play", body, [with_modem.node_id])
            peak, samples, peak_parts = 0, 0, (0, 0)
            while True:
                rss = proc_status_kib(pid, "VmRSS")
                if rss > peak:
                    peak, peak_parts = rss, (proc_status_kib(pid, "RssAnon"), proc_status_kib(pid, "RssFile"))
                samples += 1
                done = [s for s in sub.seen if s.t >= t0 and s.topic == events_topic
                        and (s.obj or {}).get("kind") == "play"]
                if done:
                    play = {"result": done[0].obj.get("result"), "seconds": done[0].obj.get("seconds")}
                    break
                if time.monotonic() - t0 > 120 + clip_s:
                    play = {"result": "no play record", "seconds": None}
                    break
                time.sleep(0.02)
            play.update(peak=peak, hwm=proc_status_kib(pid, "VmHWM"), samples=samples,
                        wall=time.monotonic() - t0, anon=peak_parts[0], file=peak_parts[1])
        finally:
            if sim:
                sim.close()
            codes = box.stop()
            if sub:
                sub.close()
            shutil.rmtree(shm, ignore_errors=True)

    print("### Resources: storage writes and CPU at idle, memory while playing\n")
    print(f"`{command_line('bench_resources.py', argv)}` on {machine_line()}\n")
    print(f"Idle window {window:.0f} s, defaults (keep-alive 60 s, full heartbeat 15 min) and modem poll "
          f"{modem_poll:.0f} s{' (scaled down from 60 s for CI)' if args.quick else ''}, runtime directory "
          "on tmpfs.\n")
    print("| node | write_bytes | of which stdout log | writes/day without log | CPU % of one core | "
          "VmRSS idle |")
    print("|---|---:|---:|---:|---:|---:|")
    results = {}
    for label, node in (("modem simulator in-process (`modem.port = \"sim\"`)", with_modem),
                        ("`modem.enabled = false`", without)):
        b, a = idle[node.node_id]
        seconds = a["t"] - b["t"]
        written, logged = a["io"] - b["io"], a["log"] - b["log"]
        per_day = max(0, written - logged) * DAY / seconds
        cpu = (a["cpu"] - b["cpu"]) / seconds * 100
        results[node.node_id] = (per_day, cpu)
        print(f"| {label} | {written:,} B | {logged:,} B | {per_day / 1e6:.3f} MB | {cpu:.3f} % | "
              f"{a['rss'] / 1024:.1f} MiB |")
    print()
    per_day, cpu = results[with_modem.node_id]
    real_per_day, real_cpu = results[without.node_id]
    from node.app import FLOOR_SAVE_S

    floor = floor_save_bytes()
    saves = 86400 / FLOOR_SAVE_S
    worst = max(per_day, real_per_day) + saves * floor
    print(f"- storage writes at idle, measured: {per_day / 1e6:.3f} MB/day with the simulator, "
          f"{real_per_day / 1e6:.3f} MB/day without")
    print(f"- the trusted-time floor saved every {FLOOR_SAVE_S / 60:.0f} min (floor file, one page "
          f"overwritten + fdatasync), measured in this process at {floor:,} B each -> "
          f"{saves * floor / 1e6:.3f} MB/day")
    print(f"- total at idle: {worst / 1e6:.3f} MB/day (goal <= {GOAL_WRITES_MB_DAY:.0f} MB/day: "
          f"{verdict(worst / 1e6 <= GOAL_WRITES_MB_DAY)})")
    print(f"- CPU at idle: {cpu:.3f} % with the in-process modem simulator, {real_cpu:.3f} % without; the "
          f"simulator's share is {cpu - real_cpu:+.3f} points (goal <= {GOAL_CPU_PCT} %: "
          f"{verdict(cpu <= GOAL_CPU_PCT)}; CPU time has a 10 ms tick, so "
          f"{1 / window * 100 * 0.01:.4f} % resolution over this window)")
    if play:
        print(f"- playing a {clip_s:.0f} s WAV clip (real libVLC, WAV output; download + decode took "
              f"{play['wall']:.1f} s, result {play['result']}, {play['seconds']} s on the play record): "
              f"peak VmRSS {play['peak'] / 1024:.1f} MiB (RssAnon {play['anon'] / 1024:.1f} + RssFile "
              f"{play['file'] / 1024:.1f}) over {play['samples']} samples, VmHWM "
              f"{play['hwm'] / 1024:.1f} MiB (goal <= {GOAL_RSS_MB:.0f} MB: "
              f"{verdict(play['hwm'] / 1024 <= GOAL_RSS_MB)})")
    print(f"- node exit codes: {codes}")
    return 0 if play.get("result") == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
