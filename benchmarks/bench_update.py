"""Benchmark a signed software update end to end: release size, bytes on the wire, time from the update
command to `update_committed`, and what the download costs over a 4G link.

    .venv/bin/python benchmarks/bench_update.py            # 3 updates
    .venv/bin/python benchmarks/bench_update.py --quick    # 1 update (CI)

Real parts: a district workspace and a real Mosquitto with the shipped config and ACL, this project built
twice as real wheels (the running version and the next one) beside this machine's dependency wheels,
`speaker-district release`, the district content server behind a byte-counting TCP proxy (so the count
includes TLS and HTTP overhead), and the real daemon running from releases/OLD/venv, which installs
releases/NEW beside itself, re-executes through the guard and commits after its health check.
The 4G cost is computed from the measured wire bytes at two stated link rates (no radio here).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import ByteCountingProxy, command_line, machine_line, median  # noqa: E402
from support import district_probe, make_tls_workspace, write_node_config  # noqa: E402

from node import __version__ as OLD  # noqa: E402
from node.update.tree import ReleaseTree  # noqa: E402
from provisioning.district.content_server import ContentServer  # noqa: E402
from provisioning.district.devrelease import build_wheelhouses  # noqa: E402
from provisioning.district.localbroker import LocalBroker  # noqa: E402
from provisioning.district.release import main as release_main  # noqa: E402
from provisioning.district.simulator import DistrictSimulator  # noqa: E402

NODE = "27787-02"
NEW = ".".join(OLD.split(".")[:-1] + [str(int(OLD.split(".")[-1]) + 1)])
LINKS_MBIT = {"rural 4G, 2 Mbit/s": 2.0, "typical 4G, 10 Mbit/s": 10.0}


def event(watcher, kind, timeout):
    return watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/events" and o and o.get("type") == kind,
                            timeout=timeout)


def one_update(base: Path, ws: Path, broker, wheels: dict, run: int) -> dict:
    work = base / f"run-{run}"
    tree = ReleaseTree(work / "opt")
    tree.install(OLD, wheels[OLD], "speaker-node")
    tree.point("current", OLD)
    tree.point("committed", OLD)
    cfg = write_node_config(work / "node.toml", ws, NODE, [broker.address], state_dir=work / "state",
                            extra="[update]\nhealth_deadline = 60\nquiet_before_slot = 0\n")
    served = work / "served"
    release_dir = served / NEW
    assert release_main([str(ws), str(wheels[NEW]), "--version", NEW, "-o", str(release_dir), "--arch", "x86_64",
                         "--arch", "arm64", "--python", f"{sys.version_info.major}.{sys.version_info.minor}"]) == 0
    release_bytes = sum(p.stat().st_size for p in release_dir.glob("*.whl"))
    content = ContentServer(ws, served).start()
    proxy = ByteCountingProxy(f"127.0.0.1:{content.port}")
    sim = DistrictSimulator(ws, broker.address)
    watcher = district_probe(broker, ws, client_id=f"bench-upd-{os.getpid()}-{run}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = open(work / "node.log", "ab")
    proc = subprocess.Popen([str(tree.executable("current")), "run", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        watcher.wait_for(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online"), timeout=60)
        body = {"release": (release_dir / "release.json").read_text(),
                "files_url": f"https://{proxy.address}/{NEW}/"}
        t0 = time.monotonic()
        sim.send("update", body, [NODE], keys=[sim.ws.key("release-a"), sim.ws.key("release-b")])
        event(watcher, "update_installed", 300)
        t_installed = time.monotonic() - t0
        event(watcher, "update_committed", 300)
        t_committed = time.monotonic() - t0
        return {"release_bytes": release_bytes, "wire_down": proxy.bytes["down"], "wire_up": proxy.bytes["up"],
                "installed_s": t_installed, "committed_s": t_committed,
                "command_bytes": len((release_dir / "release.json").read_bytes())}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        watcher.close()
        sim.close()
        proxy.close()
        content.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one update (CI)")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    runs = 1 if a.quick else a.runs
    with tempfile.TemporaryDirectory(prefix="bu-") as tmp:
        base = Path(tmp)
        ws = make_tls_workspace(base / "ws")
        broker = LocalBroker(ws, base / "broker", nodes={NODE: ["c27787", "d760", "p75"]})
        broker.start()
        try:
            wheels = build_wheelhouses(base / "wheels", {OLD: None, NEW: None})
            results = [one_update(base, ws, broker, wheels, i) for i in range(runs)]
        finally:
            broker.stop()
    r0 = results[0]
    wire = median([r["wire_down"] + r["wire_up"] for r in results])
    print(f"\nCommand: `{command_line('bench_update.py', argv)}` — {machine_line()}, {runs} update(s)\n")
    print("| measure | median |")
    print("|---|---|")
    print(f"| release size (wheels for this platform) | {r0['release_bytes'] / 1e6:.2f} MB |")
    print(f"| release.json embedded in the update command | {r0['command_bytes']} bytes |")
    print(f"| bytes on the wire for the download (TLS + HTTP, both ways) | {wire / 1e6:.2f} MB |")
    print(f"| wire / release bytes | {wire / r0['release_bytes']:.3f} |")
    print(f"| update command -> update_installed | {median([r['installed_s'] for r in results]):.1f} s |")
    print(f"| update command -> update_committed (restart + health check) | "
          f"{median([r['committed_s'] for r in results]):.1f} s |")
    for label, mbit in LINKS_MBIT.items():
        print(f"| download time over {label} (computed) | {wire * 8 / (mbit * 1e6):.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
