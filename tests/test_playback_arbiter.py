"""What plays now: preemption table, resume/restart, stop, expiry, bounded queue, restart from snapshot."""

from __future__ import annotations

import json

import pytest

from node.playback.arbiter import ON_PREEMPTED, PREEMPTS, Action, Arbiter, Level, QueueItem


def item(item_id, level, now=0.0, expires=None, source="command", content_id="", resume_ok=True):
    return QueueItem(item_id, level, source, {"url": f"/{item_id}.ogg"}, now, expires, 60.0, resume_ok,
                     content_id or f"c-{item_id}")


def test_emergency_preempts_scheduled_programme_which_resumes_at_its_position():
    arb = Arbiter()
    first = arb.offer(item("prog", Level.SCHEDULED, source="schedule", expires=3600), 0.0)
    assert first.action is Action.PLAY_NOW
    d = arb.offer(item("fire", Level.EMERGENCY), 100.0, current_position=42.5)
    assert (d.action, d.preempted, d.preempted_fate) == (Action.PLAY_NOW, "prog", "resume")
    assert arb.current.item_id == "fire"
    assert arb.on_finished("fire", "completed", 160.0)
    nxt, dropped = arb.next(160.0)
    assert (nxt.item_id, nxt.start_at, dropped) == ("prog", 42.5, [])


def test_programme_whose_slot_ended_during_the_emergency_is_not_resumed():
    arb = Arbiter()
    arb.offer(item("prog", Level.SCHEDULED, source="schedule", expires=150.0), 0.0)
    arb.offer(item("fire", Level.EMERGENCY), 100.0, current_position=100.0)
    arb.on_finished("fire", "completed", 200.0)
    nxt, dropped = arb.next(200.0)
    assert nxt is None
    assert [(x.item.item_id, x.result, x.reason) for x in dropped] == [("prog", "skipped", "expired")]


def test_preempted_normal_bulletin_restarts_from_the_beginning():
    arb = Arbiter()
    arb.offer(item("news", Level.NORMAL), 0.0)
    d = arb.offer(item("flood", Level.EMERGENCY), 10.0, current_position=30.0)
    assert d.preempted_fate == "restart"
    arb.on_finished("flood", "completed", 70.0)
    assert arb.next(70.0)[0].start_at == 0.0


def test_priority_waits_for_a_running_bulletin_then_jumps_the_queue():
    arb = Arbiter()
    arb.offer(item("news", Level.NORMAL), 0.0)
    assert arb.offer(item("prog", Level.SCHEDULED), 1.0).action is Action.QUEUED
    assert arb.offer(item("urgent", Level.PRIORITY), 2.0).action is Action.QUEUED
    assert arb.offer(item("later", Level.NORMAL), 3.0).action is Action.QUEUED
    assert arb.current.item_id == "news"
    order = []
    arb.on_finished("news", "completed", 10.0)
    while (nxt := arb.next(10.0)[0]) is not None:
        order.append(nxt.item_id)
        arb.on_finished(nxt.item_id, "completed", 10.0)
    assert order == ["urgent", "prog", "later"]


def test_second_emergency_cuts_the_first_which_plays_again_after_it():
    arb = Arbiter()
    arb.offer(item("storm", Level.EMERGENCY), 0.0)
    arb.offer(item("news", Level.NORMAL), 1.0)
    d = arb.offer(item("fire", Level.EMERGENCY), 2.0, current_position=5.0)
    assert (d.preempted, d.preempted_fate) == ("storm", "restart")
    arb.on_finished("fire", "completed", 3.0)
    assert [arb.next(3.0)[0].item_id] == ["storm"]
    assert arb.next(3.0)[0] is None  # storm is current now
    arb.on_finished("storm", "completed", 4.0)
    assert arb.next(4.0)[0].item_id == "news"


def test_the_table_the_docs_show_is_the_table_the_code_uses():
    assert PREEMPTS[Level.EMERGENCY] == frozenset(Level)
    assert all(PREEMPTS[lvl] == frozenset() for lvl in (Level.PRIORITY, Level.NORMAL, Level.SCHEDULED))
    assert ON_PREEMPTED == {Level.EMERGENCY: "restart", Level.PRIORITY: "restart", Level.NORMAL: "restart",
                            Level.SCHEDULED: "resume"}


def test_stop_by_content_id_level_and_all():
    arb = Arbiter()
    arb.offer(item("a", Level.NORMAL, content_id="song"), 0.0)
    arb.offer(item("b", Level.NORMAL, content_id="song"), 0.0)
    arb.offer(item("c", Level.PRIORITY), 0.0)
    arb.offer(item("d", Level.NORMAL), 0.0)
    gone = arb.stop(1.0, content_id="song")
    assert [(x.item.item_id, x.result, x.was_current) for x in gone] == [
        ("a", "stopped", True), ("b", "skipped", False)]
    assert arb.current is None
    gone = arb.stop(1.0, level=Level.PRIORITY)
    assert [x.item.item_id for x in gone] == ["c"]
    assert [x.item_id for x in arb.queued] == ["d"]
    assert [x.item.item_id for x in arb.stop(1.0, all=True)] == ["d"]
    with pytest.raises(ValueError):
        arb.stop(1.0)


def test_late_end_event_of_a_preempted_item_changes_nothing():
    arb = Arbiter()
    arb.offer(item("news", Level.NORMAL), 0.0)
    arb.offer(item("fire", Level.EMERGENCY), 1.0)
    assert arb.on_finished("news", "stopped", 1.1) is False
    assert arb.current.item_id == "fire"


def test_expired_queue_items_are_dropped_as_skipped():
    arb = Arbiter()
    arb.offer(item("long", Level.NORMAL), 0.0)
    arb.offer(item("stale", Level.NORMAL, expires=50.0), 0.0)
    arb.offer(item("fresh", Level.NORMAL, expires=500.0), 0.0)
    assert arb.next_deadline() == 50.0
    expired = arb.expire(50.0)
    assert [(x.item.item_id, x.result, x.reason) for x in expired] == [("stale", "skipped", "expired")]
    d = arb.offer(item("late", Level.NORMAL, expires=40.0), 60.0)
    assert (d.action, d.reason) == (Action.DROPPED, "expired")


def test_replayed_item_id_is_rejected_as_duplicate():
    arb = Arbiter()
    arb.offer(item("x", Level.NORMAL), 0.0)
    assert arb.offer(item("x", Level.EMERGENCY), 1.0).reason == "duplicate"


def test_full_queue_drops_a_lower_item_for_a_higher_one_else_rejects():
    arb = Arbiter(max_queue=2)
    arb.offer(item("playing", Level.NORMAL), 0.0)
    arb.offer(item("n1", Level.NORMAL), 0.0)
    arb.offer(item("n2", Level.NORMAL), 1.0)
    d = arb.offer(item("n3", Level.NORMAL), 2.0)
    assert (d.action, d.reason) == (Action.REJECTED, "queue_full")
    d = arb.offer(item("p1", Level.PRIORITY), 3.0)
    assert d.action is Action.QUEUED and [x.item.item_id for x in d.dropped] == ["n2"]  # newest of the lowest
    assert [x.item_id for x in arb.queued] == ["p1", "n1"]


def test_snapshot_survives_json_and_restores_the_same_order():
    arb = Arbiter(max_queue=8)
    arb.offer(item("prog", Level.SCHEDULED, source="schedule", expires=999.0), 0.0)
    arb.offer(item("news", Level.NORMAL), 1.0)
    arb.offer(item("fire", Level.EMERGENCY), 2.0, current_position=12.0)
    restored = Arbiter.restore(json.loads(json.dumps(arb.snapshot())))
    assert restored.snapshot() == arb.snapshot()
    assert restored.current.item_id == "fire"
    restored.on_finished("fire", "completed", 3.0)
    first = restored.next(3.0)[0]
    assert (first.item_id, first.start_at) == ("prog", 12.0)
