"""Read and write the FAT boot partition inside a disk image file, without root, using mtools.

The partition offset comes from the MBR (Raspberry Pi OS images use an MBR with the FAT boot partition
first). mtools addresses a filesystem at a byte offset with `-i IMAGE@@OFFSET`, so nothing is mounted
and no loop device is needed. The same small interface is offered by `BootDirectory` (a mounted card).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from node.errors import ConfigError, DeviceError

SECTOR = 512
FAT_TYPES = {0x0B: "FAT32 (CHS)", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x06: "FAT16"}
CHUNK = 1 << 20

Progress = Callable[[int], None]  # called with the number of bytes just written


@dataclass(frozen=True)
class Partition:
    index: int  # 1-based, as in /dev/mmcblk0p1
    type_id: int
    start_sector: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_sector * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR


def read_mbr(image: str | Path) -> list[Partition]:
    """Primary partitions of an MBR disk image (empty slots left out)."""
    with open(image, "rb") as f:
        mbr = f.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ConfigError([f"{image} has no MBR partition table (is it a Raspberry Pi OS image?)"])
    parts = []
    for index in range(4):
        entry = mbr[446 + 16 * index : 446 + 16 * (index + 1)]
        type_id = entry[4]
        start, sectors = struct.unpack("<II", entry[8:16])
        if type_id and sectors:
            parts.append(Partition(index + 1, type_id, start, sectors))
    return parts


def find_boot_partition(image: str | Path) -> Partition:
    for part in read_mbr(image):
        if part.type_id in FAT_TYPES:
            return part
    raise ConfigError([f"no FAT boot partition (type 0x0b/0x0c/0x0e) in the partition table of {image}"])


def _norm(path: str) -> str:
    return "/" + str(PurePosixPath("/", path)).lstrip("/")


class FatImage:
    """The FAT filesystem at byte `offset` of `image`, driven through mtools subprocesses."""

    def __init__(self, image: str | Path, offset: int | None = None):
        self.image = Path(image)
        self.offset = find_boot_partition(image).offset if offset is None else offset
        if shutil.which("mcopy") is None:
            raise ConfigError(["mtools is not installed (apt install mtools)"])
        self._env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0", LC_ALL="C")

    def describe(self) -> str:
        return f"{self.image} (FAT at byte {self.offset})"

    @property
    def _drive(self) -> str:
        return f"{self.image}@@{self.offset}"

    def _run(
        self, tool: str, *args: str, check: bool = True, stdout=subprocess.PIPE
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [tool, "-i", self._drive, *args],
            env=self._env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DeviceError(
                f"{tool} {' '.join(args)} on {self.image}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc

    def exists(self, path: str) -> bool:
        return self._run("mdir", "-b", "::" + _norm(path), check=False).returncode == 0

    def is_dir(self, path: str) -> bool:
        proc = self._run("mdir", "-b", "::" + _norm(path), check=False)
        if proc.returncode != 0:
            return False
        lines = proc.stdout.decode(errors="replace").split()
        # mdir on a file lists the file itself; on a directory it lists the children (or nothing).
        return lines != ["::" + _norm(path)]

    def listdir(self, path: str = "/") -> list[str]:
        proc = self._run("mdir", "-b", "::" + _norm(path), check=False)
        if proc.returncode != 0:
            return []
        return sorted(
            PurePosixPath(line.rstrip("/")).name for line in proc.stdout.decode().splitlines() if line
        )

    def read(self, path: str) -> bytes | None:
        proc = self._run("mcopy", "-n", "::" + _norm(path), "-", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def mkdir(self, path: str) -> None:
        parts = PurePosixPath(_norm(path)).parts[1:]
        for depth in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:depth])
            if not self.exists(sub):
                self._run("mmd", "::" + sub)

    def write(self, path: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(prefix="spk-fat-") as tmp:
            tmp.write(data)
            tmp.flush()
            self.copy_in(Path(tmp.name), path)

    def copy_in(self, source: Path, path: str, progress: Progress | None = None) -> None:
        target = _norm(path)
        parent = str(PurePosixPath(target).parent)
        if parent != "/":
            self.mkdir(parent)
        self._run("mcopy", "-o", "-m", str(source), "::" + target)
        if progress:
            progress(source.stat().st_size)

    def erase(self, path: str) -> None:
        """Overwrite with zeros of the same length, then delete: a secret must not linger in a cluster."""
        data = self.read(path)
        if data is None:
            return
        self.write(path, b"\0" * len(data))
        self._run("mdel", "::" + _norm(path))

    def remove_tree(self, path: str) -> None:
        if self.exists(path):
            self._run("mdeltree", "::" + _norm(path))


class BootDirectory:
    """A mounted boot partition (e.g. /media/$USER/bootfs on the laptop)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError([f"{self.root} is not a directory"])

    def describe(self) -> str:
        return str(self.root)

    def _p(self, path: str) -> Path:
        return self.root / _norm(path).lstrip("/")

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def is_dir(self, path: str) -> bool:
        return self._p(path).is_dir()

    def listdir(self, path: str = "/") -> list[str]:
        p = self._p(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def read(self, path: str) -> bytes | None:
        try:
            return self._p(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def mkdir(self, path: str) -> None:
        self._p(path).mkdir(parents=True, exist_ok=True)

    def write(self, path: str, data: bytes) -> None:
        target = self._p(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def copy_in(self, source: Path, path: str, progress: Progress | None = None) -> None:
        target = self._p(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                if progress:
                    progress(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())

    def erase(self, path: str) -> None:
        target = self._p(path)
        if not target.is_file():
            return
        size = target.stat().st_size
        with open(target, "r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
        target.unlink()

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(self._p(path), ignore_errors=True)
