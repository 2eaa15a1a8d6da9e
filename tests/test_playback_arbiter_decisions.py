"""The arbiter's decisions compared whole (action, item, reason, preemption, every Dropped record), at
each bound: expiry at its instant, the queue at its size, re-queued items ahead of their rank in
the order they were cut. A decision field that is lost or wrong is a play record that is lost or wrong."""

from __future__ import annotations

import pytest

from node.playback.arbiter import Action, Arbiter, Dropped, Level, QueueDecision, QueueItem


def item(item_id, level=Level.NORMAL, expires=None, resume_ok=True, source="command"):
    return QueueItem(item_id, level, source, {"url": f"/{item_id}.ogg"}, 0.0, expires, 60.0, resume_ok,
                     f"c-{item_id}")


def test_a_queue_holds_at_least_one_item():
    with pytest.raises(ValueError) as info:
        Arbiter(0)
    assert str(info.value) == "max_queue must be >= 1"
    one = Arbiter(1)
    one.offer(item("a"), 0.0)
    assert one.offer(item("b"), 0.0) == QueueDecision(Action.QUEUED, "b")
    assert Arbiter().max_queue == 32


def test_an_item_offered_twice_is_a_duplicate_while_it_plays_or_waits():
    arb = Arbiter()
    arb.offer(item("a"), 0.0)
    arb.offer(item("b"), 0.0)
    assert arb.offer(item("a"), 1.0) == QueueDecision(Action.REJECTED, "a", reason="duplicate")
    assert arb.offer(item("b"), 1.0) == QueueDecision(Action.REJECTED, "b", reason="duplicate")


def test_an_item_offered_at_its_expiry_instant_is_dropped_as_skipped():
    arb = Arbiter()
    late = item("late", expires=10.0)
    assert arb.offer(late, 10.0) == QueueDecision(Action.DROPPED, "late", reason="expired",
                                                  dropped=[Dropped(late, "skipped", "expired")])
    assert arb.offer(item("late", expires=10.0), 9.5) == QueueDecision(Action.PLAY_NOW, "late")


def test_playing_when_idle_reports_the_queued_items_that_expired_meanwhile():
    arb = Arbiter()
    arb.offer(item("a"), 0.0)
    stale = item("stale", expires=5.0)
    arb.offer(stale, 0.0)
    arb.on_finished("a", "completed", 1.0)   # the loop has not called next(): stale still waits
    assert arb.offer(item("b"), 6.0) == QueueDecision(Action.PLAY_NOW, "b",
                                                      dropped=[Dropped(stale, "skipped", "expired")])


def test_an_emergency_cutting_a_bulletin_names_it_and_reports_what_expired():
    arb = Arbiter()
    news = item("news")
    arb.offer(news, 0.0)
    stale = item("stale", expires=5.0)
    arb.offer(stale, 0.0)
    decision = arb.offer(item("fire", Level.EMERGENCY), 6.0, current_position=30.0)
    assert decision == QueueDecision(Action.PLAY_NOW, "fire", preempted="news", preempted_fate="restart",
                                     dropped=[Dropped(stale, "skipped", "expired")])
    assert arb.queued == [news]


def test_a_cut_item_that_expired_or_finds_no_room_is_dropped():
    arb = Arbiter()
    arb.offer(item("news", expires=10.0), 0.0)
    assert arb.offer(item("fire", Level.EMERGENCY), 10.0) == QueueDecision(
        Action.PLAY_NOW, "fire", preempted="news", preempted_fate="drop")
    assert arb.queued == []
    full = Arbiter(1)
    full.offer(item("fire", Level.EMERGENCY), 0.0)
    full.offer(item("quake", Level.EMERGENCY), 1.0)            # fire re-queued, the queue is now full
    decision = full.offer(item("tsunami", Level.EMERGENCY), 2.0)
    assert decision == QueueDecision(Action.PLAY_NOW, "tsunami", preempted="quake", preempted_fate="drop")
    assert [x.item_id for x in full.queued] == ["fire"]


def test_a_cut_emergency_evicts_a_queued_bulletin_to_come_back():
    arb = Arbiter(1)
    arb.offer(item("fire", Level.EMERGENCY), 0.0)
    news = item("news")
    arb.offer(news, 0.0)
    decision = arb.offer(item("quake", Level.EMERGENCY), 1.0)
    assert decision == QueueDecision(Action.PLAY_NOW, "quake", preempted="fire", preempted_fate="restart",
                                     dropped=[Dropped(news, "skipped", "queue_full")])


def test_a_full_queue_evicts_its_lowest_and_latest_item_for_a_higher_one():
    arb = Arbiter(3)
    arb.offer(item("now"), 0.0)
    first, second = item("first"), item("second")
    urgent = item("urgent", Level.PRIORITY)
    for queued in (first, urgent, second):
        arb.offer(queued, 0.0)
    decision = arb.offer(item("more", Level.PRIORITY), 1.0)
    assert decision == QueueDecision(Action.QUEUED, "more", dropped=[Dropped(second, "skipped", "queue_full")])
    assert [x.item_id for x in arb.queued] == ["urgent", "more", "first"]
    assert arb.offer(item("normal"), 1.0) == QueueDecision(Action.REJECTED, "normal", reason="queue_full")


def test_a_queue_freed_by_expiry_queues_the_new_item_and_reports_the_expired_one():
    arb = Arbiter(1)
    arb.offer(item("now"), 0.0)
    stale = item("stale", expires=5.0)
    arb.offer(stale, 0.0)
    # stale expired at 5: the queue has room again
    assert arb.offer(item("next"), 6.0) == QueueDecision(Action.QUEUED, "next",
                                                         dropped=[Dropped(stale, "skipped", "expired")])


def test_items_cut_one_after_another_come_back_newest_cut_first_ahead_of_their_rank():
    arb = Arbiter()
    arb.offer(item("prog", Level.SCHEDULED, source="schedule"), 0.0)
    arb.offer(item("waiting"), 0.0)
    arb.offer(item("fire", Level.EMERGENCY), 1.0, current_position=10.0)
    arb.offer(item("quake", Level.EMERGENCY), 2.0, current_position=3.0)
    order = [x.item_id for x in arb.queued]
    assert order == ["fire", "prog", "waiting"]
    assert [(x.item_id, x.start_at) for x in arb.queued] == [("fire", 0.0), ("prog", 10.0), ("waiting", 0.0)]


def test_emergencies_cut_in_turn_come_back_the_last_cut_first():
    arb = Arbiter()
    for name in ("e1", "e2", "e3"):
        arb.offer(item(name, Level.EMERGENCY), 0.0)
    arb.offer(item("news"), 0.0)
    assert [x.item_id for x in arb.queued] == ["e2", "e1", "news"]


def test_a_programme_without_seekable_media_restarts_from_zero():
    arb = Arbiter()
    arb.offer(item("prog", Level.SCHEDULED, resume_ok=False, source="schedule"), 0.0)
    decision = arb.offer(item("fire", Level.EMERGENCY), 1.0, current_position=40.0)
    assert decision.preempted_fate == "resume"
    assert arb.queued[0].start_at == 0.0


def test_the_next_deadline_is_the_earliest_expiry_among_queued_items():
    arb = Arbiter()
    assert arb.next_deadline() is None
    arb.offer(item("now"), 0.0)
    arb.offer(item("open"), 0.0)
    assert arb.next_deadline() is None
    arb.offer(item("b", expires=30.0), 0.0)
    arb.offer(item("a", expires=20.0), 0.0)
    assert arb.next_deadline() == 20.0


def test_next_reports_expired_items_and_plays_nothing_while_one_plays():
    arb = Arbiter()
    arb.offer(item("now"), 0.0)
    stale = item("stale", expires=5.0)
    arb.offer(stale, 0.0)
    assert arb.next(6.0) == (None, [Dropped(stale, "skipped", "expired")])
    assert arb.next(7.0) == (None, [])
    assert arb.on_finished("now", "completed", 8.0) is True
    assert arb.on_finished("now", "completed", 8.0) is False
    assert arb.next(9.0) == (None, [])


def test_a_stop_records_the_current_item_first_as_stopped_and_spares_its_level():
    arb = Arbiter()
    now, queued = item("now"), item("queued")
    fire = item("fire", Level.EMERGENCY)
    arb.offer(now, 0.0)
    arb.offer(queued, 0.0)
    assert arb.stop(1.0, all=True, spare=Level.NORMAL) == []
    arb.offer(fire, 1.0)   # cuts "now", which is re-queued
    dropped = arb.stop(2.0, all=True, spare=Level.EMERGENCY)
    assert dropped == [Dropped(now, "skipped", "stop_command"), Dropped(queued, "skipped", "stop_command")]
    assert arb.stop(3.0, content_id="fire") == [Dropped(fire, "stopped", "stop_command", was_current=True)]
    assert arb.current is None
    with pytest.raises(ValueError) as info:
        arb.stop(4.0)
    assert str(info.value) == "stop needs content_id, level or all=True"


def test_a_stop_matches_by_item_id_content_id_or_level():
    arb = Arbiter()
    for queued in ("a", "b", "c"):
        arb.offer(item(queued), 0.0)
    prio = item("p", Level.PRIORITY)
    arb.offer(prio, 0.0)
    assert [x.item.item_id for x in arb.stop(1.0, content_id="b")] == ["b"]
    assert [x.item.item_id for x in arb.stop(1.0, content_id="c-c")] == ["c"]
    assert arb.stop(1.0, level=Level.PRIORITY) == [Dropped(prio, "skipped", "stop_command")]
    assert arb.stop(1.0, content_id="nothing") == []
    assert arb.current.item_id == "a"


def test_a_restored_arbiter_keeps_its_size_and_defaults_to_32():
    arb = Arbiter(3)
    arb.offer(item("now"), 0.0)
    restored = Arbiter.restore(arb.snapshot())
    assert (restored.max_queue, restored.current) == (3, arb.current)
    assert Arbiter.restore({}).max_queue == 32 and Arbiter.restore({}).current is None


def test_a_programme_cut_without_a_position_resumes_from_its_start():
    arb = Arbiter()
    arb.offer(item("prog", Level.SCHEDULED, source="schedule"), 0.0)
    arb.offer(item("fire", Level.EMERGENCY), 1.0)
    assert arb.queued[0].start_at == 0.0


def test_a_drop_fate_in_the_table_means_the_cut_item_never_comes_back(monkeypatch):
    import node.playback.arbiter as arbiter

    monkeypatch.setitem(arbiter.ON_PREEMPTED, Level.NORMAL, "drop")
    arb = Arbiter()
    arb.offer(item("news"), 0.0)
    assert arb.offer(item("fire", Level.EMERGENCY), 1.0) == QueueDecision(
        Action.PLAY_NOW, "fire", preempted="news", preempted_fate="drop")
    assert arb.queued == []


def test_a_snapshot_of_an_idle_arbiter_and_of_items_of_one_rank_restores_in_order():
    assert Arbiter(4).snapshot() == {"max_queue": 4, "current": None, "queue": []}
    arb = Arbiter()
    for name in ("now", "first", "second", "third"):
        arb.offer(item(name), 0.0)
    restored = Arbiter.restore(arb.snapshot())
    assert [x.item_id for x in restored.queued] == ["first", "second", "third"]


def test_typed_content_survives_a_snapshot():
    from node.playback.items import Live

    live = QueueItem("relay", Level.NORMAL, "live", Live(url="https://radio.example/vov1", until=60.0,
                                                        command_id="c1"), 0.0)
    arb = Arbiter()
    arb.offer(live, 0.0)
    snapshot = arb.snapshot()
    assert snapshot["current"]["content"]["kind"] == "live"
    assert Arbiter.restore(snapshot).current == live
