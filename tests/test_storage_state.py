"""Storage faults on the whole node in one process (virtual time): a lost, damaged or older state.db
never reopens replays or rolls back trust, and a damaged cache index is rebuilt from verified files.

The same faults against the real daemon on a real small filesystem: tests/test_storage_daemon.py."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3

import pytest
from onair_harness import VirtualNode

from node.adapters.store import StateStore
from node.trust import reasons
from provisioning.district.workspace import Workspace, bump_trust


@pytest.fixture
def ws(tmp_path, district_ws):
    private = tmp_path / "district"
    shutil.copytree(district_ws, private)        # these tests change trust.json
    return private


def restart(node: VirtualNode, tmp_path, ws, *, wipe=(), garbage=()):
    """Stop the node, delete (`wipe`) or overwrite with garbage (`garbage`) some of its files, start it
    again on the same clock and state directory."""
    clock, state, durations = node.clock, node.state_dir, node.durations
    node.close()
    for name in (*wipe, *garbage):
        for suffix in ("", "-wal", "-shm"):
            (state / f"{name}{suffix}").unlink(missing_ok=True)
    for name in garbage:
        (state / name).write_bytes(b"not a database " * 600)
    node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)
    node.durations.update(durations)                    # the fake player's clip lengths
    return node


def test_deleting_state_db_does_not_let_a_revoked_key_back_in(tmp_path, ws):
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        old_bulletin = Workspace.load(ws).key("bulletin")
        v1 = (ws / "trust.json").read_bytes()
        v2 = bump_trust(ws, revoke=["bulletin"], add_keys={"bulletin-2": ["bulletin", "live"]})
        node.play(node.clip("x", 5), level="emergency")    # played before the reset, by keys still good
        played = node.last_envelope
        node.run(30)
        assert [r["result"] for r in node.records()] == ["completed"]
        node.deliver(v2)
        assert node.events("trust_updated")[-1]["data"]["version"] == 2
        (ws / "trust.json").write_bytes(v1)             # the card's provisioned file is still version 1
        node = restart(node, tmp_path, ws, wipe=["state.db"])
        assert node.app.intake.trust.document.version == 2, "trust came back from the safe copy"
        [reset] = node.events("state_reset")
        assert reset["data"]["reason"] == "state_lost"
        node.play(node.clip("y", 5), keys=[old_bulletin])
        assert node.events("rejected")[-1]["data"]["reason"] == reasons.REVOKED_KEY
        node.deliver(played)                            # the emergency it played before the reset
        assert node.events("rejected")[-1]["data"]["reason"] == reasons.ISSUED_BEFORE_RESET
        node.run(30)
        assert node.records() == []
        node.play(node.clip("z", 5), keys=[Workspace.load(ws).key("bulletin-2")])   # sent after state_reset
        node.run(30)
        assert [(r["content_id"], r["result"]) for r in node.records()] == [("z", "completed")]
    finally:
        node.close()


def test_garbage_state_db_is_moved_aside_and_rebuilt_with_the_stored_schedule(tmp_path, ws):
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        start = node.clock.wall() + dt.timedelta(minutes=10)
        clip = node.clip("ban-tin", 5)
        node.send("schedule", {"version": 7, "timezone": "Asia/Ho_Chi_Minh", "slots": [], "once": [
            {"id": "sang", "at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 60, "level": "normal",
             "volume": 60, "playlist": [clip]}]}, valid_for=86400)
        assert node.app.store.document("schedule")[0] == 7
        state = node.state_dir
        node = restart(node, tmp_path, ws, garbage=["state.db"])
        assert list(state.glob("state.db.corrupt-*")), "the damaged file is kept for a technician"
        assert node.app.store.document("schedule")[0] == 7
        fault = [e["data"] for e in node.events("storage_fault") if e["data"]["store"] == "state"]
        assert fault == [{"store": "state", "reason": "corrupt", "action": "rebuilt",
                          "detail": fault[0]["detail"], "moved_to": fault[0]["moved_to"]}]
        assert node.events("state_reset")[0]["data"]["reason"] == "state_corrupt"
        node.run_until(start + dt.timedelta(seconds=30))
        assert [(r["content_id"], r["result"]) for r in node.records()] == [("ban-tin", "completed")]
    finally:
        node.close()


def test_older_state_db_restored_from_a_backup_counts_as_a_reset(tmp_path, ws):
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        clock, state = node.clock, node.state_dir
        node.close()
        backup = tmp_path / "backup.db"
        shutil.copy(state / "state.db", backup)                   # birth 1
        node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)   # birth 2: ids the backup lacks
        node.play(node.clip("x", 2))
        played = node.last_envelope
        node.run(10)
        clock, state = node.clock, node.state_dir
        node.close()
        for suffix in ("-wal", "-shm"):
            (state / f"state.db{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, state / "state.db")
        node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)
        assert node.events("state_reset")[0]["data"]["reason"] == "state_stale"
        node.deliver(played)
        assert node.events("rejected")[-1]["data"]["reason"] == reasons.ISSUED_BEFORE_RESET
    finally:
        node.close()


def test_a_plain_restart_is_not_a_reset(tmp_path, ws):
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        node.play(node.clip("x", 2))
        node.run(10)
        node = restart(node, tmp_path, ws)
        assert node.events("state_reset") == [] and node.events("storage_fault") == []
        assert node.app.store.reset_epoch(node.clock.wall()) is None
    finally:
        node.close()


def test_garbage_cache_db_is_rebuilt_from_the_files_verified_against_their_hashes(tmp_path, ws):
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        good = node.clip("good", 2)
        bad = node.clip("bad", 3)                       # another length: other bytes, another hash
        cache = node.app.cache
        damaged = cache.file_path(bad["sha256"])
        node = restart(node, tmp_path, ws)
        damaged.write_bytes(damaged.read_bytes()[:-10] + b"\0" * 10)   # a torn write: same length
        node = restart(node, tmp_path, ws, garbage=["cache.db"])
        cache = node.app.cache
        assert cache.has(good["sha256"]) and not cache.has(bad["sha256"]) and not damaged.exists()
        [fault] = [e["data"] for e in node.events("storage_fault") if e["data"]["store"] == "cache"]
        assert fault["action"] == "rebuilt" and fault["files"] == 1 and fault["damaged"] == 1
        node.play({**good, "content_id": "good"})
        node.run(10)
        assert [r["result"] for r in node.records()] == ["completed"]
    finally:
        node.close()


def test_a_write_that_fails_while_running_degrades_to_memory_and_merges_back(tmp_path):
    store = StateStore(tmp_path / "state.db")
    store.next_birth()
    store.remember("before", 1e12)
    failing = FailingConnection(store.db)
    store.db = failing
    store.remember("during", 1e12)                       # the disk write fails: kept in memory
    assert store.degraded and store.fault[0] == "disk_full"
    assert store.seen("before") and store.seen("during")
    failing.real.close()
    assert store.try_recover()
    assert not store.degraded
    reopened = StateStore(tmp_path / "state.db")
    assert reopened.seen("before") and reopened.seen("during") and reopened.reset_reason is None


class FailingConnection:
    """A state.db connection on a card that just filled up: reads work, every write fails."""

    def __init__(self, real: sqlite3.Connection):
        self.real = real

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "BEGIN")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, *args)

    def backup(self, target):
        self.real.backup(target)

    def close(self):
        self.real.close()


def test_partly_damaged_state_db_is_moved_aside_and_trust_and_schedule_survive(tmp_path, ws):
    """A torn write in the middle of state.db (one page of garbage): quick_check finds it, the file is
    moved aside, and the node comes back with trust v2 and its schedule from the safe copy."""
    (tmp_path / "a").mkdir()
    node = VirtualNode(tmp_path / "a", ws)
    try:
        v1 = (ws / "trust.json").read_bytes()
        node.deliver(bump_trust(ws, revoke=["bulletin"], add_keys={"bulletin-2": ["bulletin", "live"]}))
        (ws / "trust.json").write_bytes(v1)             # the card's provisioned trust file is version 1
        node.send("schedule", {"version": 5, "timezone": "Asia/Ho_Chi_Minh", "slots": []}, valid_for=86400)
        for n in range(1200):                       # enough rows for the database to span many pages
            node.app.store.remember(f"id-{n:05d}-{'x' * 40}", 1e12)
        state = node.state_dir
        clock, durations = node.clock, node.durations
        node.close()
        db = state / "state.db"                     # (closing checkpointed the WAL into it)
        size = db.stat().st_size
        assert size > 8 * 4096
        with open(db, "r+b") as f:
            f.seek((size // 4096 // 2) * 4096)
            f.write(b"\xde\xad" * 2048)
        node = VirtualNode(tmp_path / "a", ws, clock=clock, state_dir=state)
        node.durations.update(durations)
        assert list(state.glob("state.db.corrupt-*"))
        assert node.app.intake.trust.document.version == 2
        assert node.app.store.document("schedule")[0] == 5
        assert node.events("state_reset")[0]["data"]["reason"] == "state_corrupt"
    finally:
        node.close()
