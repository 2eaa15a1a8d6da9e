"""Persistent node state in SQLite: counters, seen command ids, signed documents, playback journal.

Everything here is written *after* the pure verifier accepted it and *before* the node acts on it, so a
power cut can never make the node forget that it already accepted a command (no replay after restart).
WAL with synchronous=FULL: each commit survives a power cut; writes happen only when something
changes, so an idle node does not wear the SD card.

A storage fault never stops the node (docs/storage.md):
  * a damaged state.db (not a database, or failing quick_check) is moved aside as
    state.db.corrupt-<ts> and a new one is started, seeded from the safe copy (node.adapters.safecopy:
    the trust chain, the schedule and config envelopes, the time floor and the reset epoch);
  * a state filesystem that is full, read-only or failing opens the store *degraded*: an in-memory
    database seeded from whatever can still be read, so the node keeps its trust, schedule and journal
    while running; `try_recover()` (called by node.service.storage on a timer) merges it back to disk
    once writes work again. A write that fails while running degrades the store the same way.
  * losing the seen ids (a rebuilt, deleted, unreadable or older state.db) is a *state reset*: the node
    refuses every command that could have been accepted before it (`issued_before_reset`), see
    `reset_epoch()`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from node.adapters import faults
from node.adapters.safecopy import SafeCopy

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_ids (id TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_ids_until ON seen_ids(until);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT PRIMARY KEY, version INTEGER NOT NULL, envelope BLOB NOT NULL, stored REAL NOT NULL);
CREATE TABLE IF NOT EXISTS journal (slot TEXT PRIMARY KEY, payload TEXT NOT NULL);
"""

MAX_SEEN_IDS = 200_000  # bound even if a district sends far more than expected
COPIED_KEYS = ("trust_chain", "time_floor", "config_overlay", "reset_epoch", "birth", "config_envelopes")
COPIED_DOCUMENTS = ("schedule", "config")

# Fault reasons (the `reason` of a storage_fault event, docs/heartbeat.md).
DISK_FULL, READ_ONLY, IO_ERROR, CORRUPT, UNAVAILABLE = "disk_full", "read_only", "io_error", "corrupt", "unavailable"


def classify(exc: BaseException, path: str | Path | None = None) -> str:
    """What kind of storage fault an exception is: the district reads this, not the message. SQLite
    often says only "unable to open database file"; then the filesystem at `path` is asked."""
    import errno

    if isinstance(exc, OSError):
        found = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY,
                 errno.EACCES: READ_ONLY, errno.EPERM: READ_ONLY, errno.EIO: IO_ERROR}.get(exc.errno, UNAVAILABLE)
        return _ask_filesystem(path) if found == UNAVAILABLE else found
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if "FULL" in name or "full" in text:
        return DISK_FULL
    if "READONLY" in name or "readonly" in text or "read-only" in text:
        return READ_ONLY
    if "IOERR" in name or "i/o" in text:
        # a full disk often surfaces as an I/O error (growing the -shm or -wal fails): ask the filesystem
        found = _ask_filesystem(path)
        return IO_ERROR if found == UNAVAILABLE else found
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return CORRUPT
    return _ask_filesystem(path)


def _ask_filesystem(path: str | Path | None) -> str:
    if path is None:
        return UNAVAILABLE
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return UNAVAILABLE
    if st.f_flag & os.ST_RDONLY:
        return READ_ONLY
    if st.f_bavail == 0 or st.f_favail == 0:
        return DISK_FULL
    return UNAVAILABLE


def is_storage_fault(exc: BaseException) -> bool:
    """An error of the medium (full, read-only, failing, cannot open), not a bug in a query."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return classify(exc) != UNAVAILABLE or "unable to open" in str(exc).lower()
    return False


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def move_aside(path: Path, now: float) -> Path:
    """Keep a damaged database for a technician (with its -wal/-shm); never delete evidence."""
    target = path.with_name(f"{path.name}.corrupt-{int(now)}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            os.replace(source, Path(str(target) + suffix))
    return target


class StateStore:
    def __init__(self, path: str | Path, *, copy_path: str | Path | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self.copy = SafeCopy(Path(copy_path) if copy_path else self.path.with_name("state.copy.json"))
        self.fault: tuple[str, str] | None = None       # (reason, detail) while degraded
        self.moved_to: Path | None = None
        self.reset_reason: str | None = None           # set when the seen ids were lost at this start
        self.report: Callable[[str, dict], None] | None = None   # the node's event emitter, set by the wiring
        self._queued: list[tuple[str, dict]] = []
        copied = self.copy.load()
        try:
            self.db = self._open_disk()
            self._check_continuity(copied)
        except (sqlite3.Error, OSError) as exc:
            self.db = self._open_degraded(exc, copied)
        if self.reset_reason:
            self._seed_from_copy(copied)
            self._begin_reset(self.reset_reason)

    # --- opening, degrading, recovering ----------------------------------------------------------
    def _open_disk(self) -> sqlite3.Connection:
        """Open state.db for writing; a damaged file is moved aside and replaced by an empty one.

        Raises sqlite3.Error/OSError when the medium cannot take writes (full, read-only, failing)."""
        try:
            return self._open_checked()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or classify(exc) != CORRUPT:
                raise
            log.error("state.db is damaged (%s): moving it aside and starting a new one", exc)
            self.moved_to = move_aside(self.path, self.clock())
            self.reset_reason = "state_corrupt"
            self._announce_fault(CORRUPT, str(exc), action="rebuilt")
            return self._open_checked()

    def _open_checked(self) -> sqlite3.Connection:
        db = connect(self.path)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            db.executescript(SCHEMA)
            # A write probe: a full or read-only medium often opens fine and fails at the first commit.
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES('opened', ?)", (json.dumps(self.clock()),))
        except BaseException:
            db.close()
            raise
        return db

    def _check_continuity(self, copied: dict | None) -> None:
        """The seen ids are complete only if this database is the one the node last wrote: a new empty
        database (deleted, re-created) or an older one (restored from a backup) next to a newer safe
        copy is a state reset."""
        if self.reset_reason or copied is None:
            return
        birth = self.get("birth")
        copied_birth = (copied.get("kv") or {}).get("birth")
        if birth is None:
            self.reset_reason = "state_lost"
        elif isinstance(copied_birth, int) and birth < copied_birth:
            self.reset_reason = "state_stale"

    def _open_degraded(self, exc: BaseException, copied: dict | None) -> sqlite3.Connection:
        reason = classify(exc, self.path)
        log.error("state storage unusable (%s: %s): running degraded in memory", reason, exc)
        memory = self._memory()
        exact = self._read_into(memory)
        if not exact and (copied is not None or self.path.exists()):
            self.reset_reason = self.reset_reason or "state_unreadable"
        self._enter_degraded(reason, str(exc))
        return memory

    def _memory(self) -> sqlite3.Connection:
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        memory.executescript(SCHEMA)
        return memory

    def _read_into(self, memory: sqlite3.Connection) -> bool:
        """Copy what the file still holds into memory. True when that copy is known complete."""
        if not self.path.exists():
            return False
        wal = Path(str(self.path) + "-wal")
        attempts = ((f"file:{self.path}?mode=ro", True),
                    # immutable ignores a -wal it cannot read: the last commits may be missing
                    (f"file:{self.path}?immutable=1", not (wal.exists() and wal.stat().st_size > 0)))
        for uri, complete in attempts:
            try:
                source = sqlite3.connect(uri, uri=True)
                try:
                    source.execute("SELECT count(*) FROM kv").fetchone()
                    source.backup(memory)
                finally:
                    source.close()
                memory.executescript(SCHEMA)
                return complete
            except sqlite3.Error as exc:
                log.warning("reading %s (%s): %s", self.path.name, uri.rsplit("?", 1)[-1], exc)
        return False

    def _enter_degraded(self, reason: str, detail: str) -> None:
        self.fault = (reason, detail[:200])
        self._announce_fault(reason, detail, action="degraded")

    def _announce_fault(self, reason: str, detail: str, *, action: str) -> None:
        data = {"store": "state", "reason": reason, "action": action, "detail": detail[:200] or None}
        if self.moved_to is not None and action == "rebuilt":
            data["moved_to"] = self.moved_to.name
        self._emit("storage_fault", data)

    def _degrade_while_running(self, exc: BaseException) -> None:
        """A write failed on a medium that worked: keep going in memory with everything read so far."""
        memory = self._memory()
        try:
            self.db.backup(memory)
        except sqlite3.Error as backup_exc:
            log.error("could not copy state into memory (%s); replaying is refused until reset", backup_exc)
            self.reset_reason = "state_unreadable"
            self._begin_reset(self.reset_reason)
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        self.db = memory
        self._enter_degraded(classify(exc, self.path), str(exc))

    def try_recover(self) -> bool:
        """While degraded: if state.db takes writes again, merge the in-memory state into it and switch
        back. True when the store is on disk (again)."""
        if self.fault is None:
            return True
        try:
            disk = self._open_disk()
        except (sqlite3.Error, OSError) as exc:
            log.debug("state storage still unusable: %s", exc)
            return False
        memory = self.db
        try:
            _merge(memory, disk)
        except (sqlite3.Error, OSError) as exc:
            disk.close()
            log.warning("state storage: merge back failed (%s), staying in memory", exc)
            return False
        memory.close()
        self.db = disk
        reason, _ = self.fault
        self.fault = None
        self._save_copy()
        log.info("state storage usable again: merged back to %s", self.path)
        self._emit("storage_recovered", {"store": "state", "reason": reason})
        return True

    @property
    def degraded(self) -> bool:
        return self.fault is not None

    def close(self) -> None:
        self.db.close()

    # --- events to the district (queued until the node's emitter exists) -------------------------
    def _emit(self, type_: str, data: dict) -> None:
        if self.report is None:
            self._queued.append((type_, data))
        else:
            self.report(type_, data)

    def attach_reporter(self, report: Callable[[str, dict], None]) -> None:
        self.report = report
        queued, self._queued = self._queued, []
        for type_, data in queued:
            report(type_, data)

    # --- writing with degradation ------------------------------------------------------------------
    def _write(self, kind: str, fn: Callable[[sqlite3.Connection], object], detail=None):
        faults.reached(kind, detail)  # test-only kill points (node/adapters/faults.py); inert when unset
        try:
            result = fn(self.db)
        except (sqlite3.Error, OSError) as exc:
            if self.fault is not None or not is_storage_fault(exc):
                raise
            log.error("state write failed (%s): continuing in memory", exc)
            self._degrade_while_running(exc)
            result = fn(self.db)
        faults.passed(kind, detail)
        return result

    # --- small values ---------------------------------------------------------------------------
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key: str, value) -> None:
        self._write("kv", lambda db: _put(db, key, value))
        if key in COPIED_KEYS:
            self._save_copy()

    def next_birth(self) -> int:
        """Birth counter: +1 per process start, so a dashboard tells a restart from a reconnect."""
        copied = (self.copy.load() or {}).get("kv", {}).get("birth")

        def bump(db):
            with db:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT value FROM kv WHERE key='birth'").fetchone()
                birth = max(int(json.loads(row[0])) if row else 0, copied if isinstance(copied, int) else 0) + 1
                _put(db, "birth", birth)
            return birth

        birth = self._write("kv", bump)
        self._save_copy()
        return birth

    # --- replay protection ---------------------------------------------------------------------
    def seen(self, command_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen_ids WHERE id=?", (command_id,)).fetchone() is not None

    def remember(self, command_id: str, until_epoch: float) -> None:
        self._write("seen", lambda db: db.execute("INSERT OR REPLACE INTO seen_ids(id, until) VALUES(?, ?)",
                                                  (command_id, until_epoch)))

    def forget_expired(self, now_epoch: float) -> int:
        """Ids may be forgotten once the command has expired: the verifier rejects it as expired anyway."""
        def forget(db):
            cur = db.execute("DELETE FROM seen_ids WHERE until < ?", (now_epoch,))
            count = db.execute("SELECT COUNT(*) FROM seen_ids").fetchone()[0]
            if count > MAX_SEEN_IDS:
                db.execute("DELETE FROM seen_ids WHERE id IN (SELECT id FROM seen_ids ORDER BY until LIMIT ?)",
                           (count - MAX_SEEN_IDS,))
            return cur.rowcount

        return self._write("seen", forget)

    # --- state reset: what the node refuses after losing its seen ids ---------------------------
    def _begin_reset(self, reason: str) -> None:
        """The epoch itself needs trusted time; until the node has it, every command waits anyway
        (clock_untrusted), so the reset is pending and settled by the first trusted `reset_epoch(now)`."""
        log.warning("state reset (%s): commands issued before the reset's trusted time will be refused", reason)
        self._write("kv", lambda db: _put(db, "reset_pending", {"reason": reason,
                                                                "moved_to": self.moved_to and self.moved_to.name}))

    def reset_epoch(self, now: dt.datetime | None) -> dt.datetime | None:
        """The trusted time of the last state reset (None: never reset). A pending reset is settled at
        `now` (trusted time) and reported once as a `state_reset` event."""
        pending = self.get("reset_pending")
        if pending and now is not None:
            previous = self.get("reset_epoch")
            epoch = max(now, dt.datetime.fromisoformat(previous)) if previous else now

            def settle(db):
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    _put(db, "reset_epoch", epoch.isoformat())
                    db.execute("DELETE FROM kv WHERE key='reset_pending'")

            self._write("kv", settle)
            self._save_copy()
            self._emit("state_reset", {"reason": pending.get("reason"), "reset_at": epoch.isoformat(),
                                       "moved_to": pending.get("moved_to")})
        stored = self.get("reset_epoch")
        return dt.datetime.fromisoformat(stored) if stored else None

    # --- versioned signed documents (schedule, config, trust) -----------------------------------
    def versions(self) -> dict[str, int]:
        return {kind: v for kind, v in self.db.execute("SELECT kind, version FROM documents")}

    def document(self, kind: str) -> tuple[int, bytes] | None:
        row = self.db.execute("SELECT version, envelope FROM documents WHERE kind=?", (kind,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def store_document(self, kind: str, version: int, envelope: bytes) -> None:
        """Keep the exact signed bytes: on restart they are verified again, never trusted as parsed."""
        self._write("document", lambda db: db.execute(
            "INSERT OR REPLACE INTO documents(kind, version, envelope, stored) VALUES(?, ?, ?, ?)",
            (kind, version, envelope, time.time())))
        if kind in COPIED_DOCUMENTS:
            self._save_copy()

    def copied_document(self, kind: str) -> tuple[int, bytes] | None:
        """The safe copy's version of a document (may be newer than the database's after a rebuild)."""
        return self.copy.document(kind)

    def copied_value(self, key: str, default=None):
        return ((self.copy.load() or {}).get("kv") or {}).get(key, default)

    # --- playback journal: what is on air, for crash recovery ----------------------------------
    def journal_set(self, slot: str, payload: dict | None) -> None:
        if payload is None:
            self._write("journal", lambda db: db.execute("DELETE FROM journal WHERE slot=?", (slot,)))
        else:
            self._write("journal", lambda db: db.execute("INSERT OR REPLACE INTO journal(slot, payload) VALUES(?, ?)",
                                                         (slot, json.dumps(payload))))

    def journal_get(self, slot: str) -> dict | None:
        row = self.db.execute("SELECT payload FROM journal WHERE slot=?", (slot,)).fetchone()
        return json.loads(row[0]) if row else None

    def journal_items(self, prefix: str) -> list[tuple[str, dict]]:
        rows = self.db.execute("SELECT slot, payload FROM journal WHERE slot LIKE ? ORDER BY slot",
                               (prefix.replace("%", "") + "%",)).fetchall()
        return [(slot, json.loads(payload)) for slot, payload in rows]

    def journal_apply(self, changes: dict[str, dict | None]) -> None:
        """Several journal rows in one transaction (None deletes): the recorder ends an item, forgets
        its command and keeps its pending record atomically (node/service/recorder.py)."""
        def apply(db):
            with db:
                db.execute("BEGIN IMMEDIATE")
                for slot, payload in changes.items():
                    if payload is None:
                        db.execute("DELETE FROM journal WHERE slot=?", (slot,))
                    else:
                        db.execute("INSERT OR REPLACE INTO journal(slot, payload) VALUES(?, ?)",
                                   (slot, json.dumps(payload)))

        self._write("journal", apply, detail=changes)

    def accept_command(self, command_id: str, until_epoch: float, journal: tuple[str, dict] | None = None):
        """Remember an accepted id (and optionally journal it) in one transaction, before acting on it."""
        def accept(db):
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO seen_ids(id, until) VALUES(?, ?)", (command_id, until_epoch))
                if journal:
                    db.execute("INSERT OR REPLACE INTO journal(slot, payload) VALUES(?, ?)",
                               (journal[0], json.dumps(journal[1])))

        self._write("seen", accept)

    # --- the safe copy -----------------------------------------------------------------------------
    def _seed_from_copy(self, copied: dict | None) -> None:
        """A rebuilt or unreadable state starts from the safe copy's values (documents are verified
        again by the wiring before use: node.service.storage.restore_documents)."""
        if not copied:
            return
        for key, value in (copied.get("kv") or {}).items():
            if key in COPIED_KEYS and self.get(key) is None:
                self._write("kv", lambda db, k=key, v=value: _put(db, k, v))

    def _save_copy(self) -> None:
        if self.fault is not None:
            return  # the medium is failing: the copy would fail too; written again on recovery
        previous = self.copy.load() or {}
        values = _newest_values(previous.get("kv") or {},
                                {key: value for key in COPIED_KEYS if (value := self.get(key)) is not None})
        documents = {}
        for kind in COPIED_DOCUMENTS:
            candidates = [d for d in (self.document(kind), self.copy.document(kind)) if d]
            if candidates:
                documents[kind] = max(candidates, key=lambda d: d[0])
        self.copy.save(values, documents)


def _newest_values(copied: dict, stored: dict) -> dict:
    """Never let the copy go backwards: the longer trust chain, the later floor, epoch and birth."""
    values = dict(copied)
    for key, value in stored.items():
        old = values.get(key)
        if old is None or key in ("config_overlay", "config_envelopes"):  # verified again at start
            values[key] = value
        elif key == "trust_chain":
            values[key] = value if len(value) >= len(old) else old
        else:
            try:
                values[key] = max(value, old)  # ISO-8601 UTC strings and ints both order correctly
            except TypeError:
                values[key] = value
    return values


def _put(db: sqlite3.Connection, key: str, value) -> None:
    db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)", (key, json.dumps(value)))


def _merge(memory: sqlite3.Connection, disk: sqlite3.Connection) -> None:
    """Everything the node did in memory, into the disk database: memory wins for values and the
    journal (it started as a copy of the disk), seen ids are a union, documents keep the higher version."""
    tables = {name: memory.execute(f"SELECT * FROM {name}").fetchall()  # noqa: S608 - fixed names
              for name in ("kv", "seen_ids", "documents", "journal")}
    with disk:
        disk.execute("BEGIN IMMEDIATE")
        disk.executemany("INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)", tables["kv"])
        disk.executemany("INSERT OR REPLACE INTO seen_ids(id, until) VALUES(?, ?)", tables["seen_ids"])
        for kind, version, envelope, stored in tables["documents"]:
            row = disk.execute("SELECT version FROM documents WHERE kind=?", (kind,)).fetchone()
            if row is None or row[0] <= version:
                disk.execute("INSERT OR REPLACE INTO documents(kind, version, envelope, stored) VALUES(?, ?, ?, ?)",
                             (kind, version, envelope, stored))
        disk.execute("DELETE FROM journal")
        disk.executemany("INSERT INTO journal(slot, payload) VALUES(?, ?)", tables["journal"])
