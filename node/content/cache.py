"""Content cache: verified audio stored by SHA-256, indexed in SQLite, held under a byte quota.

Files live at root/ab/abcdef….bin (named by their hash, so a name can never point at other bytes) and
in-progress downloads at root/partial/<sha256>.partial (same filesystem, so admitting is one rename).
Only files whose hash was checked while streaming (node.content.download) or while copying
(`import_file`) are admitted. Least-recently-used files are evicted to meet the quota, except pinned
ones (what the schedule will need soon): if the quota can only be met by evicting those, `admit`
refuses with RemoteDataError("cache_full") rather than break a coming broadcast.

The SQLite connection may be shared with other stores, so every table here is prefixed `cache_` and
nothing assumes it owns the database.

The index is only an index: the files are the truth. A cache.db of its own that is damaged is moved
aside and rebuilt from the files on disk, each one re-hashed against its name (a file that does not
match is removed). When the cache filesystem is full, read-only or failing, the index lives in memory
(rebuilt the same way) and playback goes on from the files; `try_recover()` writes it back to cache.db
once the medium takes writes again (node.service.storage calls it on a timer).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from node.content.download import HASH_MISMATCH, LENGTH_MISMATCH, check_sha256_hex, hash_file
from node.errors import DeviceError, RemoteDataError

log = logging.getLogger(__name__)

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
        self.fault: tuple[str, str] | None = None   # (reason, detail) while the index lives in memory
        self.rebuilt: dict | None = None            # what the last rebuild found, for the storage_fault event
        self._db_path = None if not self._owns_db else Path(db)
        self._pinned: frozenset[str] = frozenset()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "partial").mkdir(exist_ok=True)
        except OSError as exc:
            log.error("cache directory %s unusable: %s", self.root, exc)
        if not self._owns_db:
            # The download worker admits while the node loop looks files up: one lock, one connection.
            self._db = db
            self._create_schema(self._db)
            return
        try:
            self._db = self._open_index()
        except (sqlite3.Error, OSError) as exc:
            from node.adapters.store import classify

            log.error("cache index unusable (%s): rebuilding it in memory from the files", exc)
            self._db = self._memory_index()
            self.fault = (classify(exc, self._db_path), str(exc)[:200])

    def _create_schema(self, db: sqlite3.Connection) -> None:
        with self._lock, db:
            # Statement by statement: executescript would first COMMIT whatever another store sharing
            # the connection has open.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    def _open_index(self) -> sqlite3.Connection:
        """cache.db, checked and write-probed; a damaged one is moved aside and rebuilt from the files."""
        from node.adapters.store import CORRUPT, classify, move_aside

        try:
            return self._open_checked()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or classify(exc) != CORRUPT:
                raise
            moved = move_aside(self._db_path, self._clock())
            log.error("cache index damaged (%s): moved to %s, rebuilding from the files", exc, moved.name)
            db = self._open_checked()
            self.rebuilt = {"detail": str(exc)[:200], "moved_to": moved.name, **self._rebuild(db)}
            return db

    def _open_checked(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, check_same_thread=False)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            self._create_schema(db)
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS cache_probe (at REAL)")
                db.execute("DELETE FROM cache_probe")
                db.execute("INSERT INTO cache_probe VALUES (?)", (self._clock(),))
        except BaseException:
            db.close()
            raise
        return db

    def _memory_index(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        self._create_schema(db)
        self.rebuilt = self._rebuild(db)
        return db

    def _rebuild(self, db: sqlite3.Connection) -> dict:
        """Index every file whose bytes hash to its name; remove the ones that do not (a torn write).
        Content ids are not in the files: they come back as the schedule and commands name them."""
        files = damaged = 0
        for path in sorted(self.root.glob("[0-9a-f][0-9a-f]/*.bin")):
            try:
                digest, length = hash_file(path)
                if digest != path.stem or path.parent.name != digest[:2]:
                    path.unlink(missing_ok=True)
                    damaged += 1
                    continue
                mtime = path.stat().st_mtime
            except OSError as exc:
                log.warning("cache rebuild: %s unreadable: %s", path, exc)
                damaged += 1
                continue
            with self._lock, db:
                db.execute("INSERT OR REPLACE INTO cache_files (sha256, length, codec, added, last_used) "
                           "VALUES (?, ?, 'unknown', ?, ?)", (digest, length, mtime, mtime))
            files += 1
        log.info("cache index rebuilt: %d files verified, %d damaged removed", files, damaged)
        return {"files": files, "damaged": damaged}

    def try_recover(self) -> bool:
        """While the index is in memory: write it to cache.db once that works again."""
        if self.fault is None or not self._owns_db:
            return True
        try:
            disk = self._open_index()
            with self._lock:
                self._db.backup(disk)
                memory, self._db = self._db, disk
        except (sqlite3.Error, OSError) as exc:
            log.debug("cache index still in memory: %s", exc)
            return False
        memory.close()
        self.fault = None
        log.info("cache index back on disk")
        return True

    def _degrade(self, exc: BaseException) -> None:
        """A write to cache.db failed on a medium that worked: carry on with a copy in memory."""
        from node.adapters.store import classify

        memory = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._db.backup(memory)
        except sqlite3.Error:
            self._create_schema(memory)
            self._rebuild(memory)
        if self._owns_db:
            self._db.close()
        self._db = memory
        self.fault = (classify(exc, self._db_path), str(exc)[:200])
        log.error("cache index write failed (%s): index kept in memory", exc)

    def _write(self, fn):
        """Run an index write; a storage fault moves the index to memory and the write is done there."""
        from node.adapters import faults
        from node.adapters.store import is_storage_fault

        faults.reached("cache")
        try:
            with self._db:
                return fn(self._db)
        except (sqlite3.Error, OSError) as exc:
            if self.fault is not None or not self._owns_db or not is_storage_fault(exc):
                raise
            self._degrade(exc)
            with self._db:
                return fn(self._db)

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
        with self._lock:
            row = self._db.execute("SELECT 1 FROM cache_files WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None:
                return None
            if not path.exists():
                self._write(lambda db: self._forget(sha256))
                return None
            try:
                self._write(lambda db: db.execute("UPDATE cache_files SET last_used = ? WHERE sha256 = ?",
                                                  (self._clock(), sha256)))
            except sqlite3.Error as exc:  # the file is there and verified: play it, whatever the index says
                log.error("cache: last-used time not stored for %s: %s", sha256[:12], exc)
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

                def reuse(db):
                    self._name(content_id, sha256)
                    db.execute("UPDATE cache_files SET last_used = ? WHERE sha256 = ?", (self._clock(), sha256))

                self._write(reuse)
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

            def index(db):
                db.execute("INSERT OR REPLACE INTO cache_files (sha256, length, codec, added, last_used) "
                           "VALUES (?, ?, ?, ?, ?)", (sha256, length, codec, now, now))
                self._name(content_id, sha256)

            self._write(index)
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
        with self._lock:
            path.unlink(missing_ok=True)
            self._write(lambda db: self._forget(path.stem))
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
            gone = [sha256 for sha256 in indexed if not self.file_path(sha256).exists()]
            if gone:
                self._write(lambda db: [self._forget(sha256) for sha256 in gone])
                rows = len(gone)
        return SweepReport(partials, orphans, rows)

    # -- internals (caller holds the lock) ---------------------------------------------------------------

    def _files(self) -> list[CachedFile]:
        return [CachedFile(*row) for row in
                self._db.execute("SELECT sha256, length, last_used FROM cache_files")]

    def _evict(self, victims: list[str]) -> None:
        for sha256 in victims:
            # File first: a crash in between leaves a row without a file, which path_for/sweep repair.
            self.file_path(sha256).unlink(missing_ok=True)
            self._write(lambda db, sha256=sha256: self._forget(sha256))

    def _forget(self, sha256: str) -> None:
        self._db.execute("DELETE FROM cache_files WHERE sha256 = ?", (sha256,))
        self._db.execute("DELETE FROM cache_names WHERE sha256 = ?", (sha256,))

    def _name(self, content_id: str, sha256: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO cache_names (content_id, sha256) VALUES (?, ?)",
                         (content_id, sha256))
