"""Benchmark daemon start-up: process start -> retained "online" status seen by the district, import
time, and resident memory once connected and idle.

    .venv/bin/python benchmarks/bench_startup.py            # 20 starts
    .venv/bin/python benchmarks/bench_startup.py --quick    # 5 starts (CI)

A DistrictInABox (district workspace, real Mosquitto with mutual TLS and the per-node ACL) with one
simulated node exactly as the demo configures it (`speaker-node run` with MockFactory pins, WAV output,
pty modem simulator). Each run: time.monotonic() just before Popen of `python -m node run --config X`
until a district subscriber, connected the whole time, receives the node's status with online = true;
then SIGTERM and wait for exit 0. After the timed runs one more start measures VmRSS ~5 s after
online. Import time: `python -X importtime` of the modules the daemon loads, and the wall time of
`python -c "import ..."` minus `python -c pass`. Prints a markdown snippet for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    Subscriber,
    command_line,
    machine_line,
    median,
    ms,
    percentile,
    proc_status_kib,
    verdict,
)

from provisioning.district.box import DistrictInABox  # noqa: E402

# What `speaker-node run --simulate` imports by the time it is connected (node.wiring imports most of
# its parts lazily inside NodeApp).
DAEMON_MODULES = ("node.daemon, node.app, node.wiring, node.service.onair, node.service.health, "
                  "node.service.intake, node.playback.player, node.playback.relays, node.content.download, "
                  "node.content.cache, node.reporting.outbox, node.modem.simulator, node.modem.at, "
                  "gpiozero.pins.mock, vlc")
GOAL_START_S = 1.0
GOAL_RSS_MB = 45.0


def import_times(runs: int) -> tuple[float, float, list[tuple[str, float]]]:
    """(median wall s of the imports, total of -X importtime self times s, top packages by cumulative)."""
    env_cmd = [sys.executable]

    def wall(code: str) -> float:
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(env_cmd + ["-c", code], check=True, cwd=ROOT)
            samples.append(time.perf_counter() - t0)
        return median(samples)

    code = f"import {DAEMON_MODULES}"
    imports_wall = wall(code) - wall("pass")
    out = subprocess.run(env_cmd + ["-X", "importtime", "-c", code], check=True, cwd=ROOT,
                         capture_output=True, text=True).stderr
    total_us, top = 0, {}
    for line in out.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        total_us += int(self_us)
        root = name.strip().split(".")[0].lstrip("_")
        top[root] = top.get(root, 0) + int(self_us)  # self times, summed by top-level package
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[:6]
    return imports_wall, total_us / 1e6, [(name, us / 1e6) for name, us in ranked]


def rss_after(code: str) -> int:
    """VmRSS (KiB) of a fresh interpreter after running `code`."""
    probe = code + "\nprint(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, capture_output=True,
                         text=True).stdout
    return next(int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:"))


# Imported one group after another in a fresh interpreter: where the daemon's import memory goes.
RSS_GROUPS = [
    ("ssl", "import ssl"),
    ("sqlite3", "import sqlite3"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("cryptography (Ed25519, serialization)", "import cryptography.hazmat.primitives.asymmetric.ed25519, "
                                              "cryptography.hazmat.primitives.serialization"),
    ("cryptography.x509 (heartbeat cert_days_left)", "import cryptography.x509"),
    ("http.client + urllib", "import http.client, urllib.request"),
    ("gpiozero + MockFactory", "import gpiozero, gpiozero.pins.mock"),
    ("python-vlc (libvlc.so)", "import vlc"),
    ("node.* (the daemon's own modules)", f"import {DAEMON_MODULES}"),
]


def rss_by_group() -> list[tuple[str, int]]:
    code = "\n".join(["def rss():", "    return next(int(l.split()[1]) for l in open('/proc/self/status') "
                      "if l.startswith('VmRSS:'))", "print('base', rss())"]
                     + [f"{stmt}\nprint({name!r}, rss())" for name, stmt in RSS_GROUPS])
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True,
                         text=True).stdout.splitlines()
    values = [int(line.rsplit(" ", 1)[1]) for line in out]
    return [(name, values[i + 1] - values[i]) for i, (name, _) in enumerate(RSS_GROUPS)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_startup.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="timed starts (default 20, --quick 5)")
    parser.add_argument("--quick", action="store_true", help="small counts for CI (< 60 s)")
    args = parser.parse_args(argv)
    runs = args.runs or (5 if args.quick else 20)
    shown = argv if argv else []

    starts: list[float] = []
    exit_codes: list[int | None] = []
    rss = hwm = anon = filed = None
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        box = DistrictInABox(Path(tmp))
        sub = None
        try:
            box.create()
            node = box.add_node("27787", "760", "75", 1)
            broker = box.start_broker()
            status_topic = f"spk/node/{node.node_id}/status"
            sub = Subscriber(box.workspace, broker.address, [status_topic])
            for i in range(runs + 1):
                t0 = time.monotonic()
                node.start()
                seen = sub.wait_for(lambda s: s.topic == status_topic and (s.obj or {}).get("online") is True
                                    and s.t >= t0, timeout=60)
                if i < runs:
                    starts.append(seen.t - t0)
                else:  # the extra start: memory once connected and idle
                    time.sleep(5)
                    rss = proc_status_kib(node.proc.pid, "VmRSS")
                    hwm = proc_status_kib(node.proc.pid, "VmHWM")
                    anon = proc_status_kib(node.proc.pid, "RssAnon")
                    filed = proc_status_kib(node.proc.pid, "RssFile")
                exit_codes.append(node.terminate())
        finally:
            box.stop()
            if sub:
                sub.close()
    imports_wall, importtime_total, top = import_times(3 if args.quick else 5)
    rss_bare, rss_imports = rss_after("pass"), rss_after(f"import {DAEMON_MODULES}")
    groups = rss_by_group()

    p50 = median(starts)
    print(f"### Start-up: process start -> retained online status ({runs} starts)\n")
    print(f"`{command_line('bench_startup.py', shown)}` on {machine_line()}\n")
    print("| measure | value | goal |")
    print("|---|---:|---|")
    print(f"| start -> online status seen by the district, median | {p50 * 1000:.0f} ms | "
          f"<= {GOAL_START_S * 1000:.0f} ms: {verdict(p50 <= GOAL_START_S)} |")
    print(f"| start -> online status, min / max | {min(starts) * 1000:.0f} / {max(starts) * 1000:.0f} ms | |")
    print(f"| start -> online status, p90 | {percentile(starts, 90) * 1000:.0f} ms | |")
    print(f"| imports of the daemon's modules (wall, minus bare interpreter) | {ms(imports_wall, 0)} | |")
    print(f"| imports, sum of `-X importtime` self times | {importtime_total * 1000:.0f} ms | |")
    print(f"| VmRSS ~5 s after online (idle, connected) | {rss / 1024:.1f} MiB | <= {GOAL_RSS_MB:.0f} MB: "
          f"{verdict(rss / 1024 <= GOAL_RSS_MB)} |")
    print(f"| of which RssAnon (heap, private) / RssFile (mapped libraries, shared, clean) | "
          f"{anon / 1024:.1f} / {filed / 1024:.1f} MiB | |")
    print(f"| VmHWM (peak RSS) at that moment | {hwm / 1024:.1f} MiB | |")
    print(f"| VmRSS of a bare interpreter (`python -c pass`) | {rss_bare / 1024:.1f} MiB | |")
    print(f"| VmRSS after importing the daemon's modules, nothing started | {rss_imports / 1024:.1f} MiB | |")
    print()
    by_package = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in top)
    print(f"- import time by top-level package (sum of self times): {by_package}")
    print("- VmRSS added by each import, in this order: "
          + ", ".join(f"{name} +{kib / 1024:.1f} MiB" for name, kib in groups))
    clean = all(code == 0 for code in exit_codes)
    print(f"- every run stopped with SIGTERM -> exit 0: {'yes' if clean else f'NO {exit_codes}'}")
    return 0 if clean and len(starts) == runs else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
