"""Explicit modes for what the daemon writes: its state, cache and status are for the node alone.

The daemon sets its umask (node.daemon) but does not rely on it alone: directories that existed before
(an SD card prepared by hand, a state directory created by an older release) are tightened at start.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) if needed; the directory itself is left 0700 either way."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def private_files(*paths: str | os.PathLike) -> None:
    """chmod 0600 every path that exists (an SQLite database and its -wal/-shm companions)."""
    for path in paths:
        for candidate in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                os.chmod(candidate, PRIVATE_FILE)
            except FileNotFoundError:
                pass


def write_private(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace `path` with `data`, created 0600 whatever the umask."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
