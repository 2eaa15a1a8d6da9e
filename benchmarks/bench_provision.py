"""Provision one node into a Raspberry Pi OS-like image: node new (key + certificate) and sdcard
(identity, config, units, hook; no bundle copy). Prints markdown lines: median of 5 and peak memory.

    .venv/bin/python benchmarks/bench_provision.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_provision_support import make_district, make_pi_image  # noqa: E402

from provisioning import sdcard  # noqa: E402
from provisioning.fatimage import FatImage  # noqa: E402
from provisioning.node_new import create_node  # noqa: E402
from provisioning.nodeid import make_identity  # noqa: E402

RUNS = 5


def provision_once(work: Path, district: Path, cluster: int) -> tuple[float, float, int]:
    image = make_pi_image(work / f"pi-{cluster}.img", tmp=work)
    tracemalloc.start()
    t0 = time.perf_counter()
    node_dir, _ = create_node(district, make_identity("27787", "760", "75", cluster), work / "nodes")
    t1 = time.perf_counter()
    sdcard.provision_card(FatImage(image), sdcard.NodeBundle.load(node_dir), os_name="bookworm")
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    image.unlink()
    return t1 - t0, t2 - t1, peak


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        district = make_district(work / "district")
        results = [provision_once(work, district, cluster) for cluster in range(1, RUNS + 1)]
    node_new = statistics.median(r[0] for r in results)
    card = statistics.median(r[1] for r in results)
    total = statistics.median(r[0] + r[1] for r in results)
    peak = max(r[2] for r in results)
    print(f"| provision: node new (key + cert + registry) | median of {RUNS} | {node_new * 1000:.0f} ms |")
    print(
        f"| provision: sdcard into image via mtools (no bundle) | median of {RUNS} | {card * 1000:.0f} ms |"
    )
    print(f"| provision: one node end to end | median of {RUNS} | {total * 1000:.0f} ms |")
    print(f"| provision: peak Python memory (tracemalloc) | max of {RUNS} | {peak / 1024:.0f} KiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
