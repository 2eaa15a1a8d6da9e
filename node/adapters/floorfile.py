"""The time floor on the SD card, cheaply and torn-write safe: two fixed slots overwritten in turn.

The floor is saved every 10 minutes so that a power cut leaves it minutes behind. An SQLite commit
(WAL, synchronous=FULL) dirties several pages; this file dirties one 4 KiB page per save and never
changes size, so the idle write budget (<= 1 MB/day) holds (benchmarks/bench_floor_writes.py).

An SD card promises no atomic sector write: a power cut in the middle of an overwrite can leave the
first bytes new and the rest old ("2027-" over "2026-12-31T23:55" reads a year ahead). So each save
goes to the *other* slot, with a sequence number and a CRC-32 over both: a torn slot fails its check
and the previous save in the other slot is used (a floor one save older, never a mixed one).
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from pathlib import Path

SLOT_BYTES = 64      # "SEQ ISO-8601 CRC32\n": 16 + 1 + 32 (time with microseconds and offset) + 1 + 8 + 1
SLOTS = 2
FILE_BYTES = SLOT_BYTES * SLOTS


def _record(seq: int, floor: dt.datetime) -> bytes:
    body = f"{seq:016d} {floor.isoformat()}"
    return f"{body} {zlib.crc32(body.encode('ascii')):08x}".encode("ascii").ljust(SLOT_BYTES - 1) + b"\n"


def _parse(slot: bytes) -> tuple[int, dt.datetime] | None:
    try:
        body, crc = slot.decode("ascii").strip().rsplit(" ", 1)
        if int(crc, 16) != zlib.crc32(body.encode("ascii")):
            return None
        seq, text = body.split(" ", 1)
        value = dt.datetime.fromisoformat(text)
        return (int(seq), value) if value.tzinfo is not None else None
    except (UnicodeDecodeError, ValueError):
        return None


class FloorFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._seq: int | None = None

    def _read(self) -> list[tuple[int, dt.datetime]]:
        try:
            data = self.path.read_bytes()[:FILE_BYTES]
        except OSError:
            return []
        found = (_parse(data[i * SLOT_BYTES:(i + 1) * SLOT_BYTES]) for i in range(SLOTS))
        return [slot for slot in found if slot is not None]

    def load(self) -> dt.datetime | None:
        """The newest intact save, or None when there is none (then the node starts lower, never higher)."""
        slots = self._read()
        if not slots:
            return None
        seq, value = max(slots, key=lambda slot: slot[0])
        self._seq = seq
        return value

    def save(self, floor: dt.datetime) -> None:
        if self._seq is None:
            self._seq = max((seq for seq, _ in self._read()), default=0)
        self._seq += 1
        record = _record(self._seq, floor)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, record, (self._seq % SLOTS) * SLOT_BYTES)   # the slot not holding the last save
            os.fdatasync(fd)   # the data, not the mtime: no journal commit just for a timestamp
        finally:
            os.close(fd)
