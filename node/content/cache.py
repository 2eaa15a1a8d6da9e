"""Content cache: verified audio stored by SHA-256, indexed in SQLite, held under a byte quota.

Files live at root/ab/abcdef….bin (named by their hash, so a name can never point at other bytes) and
in-progress downloads at root/partial/<sha256>.partial (same filesystem, so admitting is one rename).
Only files whose hash was checked while streaming (node.content.download) or while copying
(`import_file`) are admitted. Least-recently-used files are evicted to meet the quota, except pinned
ones (what the schedule will need soon): if the quota can only be met by evicting those, `admit`
refuses with RemoteDataError("cache_full") rather than break a coming broadcast.

The SQLite connection may be shared with other stores, so every table here is prefixed `cache_` and
nothing assumes it owns the database.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from node.content.download import HASH_MISMATCH, LENGTH_MISMATCH, check_sha256_hex, hash_file
from node.errors import DeviceError, RemoteDataError

CACHE_FULL = "cache_full"
PARTIAL_MAX_AGE = 24 * 3600  # a partial untouched for a day belongs to content nobody asks for any more
COPY_CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_files (
    sha256    TEXT PRIMARY KEY,
    length    INTEGER NOT NULL,
    codec     TEXT NOT NULL,
    added     REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache_names (
    content_id TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_names_sha256 ON cache_names (sha256);
CREATE INDEX IF NOT EXISTS cache_files_last_used ON cache_files (last_used);
"""


@dataclass(frozen=True)
class CachedFile:
    sha256: str
    length: int
    last_used: float


def plan_eviction(files: Iterable[CachedFile], pinned: set[str], quota: int,
                  incoming: int) -> list[str] | None:
    """Hashes to evict, oldest use first, so that `incoming` more bytes fit in `quota`.

    None when even evicting every unpinned file would not make room: then nothing should be evicted.
    """
    files = list(files)
    usage = sum(f.length for f in files)
    victims: list[str] = []
    if usage + incoming <= quota:
        return victims
    for f in sorted(files, key=lambda f: (f.last_used, f.sha256)):
        if f.sha256 in pinned:
            continue
        victims.append(f.sha256)
        usage -= f.length
        if usage + incoming <= quota:
            return victims
    return None


@dataclass(frozen=True)
class SweepReport:
    partials_removed: int
    orphan_files_removed: int
    index_rows_removed: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentCache:
    def __init__(self, root: Path, quota_bytes: int, db: sqlite3.Connection | str | os.PathLike, *,
                 clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._owns_db = not isinstance(db, sqlite3.Connection)
        # The download worker admits while the node loop looks files up: one lock, one connection.
        self._db = sqlite3.connect(db, check_same_thread=False) if self._owns_db else db
        self._pinned: frozenset[str] = frozenset()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "partial").mkdir(exist_ok=True)
        with self._lock, self._db:
            # Statement by statement: executescript would first COMMIT whatever another store sharing
            # the connection has open.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    # -- paths -------------------------------------------------------------------------------------------

    def file_path(self, sha256: str) -> Path:
        sha256 = check_sha256_hex(sha256)
        return self.root / sha256[:2] / f"{sha256}.bin"

    def partial_path(self, sha256: str) -> Path:
        """Where a download of `sha256` should write (pass it to Downloader.fetch as dest_partial)."""
        return self.root / "partial" / f"{check_sha256_hex(sha256)}.partial"

    # -- lookups -----------------------------------------------------------------------------------------

    def has(self, sha256: str) -> bool:
        path = self.file_path(sha256)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM cache_files WHERE sha256 = ?", (path.stem,)).fetchone()
        return row is not None and path.exists()

    def path_for(self, sha256: str) -> Path | None:
        """The cached file, marking it just used; None (and the stale row dropped) if it is gone."""
        path = self.file_path(sha256)
        sha256 = path.stem
        with self._lock, self._db:
            row = self._db.execute("SELECT 1 FROM cache_files WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None:
                return None
            if not path.exists():
                self._forget(sha256)
                return None
            self._db.execute("UPDATE cache_files SET last_used = ? WHERE sha256 = ?", (self._clock(), sha256))
        return path

    def sha256_for(self, content_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM cache_names WHERE content_id = ?",
                                   (content_id,)).fetchone()
        return row[0] if row else None

    def usage(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(length), 0) FROM cache_files").fetchone()[0]

    def set_pinned(self, sha256s: Iterable[str]) -> None:
        """Replace the set of hashes the schedule needs soon; these are never evicted."""
        self._pinned = frozenset(check_sha256_hex(s) for s in sha256s)

    # -- admitting ---------------------------------------------------------------------------------------

    def admit(self, temp_path: Path, sha256: str, length: int, content_id: str, codec: str) -> Path:
        """Move a hash-verified temp file (same filesystem) into the cache and index it.

        The hash was checked while streaming; here only the length is re-checked (a stat). On
        cache_full the temp file is left in place so a later admit, after the schedule moves on, does not
        cost another download; sweep() removes it if nobody comes back for it.
        """
        temp_path = Path(temp_path)
        final = self.file_path(sha256)
        sha256 = final.stem
        try:
            actual = temp_path.stat().st_size
        except FileNotFoundError as exc:
            raise DeviceError(f"file to admit has gone: {temp_path}") from exc
        if actual != length:
            temp_path.unlink(missing_ok=True)
            raise RemoteDataError(LENGTH_MISMATCH, f"{temp_path.name} has {actual} bytes, signed {length}",
                                  sha256=sha256)
        with self._lock:
            if self.has(sha256):
                temp_path.unlink(missing_ok=True)
                with self._db:
                    self._name(content_id, sha256)
                    self._db.execute("UPDATE cache_files SET last_used = ? WHERE sha256 = ?",
                                     (self._clock(), sha256))
                return final
            victims = plan_eviction(self._files(), set(self._pinned), self.quota_bytes, length)
            if victims is None:
                raise RemoteDataError(CACHE_FULL, f"{length} bytes do not fit in the quota of "
                                      f"{self.quota_bytes} without evicting content the schedule needs",
                                      sha256=sha256, usage=self.usage())
            self._evict(victims)
            final.parent.mkdir(exist_ok=True)
            os.chmod(temp_path, 0o600)  # explicit, whatever the umask: the cache is the node's alone
            os.replace(temp_path, final)
            _fsync_dir(final.parent)
            if final.parent != temp_path.parent:
                _fsync_dir(temp_path.parent)
            now = self._clock()
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO cache_files (sha256, length, codec, added, last_used) "
                    "VALUES (?, ?, ?, ?, ?)", (sha256, length, codec, now, now))
                self._name(content_id, sha256)
        return final

    def import_file(self, src_path: Path, sha256: str, length: int, content_id: str, codec: str) -> Path:
        """Admit a file from a USB stick: copy while hashing; only an exact match is admitted."""
        sha256 = check_sha256_hex(sha256)
        temp = self.root / "partial" / f"import-{sha256}.partial"
        digest = hashlib.sha256()
        copied = 0
        try:
            with open(src_path, "rb") as src, open(temp, "wb") as dst:
                # Read at most one byte past the signed length: a huge file on the stick costs nothing.
                while data := src.read(min(COPY_CHUNK, length + 1 - copied)):
                    copied += len(data)
                    if copied > length:
                        break
                    digest.update(data)
                    dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise DeviceError(f"cannot copy {src_path}: {exc}") from exc
        if copied != length:
            temp.unlink(missing_ok=True)
            raise RemoteDataError(LENGTH_MISMATCH, f"{src_path} is not {length} bytes long", sha256=sha256)
        if digest.hexdigest() != sha256:
            temp.unlink(missing_ok=True)
            raise RemoteDataError(HASH_MISMATCH, f"{src_path} does not match the signed hash", sha256=sha256)
        return self.admit(temp, sha256, length, content_id, codec)

    # -- eviction and housekeeping -----------------------------------------------------------------------

    def evict_until(self, bytes_free: int) -> list[str]:
        """Evict least-recently-used unpinned files until `bytes_free` of the quota is free.

        Evicts nothing and raises cache_full when that needs pinned files gone.
        """
        with self._lock:
            victims = plan_eviction(self._files(), set(self._pinned), self.quota_bytes, bytes_free)
            if victims is None:
                raise RemoteDataError(CACHE_FULL, f"cannot free {bytes_free} bytes without evicting "
                                      "content the schedule needs", usage=self.usage())
            self._evict(victims)
            return victims

    def verify(self, sha256: str) -> bool:
        """Re-hash a cached file (e.g. after an SD-card scare); a damaged file is removed."""
        path = self.file_path(sha256)
        with self._lock:
            row = self._db.execute("SELECT length FROM cache_files WHERE sha256 = ?", (path.stem,)).fetchone()
        if row is None or not path.exists():
            return False
        if hash_file(path) == (path.stem, row[0]):
            return True
        with self._lock, self._db:
            path.unlink(missing_ok=True)
            self._forget(path.stem)
        return False

    def sweep(self, now: float | None = None) -> SweepReport:
        """Startup housekeeping: old partials, files the index does not know, rows whose file is gone."""
        now = self._clock() if now is None else now
        partials = orphans = rows = 0
        with self._lock:
            for partial in (self.root / "partial").glob("*.partial"):
                try:
                    if now - partial.stat().st_mtime > PARTIAL_MAX_AGE:
                        partial.unlink()
                        partials += 1
                except FileNotFoundError:
                    pass
            indexed = {f.sha256: f.length for f in self._files()}
            for path in self.root.glob("[0-9a-f][0-9a-f]/*"):
                expected = indexed.get(path.stem) if path.suffix == ".bin" else None
                if expected is None or path.parent.name != path.stem[:2] or path.stat().st_size != expected:
                    path.unlink(missing_ok=True)
                    orphans += 1
            with self._db:
                for sha256 in indexed:
                    if not self.file_path(sha256).exists():
                        self._forget(sha256)
                        rows += 1
        return SweepReport(partials, orphans, rows)

    # -- internals (caller holds the lock) ---------------------------------------------------------------

    def _files(self) -> list[CachedFile]:
        return [CachedFile(*row) for row in
                self._db.execute("SELECT sha256, length, last_used FROM cache_files")]

    def _evict(self, victims: list[str]) -> None:
        for sha256 in victims:
            # File first: a crash in between leaves a row without a file, which path_for/sweep repair.
            self.file_path(sha256).unlink(missing_ok=True)
            with self._db:
                self._forget(sha256)

    def _forget(self, sha256: str) -> None:
        self._db.execute("DELETE FROM cache_files WHERE sha256 = ?", (sha256,))
        self._db.execute("DELETE FROM cache_names WHERE sha256 = ?", (sha256,))

    def _name(self, content_id: str, sha256: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO cache_names (content_id, sha256) VALUES (?, ?)",
                         (content_id, sha256))
