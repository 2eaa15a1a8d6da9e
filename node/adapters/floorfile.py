"""The time floor on the SD card, cheaply: one fixed-size record overwritten in place.

The floor is saved every few minutes so that a power cut leaves it minutes behind. An SQLite commit
(WAL, synchronous=FULL) dirties ~12 KiB; this file dirties one 4 KiB page per save and never changes
size, so the idle write budget (<= 1 MB/day) holds (benchmarks/bench_floor_writes.py measures both).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

RECORD_BYTES = 48   # an ISO 8601 time with microseconds and offset is 32 characters


class FloorFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dt.datetime | None:
        """The saved floor, or None when there is none or it is unreadable (a torn write: start lower)."""
        try:
            text = self.path.read_bytes()[:RECORD_BYTES].decode("ascii").strip()
            value = dt.datetime.fromisoformat(text)
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return value if value.tzinfo is not None else None

    def save(self, floor: dt.datetime) -> None:
        record = floor.isoformat().encode("ascii").ljust(RECORD_BYTES - 1) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, record, 0)
            os.fdatasync(fd)   # the data, not the mtime: no journal commit just for a timestamp
        finally:
            os.close(fd)
