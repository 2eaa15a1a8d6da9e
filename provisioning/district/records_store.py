"""The district's record store: events, proof-of-play records and status history, exactly once.

One schema for SQLite (the embedded default, WAL) and PostgreSQL (a province: `--db postgresql://...`,
driver psycopg 3, the `postgresql` extra of speaker-district-tools). Migrations are numbered; `schema_version`
holds the last one applied, and each runs in its own transaction, so a store opened by a newer
collector is brought forward once and an older collector refuses a newer schema instead of guessing.

Exactly once: a record's `id` (chosen by the node, unique) is the primary key; storing it again is a
no-op (INSERT ... ON CONFLICT DO NOTHING), and `store_batch` tells which ids were new and which
duplicates, so the collector can acknowledge both (a node whose acknowledgement was lost re-sends).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

# Portable SQL: TEXT, BIGINT, DOUBLE PRECISION and INTEGER mean the same in both engines.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE records (
            id TEXT PRIMARY KEY,
            node TEXT NOT NULL,
            kind TEXT NOT NULL,
            type TEXT,
            ts BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            broker TEXT NOT NULL,
            content_id TEXT, sha256 TEXT, title TEXT, level TEXT, source TEXT,
            slot_id TEXT, command_id TEXT,
            scheduled_at DOUBLE PRECISION, started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION,
            seconds DOUBLE PRECISION, result TEXT, reason TEXT,
            payload TEXT NOT NULL)""",
        "CREATE INDEX records_node_ts ON records (node, ts)",
        "CREATE INDEX records_kind_ts ON records (kind, ts)",
        """CREATE TABLE status_history (
            node TEXT NOT NULL,
            digest TEXT NOT NULL,
            ts BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            online INTEGER,
            payload TEXT NOT NULL,
            PRIMARY KEY (node, digest))""",
        "CREATE INDEX status_node_ts ON status_history (node, ts)",
        """CREATE TABLE refused (
            received_at DOUBLE PRECISION NOT NULL,
            broker TEXT NOT NULL,
            topic TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload TEXT NOT NULL)""",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

RECORD_COLUMNS = ("id", "node", "kind", "type", "ts", "received_at", "broker", "content_id", "sha256", "title",
                  "level", "source", "slot_id", "command_id", "scheduled_at", "started_at", "ended_at", "seconds",
                  "result", "reason", "payload")


class StoreError(Exception):
    """The database cannot be used (unreachable, newer schema, driver missing)."""


@dataclass(frozen=True)
class Incoming:
    """One validated message from a node, ready to store."""
    kind: str  # "event" | "play" | "status"
    node: str
    broker: str
    received_at: float
    payload: dict
    raw: str


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value, limit: int = 256):
    return value[:limit] if isinstance(value, str) else None


def record_row(msg: Incoming) -> tuple:
    p = msg.payload
    ts = p.get("ts")
    return (p["id"], msg.node, msg.kind, _text(p.get("type"), 64),
            int(ts) if isinstance(ts, int) and not isinstance(ts, bool) else int(msg.received_at),
            msg.received_at, msg.broker, _text(p.get("content_id")), _text(p.get("sha256"), 64),
            _text(p.get("title")), _text(p.get("level"), 16), _text(p.get("source"), 16), _text(p.get("slot_id")),
            _text(p.get("command_id")), _number(p.get("scheduled_at")), _number(p.get("started_at")),
            _number(p.get("ended_at")), _number(p.get("seconds")), _text(p.get("result"), 16),
            _text(p.get("reason"), 64), msg.raw)


class RecordStore:
    """Thread use: one writer (the collector's store thread) and short-lived readers (the CLIs)."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._lock = threading.Lock()
        self._db = self._connect()
        self.migrate()

    @classmethod
    def open(cls, db: str | None, workspace: str | Path) -> RecordStore:
        """`--db` as given (a PostgreSQL URL or a file path), else DIR/records.db."""
        return cls(db or str(Path(workspace) / "records.db"))

    # --- connection ------------------------------------------------------------------------------
    def _connect(self):
        if self.dialect == "postgresql":
            try:
                import psycopg
            except ImportError:
                raise StoreError("PostgreSQL needs psycopg 3: "
                                 "pip install 'speaker-district-tools[postgresql]'") from None
            try:
                return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {self._safe_url()}: {exc}") from None
        path = Path(self.url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # an acknowledged record must survive a power cut
        return db

    def _safe_url(self) -> str:
        head, sep, tail = self.url.partition("@")
        return ("postgresql://***@" + tail) if sep else self.url

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _begin(self):
        if self.dialect == "sqlite":
            self._db.execute("BEGIN IMMEDIATE")

    def _commit(self):
        if self.dialect == "sqlite":
            self._db.execute("COMMIT")
        else:
            self._db.commit()

    def _rollback(self):
        if self.dialect == "sqlite":
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        else:
            self._db.rollback()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- schema ----------------------------------------------------------------------------------
    def schema_version(self) -> int:
        cur = self._db.cursor()
        try:
            cur.execute("SELECT max(version) FROM schema_version")
            row = cur.fetchone()
        except Exception:  # noqa: BLE001 - no table yet (both drivers raise their own error type)
            self._rollback()
            return 0
        if self.dialect == "postgresql":
            self._db.commit()
        return row[0] or 0

    def migrate(self) -> int:
        with self._lock:
            cur = self._db.cursor()
            self._begin()
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            self._commit()
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self._safe_url()} has schema version {current}; this collector knows "
                                 f"{SCHEMA_VERSION}: upgrade speaker-district")
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                self._begin()
                try:
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
                    self._commit()
                except BaseException:
                    self._rollback()
                    raise
            return SCHEMA_VERSION

    # --- writing ---------------------------------------------------------------------------------
    def store_batch(self, messages: list[Incoming]) -> tuple[list[Incoming], list[Incoming]]:
        """Store records and status messages in one transaction. Returns (new, duplicate) records;
        both are committed when this returns (a duplicate was committed earlier)."""
        records = [m for m in messages if m.kind in ("event", "play")]
        statuses = [m for m in messages if m.kind == "status"]
        insert = self._sql(f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(RECORD_COLUMNS))}) ON CONFLICT (id) DO NOTHING")
        insert_status = self._sql("INSERT INTO status_history (node, digest, ts, received_at, online, payload) "
                                  "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, digest) DO NOTHING")
        new, duplicate = [], []
        with self._lock:
            cur = self._db.cursor()
            self._begin()
            try:
                first: dict[str, Incoming] = {}
                for msg in records:
                    if msg.payload["id"] in first:
                        duplicate.append(msg)  # the same record twice in one batch
                    else:
                        first[msg.payload["id"]] = msg
                if self.dialect == "postgresql" and first:
                    # one pipelined round trip for the batch; RETURNING names the rows actually inserted
                    cur.executemany(insert + " RETURNING id", [record_row(m) for m in first.values()],
                                    returning=True)
                    inserted = set()
                    while True:
                        inserted.update(row[0] for row in cur.fetchall())
                        if not cur.nextset():
                            break
                    for rid, msg in first.items():
                        (new if rid in inserted else duplicate).append(msg)
                else:
                    for msg in first.values():
                        cur.execute(insert, record_row(msg))
                        (new if cur.rowcount == 1 else duplicate).append(msg)
                for msg in statuses:
                    ts = msg.payload.get("ts")
                    online = msg.payload.get("online")
                    cur.execute(insert_status, (
                        msg.node, hashlib.sha256(msg.raw.encode("utf-8")).hexdigest(),
                        int(ts) if isinstance(ts, int) and not isinstance(ts, bool) else int(msg.received_at),
                        msg.received_at, None if not isinstance(online, bool) else int(online), msg.raw))
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return new, duplicate

    def store_refused(self, received_at: float, broker: str, topic: str, reason: str, raw: str) -> None:
        with self._lock:
            cur = self._db.cursor()
            self._begin()
            cur.execute(self._sql("INSERT INTO refused (received_at, broker, topic, reason, payload) "
                                  "VALUES (?, ?, ?, ?, ?)"), (received_at, broker, topic[:256], reason, raw[:65536]))
            self._commit()

    # --- reading ---------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute(self._sql(sql), params)
            rows = cur.fetchall()
            if self.dialect == "postgresql":
                self._db.commit()
            return [tuple(r) for r in rows]

    def records(self, *, node: str | None = None, since: float | None = None, until: float | None = None,
                kind: str | None = None) -> list[dict]:
        where, params = [], []
        for column, op, value in (("node", "=", node), ("ts", ">=", since), ("ts", "<", until), ("kind", "=", kind)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, id"
        return [dict(zip(RECORD_COLUMNS, row)) for row in self.query(sql, tuple(params))]

    def status_days(self, since: float, until: float) -> dict[str, set[int]]:
        """{node: {day index since `since`}} for days with any status message or record."""
        days: dict[str, set[int]] = {}
        for sql in ("SELECT node, ts FROM status_history WHERE ts >= ? AND ts < ?",
                    "SELECT node, ts FROM records WHERE ts >= ? AND ts < ?"):
            for node, ts in self.query(sql, (since, until)):
                days.setdefault(node, set()).add(int((ts - since) // 86400))
        return days

    def first_seen(self) -> dict[str, float]:
        """{node: earliest ts of anything it ever sent}: a node is not silent before it existed."""
        first: dict[str, float] = {}
        for sql in ("SELECT node, min(ts) FROM status_history GROUP BY node",
                    "SELECT node, min(ts) FROM records GROUP BY node"):
            for node, ts in self.query(sql):
                first[node] = min(first.get(node, ts), ts)
        return first

    def known_nodes(self) -> list[str]:
        rows = self.query("SELECT DISTINCT node FROM records UNION SELECT DISTINCT node FROM status_history")
        return sorted(r[0] for r in rows)

    def count(self, table: str = "records") -> int:
        assert table in ("records", "status_history", "refused")
        return self.query(f"SELECT count(*) FROM {table}")[0][0]


def as_json(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "payload"}
    out["payload"] = json.loads(row["payload"])
    return out
