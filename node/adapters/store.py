"""Persistent node state in SQLite: counters, seen command ids, signed documents, playback journal.

Everything here is written *after* the pure verifier accepted it and *before* the node acts on it, so a
power cut can never make the node forget that it already accepted a command (no replay after restart).
WAL with synchronous=FULL: each commit survives a power cut; writes happen only when something
changes, so an idle node does not wear the SD card.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_ids (id TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_ids_until ON seen_ids(until);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT PRIMARY KEY, version INTEGER NOT NULL, envelope BLOB NOT NULL, stored REAL NOT NULL);
CREATE TABLE IF NOT EXISTS journal (slot TEXT PRIMARY KEY, payload TEXT NOT NULL);
"""

MAX_SEEN_IDS = 200_000  # bound even if a district sends far more than expected


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class StateStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- small values ---------------------------------------------------------------------------
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)", (key, json.dumps(value)))

    def next_birth(self) -> int:
        """Birth counter: +1 per process start, so a dashboard tells a restart from a reconnect."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            birth = int(self.get("birth", 0)) + 1
            self.put("birth", birth)
        return birth

    # --- replay protection ---------------------------------------------------------------------
    def seen(self, command_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen_ids WHERE id=?", (command_id,)).fetchone() is not None

    def remember(self, command_id: str, until_epoch: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO seen_ids(id, until) VALUES(?, ?)", (command_id, until_epoch))

    def forget_expired(self, now_epoch: float) -> int:
        """Ids may be forgotten once the command has expired: the verifier rejects it as expired anyway."""
        cur = self.db.execute("DELETE FROM seen_ids WHERE until < ?", (now_epoch,))
        count = self.db.execute("SELECT COUNT(*) FROM seen_ids").fetchone()[0]
        if count > MAX_SEEN_IDS:
            self.db.execute(
                "DELETE FROM seen_ids WHERE id IN (SELECT id FROM seen_ids ORDER BY until LIMIT ?)",
                (count - MAX_SEEN_IDS,),
            )
        return cur.rowcount

    # --- versioned signed documents (schedule, config, trust) -----------------------------------
    def versions(self) -> dict[str, int]:
        return {kind: v for kind, v in self.db.execute("SELECT kind, version FROM documents")}

    def document(self, kind: str) -> tuple[int, bytes] | None:
        row = self.db.execute("SELECT version, envelope FROM documents WHERE kind=?", (kind,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def store_document(self, kind: str, version: int, envelope: bytes) -> None:
        """Keep the exact signed bytes: on restart they are verified again, never trusted as parsed."""
        self.db.execute(
            "INSERT OR REPLACE INTO documents(kind, version, envelope, stored) VALUES(?, ?, ?, ?)",
            (kind, version, envelope, time.time()),
        )

    # --- playback journal: what is on air, for crash recovery ----------------------------------
    def journal_set(self, slot: str, payload: dict | None) -> None:
        if payload is None:
            self.db.execute("DELETE FROM journal WHERE slot=?", (slot,))
        else:
            self.db.execute("INSERT OR REPLACE INTO journal(slot, payload) VALUES(?, ?)",
                            (slot, json.dumps(payload)))

    def journal_get(self, slot: str) -> dict | None:
        row = self.db.execute("SELECT payload FROM journal WHERE slot=?", (slot,)).fetchone()
        return json.loads(row[0]) if row else None

    def journal_items(self, prefix: str) -> list[tuple[str, dict]]:
        rows = self.db.execute("SELECT slot, payload FROM journal WHERE slot LIKE ? ORDER BY slot",
                               (prefix.replace("%", "") + "%",)).fetchall()
        return [(slot, json.loads(payload)) for slot, payload in rows]

    def accept_command(self, command_id: str, until_epoch: float, journal: tuple[str, dict] | None = None):
        """Remember an accepted id (and optionally journal it) in one transaction, before acting on it."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.remember(command_id, until_epoch)
            if journal:
                self.journal_set(*journal)
