"""Durable outbox for events and proof-of-play records: persisted before reported, deleted only when the
district's store acknowledged it.

Storage: one SQLite file in WAL mode with synchronous=FULL, so a committed row survives kill -9 and
power loss. A row goes through three states:
  pending    - never handed to the broker, or due again (`due` <= now); the pump sends these in order;
  in flight  - published, waiting for the broker's PUBACK (`inflight_mid` set);
  delivered  - the broker PUBACKed it (`attempts` counts how often), but PUBACK only means the broker
               has it: a full queue (max_queued_messages), a crash before autosave or a failover can
               still lose it. It is sent again when `due` passes (backoff with jitter per attempt) or
               after the next reconnect, until an acknowledgement signed by the district
               (node/trust/ack.py, topic spk/node/NODE/ack) names its id: only then is it deleted.
The only duplicates a district can see are exact repeats of the same `id`, which it de-duplicates.

Bounds and drop policy (royalty reporting depends on play records; events are diagnostics):
  * events alone are capped at `max_event_rows`; all rows at `max_rows`.
  * to make room, drop the oldest low-importance event (input_changed noise) first, then the oldest
    other event. Play records are never dropped to make room for events.
  * when play records alone fill `max_rows`, new events are refused (add() returns None) and play
    records are still accepted up to `max_play_rows`; past that hard cap the oldest play record goes.
  * every drop and refusal is counted (`dropped`, `dropped_play`, `refused`), persisted, and reported in
    the heartbeat (`dropped`, and `outbox_drop` once the policy has acted) so the district knows data was lost.
Corruption: if the file cannot be opened as a database (torn SD card write, bit rot), it is moved aside
as `<name>.corrupt-<ts>` (with its -wal/-shm), a new one is started, and an `outbox_reset` event is the
first row of the new file.

Threading: one instance, used only from the node's loop thread.
"""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from node.adapters import faults  # test-only kill points (off unless SPEAKER_FAULT_KILL_AT is set)
from node.reporting.heartbeat import encode  # the one compact encoder for everything sent over the air

KINDS = ("event", "play")
LOW_IMPORTANCE_EVENTS = frozenset({"input_changed"})
PRIO_LOW, PRIO_EVENT, PRIO_PLAY = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'play')),
    prio INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    payload BLOB NOT NULL,
    inflight_mid INTEGER NULL,
    due REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_prio ON outbox(prio, seq);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Files written before district acknowledgements existed lack the resend columns.
_ADDED_COLUMNS = (("due", "REAL NOT NULL DEFAULT 0"), ("attempts", "INTEGER NOT NULL DEFAULT 0"))

RESEND_AFTER_S = 60.0  # first re-send of a delivered but unacknowledged record
RESEND_MAX_S = 3600.0  # the longest wait between re-sends (a district collector down for days)


def resend_delay(attempts: int, base: float, cap: float, rng: random.Random | random.Random = random) -> float:
    """Wait before re-sending a record the broker took `attempts` times: uniform in [c/2, c] with
    c = min(cap, base * 2**(attempts-1)). Jitter so that 200 nodes whose records were PUBACKed together
    (one broker restart) do not re-send in lock-step; the floor c/2 so that it never becomes a tight loop."""
    ceiling = min(cap, base * (2 ** min(max(attempts - 1, 0), 30)))
    return rng.uniform(ceiling / 2, ceiling)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    """ULID-like: 48-bit milliseconds + 80 random bits, Crockford base32, 26 characters.

    Sorts by creation time, unique without coordination, safe in topics and file names.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def make_event(node_id: str, type_: str, data: dict | None = None, now: float | None = None) -> dict:
    """An event payload as node/schemas/event.json describes it."""
    now = time.time() if now is None else now
    return {"v": 1, "id": new_id(now), "node": node_id, "ts": int(now), "kind": "event",
            "type": type_, "data": dict(data or {})}


def _prio(kind: str, payload: dict) -> int:
    if kind == "play":
        return PRIO_PLAY
    return PRIO_LOW if payload.get("type") in LOW_IMPORTANCE_EVENTS else PRIO_EVENT


class Outbox:
    def __init__(
        self, db_path: str | os.PathLike, *, node_id: str = "unknown", max_rows: int = 50_000,
        max_event_rows: int = 20_000, max_play_rows: int = 200_000, clock: Callable[[], float] = time.time,
        resend_after: float = RESEND_AFTER_S, resend_max: float = RESEND_MAX_S, rng: random.Random | None = None,
    ):
        if not (0 < max_event_rows <= max_rows <= max_play_rows):
            raise ValueError("need 0 < max_event_rows <= max_rows <= max_play_rows")
        self.path = Path(db_path)
        self.node_id = node_id
        self.max_rows, self.max_event_rows, self.max_play_rows = max_rows, max_event_rows, max_play_rows
        self._clock = clock
        self.resend_after, self.resend_max = resend_after, max(resend_after, resend_max)
        self._rng = rng or random.Random()
        self.confirmed_total = 0  # rows deleted by district acknowledgements since start (tests, status)
        self._cached_counts: dict[str, int] | None = None
        self.moved_aside: Path | None = None
        try:
            self._db = self._open()
        except sqlite3.OperationalError:
            raise  # locked, unwritable directory, disk full: not corruption, never move data aside
        except sqlite3.DatabaseError as exc:
            self.moved_aside = self._move_aside()
            self._db = self._open()
            self.add("event", make_event(node_id, "outbox_reset", {
                "reason": "corrupt", "detail": str(exc)[:200], "moved_to": self.moved_aside.name,
            }, self._clock()))

    # -- opening and recovery -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT below
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in columns:
                    db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {decl}")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(target) + suffix))
        return target

    def close(self) -> None:
        self._db.close()

    def probe_write(self) -> None:
        """One tiny committed write: raises sqlite3.Error when the medium cannot take writes."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO meta(key, value) VALUES ('probe', 0) "
                             "ON CONFLICT(key) DO UPDATE SET value = 1 - value")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def move_rows_to(self, path: str | os.PathLike) -> None:
        """Degraded start (node.service.storage): this in-memory outbox's rows go into the outbox file
        at `path`, and this object carries on with that file. Raises sqlite3.Error/OSError (and keeps
        its rows) when the file still cannot be written. Rows come back unsent: the pump re-sends them."""
        disk = Outbox(path, node_id=self.node_id, max_rows=self.max_rows, max_event_rows=self.max_event_rows,
                      max_play_rows=self.max_play_rows, clock=self._clock, resend_after=self.resend_after,
                      resend_max=self.resend_max, rng=self._rng)
        try:
            rows = self._db.execute("SELECT id, kind, prio, created, payload FROM outbox ORDER BY seq").fetchall()
            meta = self._db.execute("SELECT key, value FROM meta").fetchall()
            disk._db.execute("BEGIN IMMEDIATE")
            try:
                disk._db.executemany("INSERT OR IGNORE INTO outbox(id, kind, prio, created, payload) "
                                     "VALUES (?, ?, ?, ?, ?)", rows)
                disk._db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                                     "DO UPDATE SET value = value + excluded.value", meta)
                disk._db.execute("COMMIT")
            except BaseException:
                if disk._db.in_transaction:
                    disk._db.execute("ROLLBACK")
                raise
        except BaseException:
            disk.close()
            raise
        self._db.close()
        self._db, self.path, self._cached_counts = disk._db, disk.path, None
        self.moved_aside = disk.moved_aside

    # -- writing ----------------------------------------------------------------------------------

    def _counts(self) -> dict[str, int]:
        # Counting is a table scan; during a long outage (50,000 rows, no acks) every add() would pay
        # it. So the counts are cached and only recounted after rows were deleted by acknowledgements.
        if self._cached_counts is None:
            counts = dict.fromkeys(KINDS, 0)
            for kind, n in self._db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"):
                counts[kind] = n
            self._cached_counts = counts
        return dict(self._cached_counts)

    def _bump(self, key: str) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1",
            (key,),
        )

    def _drop_oldest_event(self) -> bool:
        row = self._db.execute(
            "SELECT seq FROM outbox WHERE prio < ? ORDER BY prio, seq LIMIT 1", (PRIO_PLAY,)
        ).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM outbox WHERE seq = ?", row)
        self._bump("dropped")
        return True

    def _after_insert(self, kind: str) -> dict[str, int]:
        counts = dict(self._cached_counts or {})
        counts[kind] = counts.get(kind, 0) + 1
        return counts

    def _make_room(self, kind: str) -> bool:
        """Apply the drop policy for one new row of `kind`. False: refuse it."""
        counts = self._counts()
        if kind == "event":
            while counts["event"] >= self.max_event_rows and self._drop_oldest_event():
                counts["event"] -= 1
        while sum(counts.values()) >= self.max_rows and counts["event"] and self._drop_oldest_event():
            counts["event"] -= 1
        self._cached_counts = counts
        if kind == "event":
            return sum(counts.values()) < self.max_rows
        while counts["play"] >= self.max_play_rows:
            self._db.execute(
                "DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox WHERE kind = 'play')")
            self._bump("dropped_play")
            counts["play"] -= 1
        self._cached_counts = counts
        return True

    def add(self, kind: str, payload: dict) -> str | None:
        """Persist one record; return its id once committed, or None if the drop policy refused it.

        Adding a payload whose id is already stored is a no-op that returns the id (replays are safe).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        payload = dict(payload)
        if payload.setdefault("kind", kind) != kind:
            raise ValueError(f"payload kind {payload['kind']!r} does not match {kind!r}")
        now = self._clock()
        record_id = payload.setdefault("id", new_id(now))
        blob = encode(payload)
        faults.reached("outbox", kind)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT 1 FROM outbox WHERE id = ?", (record_id,)).fetchone():
                self._db.execute("COMMIT")
                faults.passed("outbox", kind)
                return record_id
            if not self._make_room(kind):
                self._bump("refused")
                self._db.execute("COMMIT")
                return None
            self._db.execute(
                "INSERT INTO outbox(id, kind, prio, created, payload) VALUES (?, ?, ?, ?, ?)",
                (record_id, kind, _prio(kind, payload), now, blob),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._cached_counts = None
            self._db.execute("ROLLBACK")
            raise
        self._cached_counts = None if self._cached_counts is None else self._after_insert(kind)
        faults.passed("outbox", kind)
        return record_id

    # -- sending -----------------------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """The oldest `limit` rows not in flight and due (never sent, or due again), in order (a page)."""
        rows = self._db.execute(
            "SELECT seq, id, payload FROM outbox WHERE inflight_mid IS NULL AND due <= ? ORDER BY seq LIMIT ?",
            (self._clock(), max(0, int(limit))),
        ).fetchall()
        return [(seq, rid, bytes(payload)) for seq, rid, payload in rows]

    def next_due(self) -> float | None:
        """When the earliest delivered-but-unacknowledged row is due again (epoch s), None when none."""
        return self._db.execute("SELECT min(due) FROM outbox WHERE inflight_mid IS NULL").fetchone()[0]

    def mark_sent(self, seq: int, mid: int) -> None:
        self.mark_sent_many([(seq, mid)])

    def mark_sent_many(self, pairs: Iterable[tuple[int, int]]) -> None:
        pairs = list(pairs)
        if pairs:
            faults.reached("outbox_sent")
            self._tx("UPDATE outbox SET inflight_mid = ? WHERE seq = ?", [(mid, seq) for seq, mid in pairs])

    def acked(self, seq: int) -> None:
        """The broker acknowledged this row (PUBACK): delivered, kept until the district confirms it."""
        self.acked_many([seq])

    def acked_many(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if not seqs:
            return
        faults.reached("outbox_ack")
        now = self._clock()
        attempts = dict(self._db.execute(
            f"SELECT seq, attempts FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs).fetchall())
        self._tx("UPDATE outbox SET inflight_mid = NULL, attempts = ?, due = ? WHERE seq = ?",
                 [(attempts[seq] + 1, now + resend_delay(attempts[seq] + 1, self.resend_after, self.resend_max,
                                                         self._rng), seq)
                  for seq in seqs if seq in attempts])

    def acked_mid(self, mid: int) -> bool:
        """Convenience when only the MQTT message id is at hand."""
        row = self._db.execute("SELECT seq FROM outbox WHERE inflight_mid = ?", (mid,)).fetchone()
        if row is None:
            return False
        self.acked_many([row[0]])
        return True

    def confirm(self, ids: Iterable[str]) -> int:
        """The district's store committed these records (a verified acknowledgement): forget them.
        Unknown ids (already confirmed, or another node's) are ignored. Returns the rows deleted."""
        ids = list(ids)
        if not ids:
            return 0
        self._cached_counts = None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            deleted = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                deleted += self._db.execute(
                    f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.confirmed_total += deleted
        return deleted

    def requeue_inflight(self) -> int:
        """After a reconnect or restart: rows sent but never acknowledged by the broker go back to pending,
        and delivered rows the district has not confirmed are due again within one `resend_after` (with
        per-row jitter) instead of waiting out a long backoff: the broker we reach now may have lost them
        (kill -9 before autosave, a failover to a broker that never had them)."""
        cursor = self._db.execute("UPDATE outbox SET inflight_mid = NULL WHERE inflight_mid IS NOT NULL")
        soon = self._clock() + self.resend_after / 2
        self._db.execute("UPDATE outbox SET due = ? + ? * (abs(random()) % 1000) / 1000.0 WHERE due > ?",
                         (soon, self.resend_after / 2, soon + self.resend_after / 2))
        return cursor.rowcount

    def unsent(self) -> int:
        """Rows the broker never acknowledged (pending or in flight, never PUBACKed)."""
        return self._db.execute("SELECT count(*) FROM outbox WHERE attempts = 0").fetchone()[0]

    def _tx(self, sql: str, params: list[tuple]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(sql, params)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- reporting ---------------------------------------------------------------------------------

    def count(self) -> int:
        """Rows the district has not yet confirmed (the heartbeat's `outbox` field)."""
        return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def stats(self) -> dict:
        counts = self._counts()
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        inflight = self._db.execute(
            "SELECT count(*) FROM outbox WHERE inflight_mid IS NOT NULL").fetchone()[0]
        oldest = self._db.execute("SELECT min(created) FROM outbox").fetchone()[0]
        delivered = self._db.execute("SELECT count(*) FROM outbox WHERE attempts > 0").fetchone()[0]
        return {
            "pending": sum(counts.values()),
            "events": counts["event"],
            "plays": counts["play"],
            "inflight": inflight,
            "unconfirmed": delivered,  # the broker has (had) them; the district has not confirmed yet
            # `dropped` counts every record lost (the heartbeat field); `dropped_play` the play part
            "dropped": meta.get("dropped", 0) + meta.get("dropped_play", 0) + meta.get("refused", 0),
            "dropped_play": meta.get("dropped_play", 0),
            # what the drop policy did, for the heartbeat's `outbox_drop` (docs/heartbeat.md)
            "drop": {"events": meta.get("dropped", 0), "plays": meta.get("dropped_play", 0),
                     "refused": meta.get("refused", 0)},
            "oldest_age_s": None if oldest is None else max(0.0, self._clock() - oldest),
        }


class OutboxPump:
    """Moves rows from the outbox to the broker with a bounded in-flight window (no IO of its own).

    `publish(payload: bytes) -> mid | None` hands one message to the MQTT client (QoS 1) and returns
    its message id, or None when it could not (not connected). The loop calls on_connect() after every
    CONNACK, pump() when there may be work (and periodically: delivered rows fall due again), on_puback(mid)
    for each PUBACK, flush() once per turn (PUBACKs are written in one transaction: a lost flush only means
    a harmless re-send) and on_district_ack(ids) for each verified acknowledgement from the district.
    """

    def __init__(self, outbox: Outbox, publish: Callable[[bytes], int | None], *, window: int = 20):
        self.outbox, self.publish, self.window = outbox, publish, window
        self.connected = False
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._acked: list[int] = []
        self.refused = 0

    def on_connect(self) -> None:
        self.flush()
        self.outbox.requeue_inflight()
        self._inflight.clear()
        self.connected = True

    def on_disconnect(self) -> None:
        self.connected = False

    def forget_inflight(self) -> None:
        """The outbox moved to another database (node.service.storage): the message ids in flight name
        rows that no longer exist there; the rows are pending again and will be re-sent."""
        self._inflight.clear()
        self._acked.clear()

    def pump(self) -> int:
        if not self.connected or len(self._inflight) >= self.window:
            return 0
        sent: list[tuple[int, int]] = []
        for seq, _rid, payload in self.outbox.pending(self.window - len(self._inflight)):
            mid = self.publish(payload)
            if mid is None:
                break
            self._inflight[mid] = seq
            sent.append((seq, mid))
        self.outbox.mark_sent_many(sent)
        return len(sent)

    def on_puback(self, mid: int, ok: bool = True) -> None:
        """`ok` False: the broker answered with a failure reason code (MQTT v5 PUBACK >= 0x80, e.g.
        not authorised). The row is not delivered; it stays in flight until the next reconnect
        re-queues it, so a misconfigured ACL delays records instead of losing them."""
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if ok:
            self._acked.append(seq)
        else:
            self.refused += 1

    def on_district_ack(self, ids: list[str]) -> int:
        """A verified acknowledgement from the district's store: those rows are done."""
        self.flush()
        return self.outbox.confirm(ids)

    def flush(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.acked_many(acked)

    @property
    def inflight(self) -> int:
        return len(self._inflight)
