"""Outbox on real SQLite files: order, acknowledgement, restart, drop policy, corruption recovery."""

import json
import sqlite3

import pytest

from node.reporting.outbox import Outbox, OutboxPump, make_event, new_id
from node.schemas import validate

NODE = "27787-03"


def event(type_="test", n=0, **data):
    return make_event(NODE, type_, {"n": n, **data}, 1_764_129_000 + n)


def play(n):
    return {"v": 1, "node": NODE, "ts": 1_764_129_000 + n, "content_id": f"c-{n}"}


def ns(outbox, limit=1000):
    return [json.loads(payload)["data"]["n"] if b'"event"' in payload else json.loads(payload)["content_id"]
            for _, _, payload in outbox.pending(limit)]


def test_database_is_wal_with_full_sync(tmp_path):
    box = Outbox(tmp_path / "o.db")
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_ids_are_unique_and_sort_by_time():
    ids = [new_id(1_764_129_000 + i) for i in range(200)]
    assert len(set(ids)) == 200 and ids == sorted(ids) and all(len(i) == 26 for i in ids)


def test_records_come_back_in_order_after_restart(tmp_path):
    box = Outbox(tmp_path / "o.db", node_id=NODE)
    ids = [box.add("event", event(n=n)) for n in range(10)]
    box.close()
    box = Outbox(tmp_path / "o.db", node_id=NODE)
    assert [rid for _, rid, _ in box.pending(100)] == ids
    assert ns(box) == list(range(10))


def test_add_assigns_id_and_kind_and_is_persisted_before_returning(tmp_path):
    box = Outbox(tmp_path / "o.db")
    rid = box.add("event", {"v": 1, "node": NODE, "ts": 1, "type": "started", "data": {}})
    # a second connection (another process after kill -9) sees the committed row at once
    other = sqlite3.connect(tmp_path / "o.db")
    payload = json.loads(other.execute("SELECT payload FROM outbox WHERE id = ?", (rid,)).fetchone()[0])
    assert payload["id"] == rid and payload["kind"] == "event"
    validate("event", payload)


def test_adding_the_same_id_twice_stores_it_once(tmp_path):
    box = Outbox(tmp_path / "o.db")
    record = event(n=1)
    assert box.add("event", record) == box.add("event", record) == record["id"]
    assert box.count() == 1


def test_wrong_kind_is_refused_loudly(tmp_path):
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(ValueError):
        box.add("noise", {})
    with pytest.raises(ValueError):
        box.add("play", event())


def test_broker_puback_keeps_rows_until_the_district_confirms_them(tmp_path):
    now = [1_764_129_000.0]
    box = Outbox(tmp_path / "o.db", clock=lambda: now[0], resend_after=60, resend_max=600)
    ids = [box.add("event", event(n=n)) for n in range(5)]
    first = box.pending(2)
    for seq, _, _ in first:
        box.mark_sent(seq, 100 + seq)
    assert ns(box) == [2, 3, 4]
    box.acked(first[0][0])
    assert box.acked_mid(100 + first[1][0]) is True
    # PUBACK means the broker has them, not that anyone stored them: still counted, not due yet
    assert box.count() == 5 and box.stats()["inflight"] == 0 and box.stats()["unconfirmed"] == 2
    assert ns(box) == [2, 3, 4] and box.unsent() == 3
    assert box.confirm([ids[0], ids[1], "00000000UNKNOWNID"]) == 2
    assert box.count() == 3 and box.stats()["unconfirmed"] == 0


def test_unconfirmed_rows_are_resent_with_growing_jittered_backoff(tmp_path):
    import random

    now = [1_000_000.0]
    box = Outbox(tmp_path / "o.db", clock=lambda: now[0], resend_after=60, resend_max=300, rng=random.Random(7))
    box.add("event", event(n=0))
    waits = []
    for _ in range(6):
        (seq, _, _), = box.pending(10)
        box.mark_sent(seq, 1)
        box.acked(seq)
        due = box.next_due()
        waits.append(due - now[0])
        now[0] = due - 0.01
        assert box.pending(10) == []  # not before it is due
        now[0] = due
    assert 30 <= waits[0] <= 60 and 60 <= waits[1] <= 120 and 120 <= waits[2] <= 240
    assert all(150 <= w <= 300 for w in waits[3:])  # capped at resend_max, never below half of it
    assert len({round(w, 3) for w in waits}) == len(waits)  # jittered, not lock-step


def test_reconnect_brings_long_waiting_rows_forward(tmp_path):
    now = [1_000_000.0]
    box = Outbox(tmp_path / "o.db", clock=lambda: now[0], resend_after=10, resend_max=3600)
    box.add("event", event(n=0))
    (seq, _, _), = box.pending(10)
    box._db.execute("UPDATE outbox SET attempts = 9, due = ? WHERE seq = ?", (now[0] + 3000, seq))
    box.requeue_inflight()
    assert now[0] + 5 <= box.next_due() <= now[0] + 10


def test_outbox_from_before_acknowledgements_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / "o.db")
    db.executescript("""CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
        kind TEXT NOT NULL, prio INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL, payload BLOB NOT NULL,
        inflight_mid INTEGER NULL); CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO outbox(id, kind, created, payload) VALUES ('01OLDROW0000000000000000AA', 'event', 1, x'7b7d');""")
    db.commit()
    db.close()
    box = Outbox(tmp_path / "o.db")
    assert [rid for _, rid, _ in box.pending(10)] == ["01OLDROW0000000000000000AA"]


def test_unacked_rows_are_resent_in_order_after_restart(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for n in range(6):
        box.add("event", event(n=n))
    rows = box.pending(4)
    box.mark_sent_many([(seq, i + 1) for i, (seq, _, _) in enumerate(rows)])
    box.acked(rows[1][0])  # PUBACK for n=1 only: delivered, waiting for the district
    box.close()  # the process dies here
    box = Outbox(tmp_path / "o.db")
    assert ns(box) == [4, 5]  # in flight rows stay out until requeued
    assert box.requeue_inflight() == 3
    assert ns(box) == [0, 2, 3, 4, 5]


def test_pending_pages_never_load_everything(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for n in range(250):
        box.add("event", event(n=n))
    page = box.pending(100)
    assert len(page) == 100 and [json.loads(p)["data"]["n"] for _, _, p in page] == list(range(100))


def test_event_cap_drops_input_noise_before_other_events(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=10, max_event_rows=5)
    box.add("event", event("alarm_raised", 0, alarm="door_open"))
    for n in range(1, 5):
        box.add("event", event("input_changed", n, input="door", active=bool(n % 2)))
    box.add("event", event("alarm_cleared", 5, alarm="door_open"))
    # the oldest input noise went, the older alarm stayed
    assert ns(box) == [0, 2, 3, 4, 5]
    assert box.stats()["dropped"] == 1


def test_play_records_are_never_dropped_to_make_room_for_events(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=6, max_event_rows=4, max_play_rows=8)
    for n in range(3):
        box.add("event", event(n=n))
    for n in range(6):
        assert box.add("play", play(n))
    # the events made room for play records, oldest first
    assert ns(box) == [f"c-{n}" for n in range(6)]
    # play records alone fill the bound: new events are refused, counted
    assert box.add("event", event(n=9)) is None
    assert box.stats()["dropped"] == 4
    # ...but play records are still kept, up to the hard cap; past it the oldest play record goes
    for n in range(6, 10):
        assert box.add("play", play(n))
    assert ns(box) == [f"c-{n}" for n in range(2, 10)]
    stats = box.stats()
    assert stats["plays"] == 8 and stats["dropped_play"] == 2 and stats["events"] == 0
    assert stats["dropped"] == 6  # the heartbeat's `dropped`: every record lost, of either kind


def test_drop_counters_survive_restart(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=2, max_event_rows=1, max_play_rows=2)
    box.add("event", event(n=0))
    box.add("event", event(n=1))
    box.close()
    assert Outbox(tmp_path / "o.db", max_rows=2, max_event_rows=1, max_play_rows=2).stats()["dropped"] == 1


def test_corrupt_file_is_moved_aside_and_a_reset_event_recorded(tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database, it is a torn SD card write" * 100)
    box = Outbox(path, node_id=NODE, clock=lambda: 1_764_129_000.0)
    assert box.moved_aside == tmp_path / "o.db.corrupt-1764129000"
    assert box.moved_aside.read_bytes().startswith(b"this is not a database")
    (_, _, payload), = box.pending(10)
    reset = json.loads(payload)
    assert reset["type"] == "outbox_reset" and reset["data"]["moved_to"] == "o.db.corrupt-1764129000"
    validate("event", reset)
    assert box.add("event", event(n=1))


def test_pump_keeps_a_bounded_window_and_deletes_only_on_district_ack(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for n in range(30):
        box.add("event", event(n=n))
    published = []

    def publish(payload):
        published.append(json.loads(payload)["data"]["n"])
        return len(published)  # the mid

    pump = OutboxPump(box, publish, window=8)
    assert pump.pump() == 0  # not connected yet
    pump.on_connect()
    assert pump.pump() == 8 and pump.pump() == 0
    for mid in (1, 2, 3):
        pump.on_puback(mid)
    pump.on_puback(4, ok=False)  # broker refused n=3: not delivered, not deleted
    pump.flush()
    assert box.count() == 30 and box.unsent() == 27 and pump.refused == 1
    acked_ids = [json.loads(p)["id"] for _, _, p in box._db.execute(
        "SELECT seq, id, payload FROM outbox WHERE attempts > 0").fetchall()]
    assert pump.on_district_ack(acked_ids) == 3 and box.count() == 27
    assert pump.pump() == 4
    assert published == list(range(12))
    pump.on_disconnect()
    pump.on_connect()  # reconnect: everything unacknowledged goes again, in order
    pump.pump()
    assert published[12:] == list(range(3, 11))


def test_publish_failure_stops_the_pump_without_losing_rows(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for n in range(5):
        box.add("event", event(n=n))
    results = iter([1, 2, None])
    pump = OutboxPump(box, lambda payload: next(results), window=10)
    pump.on_connect()
    assert pump.pump() == 2
    assert ns(box) == [2, 3, 4]


def test_bounds_and_counts_hold_under_any_mix_of_adds_and_acks(tmp_path_factory):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    ops = st.lists(st.sampled_from(["noise", "event", "play", "send", "ack", "confirm"]), max_size=60)

    @settings(max_examples=40, deadline=None)
    @given(ops)
    def run(sequence):
        box = Outbox(tmp_path_factory.mktemp("o") / "o.db", max_rows=8, max_event_rows=5, max_play_rows=12)
        plays_added = 0
        for i, op in enumerate(sequence):
            if op == "noise":
                box.add("event", event("input_changed", i, input="door", active=True))
            elif op == "event":
                box.add("event", event("alarm_raised", i, alarm="door_open"))
            elif op == "play":
                assert box.add("play", play(i))
                plays_added += 1
            elif op == "send":
                box.mark_sent_many((seq, seq) for seq, _, _ in box.pending(3))
            elif op == "ack":
                sent = box._db.execute("SELECT seq FROM outbox WHERE inflight_mid IS NOT NULL").fetchall()
                box.acked_many(seq for (seq,) in sent[:2])
            else:
                delivered = box._db.execute("SELECT id FROM outbox WHERE attempts > 0").fetchall()
                box.confirm(rid for (rid,) in delivered[:2])
            stats = box.stats()
            real = dict(box._db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"))
            assert box._counts() == {"event": real.get("event", 0), "play": real.get("play", 0)}
            assert stats["events"] <= 5 and stats["plays"] <= 12
            assert stats["pending"] <= 8 or stats["events"] == 0  # over the bound only with plays alone
            if stats["dropped_play"]:
                assert stats["plays"] == 12
        box.close()

    run()


def test_drop_policy_is_reported_in_the_status_once_it_acts(tmp_path):
    from node.reporting.heartbeat import build_snapshot

    box = Outbox(tmp_path / "o.db", max_rows=4, max_event_rows=2, max_play_rows=5)
    quiet = build_snapshot(NODE, 1, 1, {"outbox_drop": box.stats()["drop"]}, 1_764_129_000)
    assert "outbox_drop" not in quiet  # nothing dropped: the field is absent
    for n in range(3):
        box.add("event", event("input_changed", n, input="door", active=True))
    for n in range(6):
        box.add("play", play(n))
    box.add("event", event(n=9))  # play records alone fill the bound: refused
    snapshot = build_snapshot(NODE, 1, 2, {"outbox_drop": box.stats()["drop"], "dropped": box.stats()["dropped"]},
                              1_764_129_000)
    # one event for the event cap, two to make room for plays; one play past its hard cap; one refusal
    assert snapshot["outbox_drop"] == {"events": 3, "plays": 1, "refused": 1}
    from node.schemas import errors

    assert errors("status", snapshot) == []
