"""Benchmark the SD-card cost of persisting the time floor (issue #9: minutes behind, <= 1 MB/day idle).

    .venv/bin/python benchmarks/bench_floor_writes.py            # 500 saves each
    .venv/bin/python benchmarks/bench_floor_writes.py --quick    # 50

Counts the bytes this process caused to be written to the block layer (/proc/self/io write_bytes,
counted when pages are dirtied) for N floor saves, each a new value as in service: the floor file
(node/adapters/floorfile.py, overwritten in place + fdatasync) against one SQLite row update in the
node's state store (WAL, synchronous=FULL). Per day = bytes per save x saves per day at FLOOR_SAVE_S.

write_bytes leaves out the filesystem journal (ext4 still commits the inode's new mtime). For the
whole cost, give a directory on a filesystem of its own and its block device:

    truncate -s 64M /tmp/fs.img && mkfs.ext4 -q /tmp/fs.img && mount -o loop /tmp/fs.img /mnt
    .venv/bin/python benchmarks/bench_floor_writes.py --dir /mnt --block-device loop0

then every save is followed by sync(2) (one journal commit per save, as 10 minutes apart in service)
and the device's written sectors (/sys/block/DEV/stat) are counted too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import command_line, machine_line  # noqa: E402
from node.adapters.floorfile import FloorFile  # noqa: E402
from node.adapters.store import StateStore  # noqa: E402
from node.app import FLOOR_SAVE_S  # noqa: E402

START = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def device_bytes(device: str | None) -> int:
    if not device:
        return 0
    return int(Path(f"/sys/block/{device}/stat").read_text().split()[6]) * 512   # sectors written


def measure(save, count: int, device: str | None) -> tuple[float, float | None]:
    save(START)  # first write creates the file/page: not the steady state
    os.sync()
    before, before_dev = write_bytes(), device_bytes(device)
    for i in range(1, count + 1):
        save(START + dt.timedelta(seconds=FLOOR_SAVE_S * i))
        if device:
            os.sync()
    dev = (device_bytes(device) - before_dev) / count if device else None
    return (write_bytes() - before) / count, dev


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saves", type=int, default=500)
    p.add_argument("--quick", action="store_true", help="50 saves")
    p.add_argument("--dir", help="where to write (default: a temporary directory under $HOME)")
    p.add_argument("--block-device", help="the block device of --dir's filesystem (e.g. loop0): count journal too")
    args = p.parse_args(argv)
    count = 50 if args.quick else args.saves
    per_day = 86400 / FLOOR_SAVE_S
    with tempfile.TemporaryDirectory(prefix="bench-floor-", dir=args.dir or str(Path.home())) as tmp:
        floor_file = FloorFile(Path(tmp) / "time-floor")
        rows = [("floor file (shipped)", *measure(floor_file.save, count, args.block_device))]
        store = StateStore(Path(tmp) / "state.db")
        try:
            rows.append(("SQLite state store row",
                         *measure(lambda t: store.put("time_floor", t.isoformat()), count, args.block_device)))
        finally:
            store.close()
    print(f"```\n{command_line('bench_floor_writes.py', argv)}\n{machine_line()}\n```\n")
    print(f"| how the floor is saved | write_bytes per save (mean of {count}) | device bytes per save "
          f"(incl. journal) | saves/day at {FLOOR_SAVE_S:.0f} s | per day | within 1 MB/day |")
    print("|---|---|---|---|---|---|")
    for name, value, dev in rows:
        worst = max(value, dev or 0)
        day = worst * per_day
        print(f"| {name} | {value:.0f} | {'-' if dev is None else f'{dev:.0f}'} | {per_day:.0f} | "
              f"{day / 1024:.0f} KiB | {'yes' if day <= 1_000_000 else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
