"""The on-air state machine, the live judge and the live record builder, without threads or hardware."""

from __future__ import annotations

import pytest

from node.playback.arbiter import Level, QueueItem
from node.playback.items import Bulletin, Clip, Live, Slot, content_from_dict
from node.playback.onair_states import (
    RESUME,
    STUCK_MARGIN_S,
    TRANSITIONS,
    IllegalTransition,
    OnAirState,
    Resume,
    Trigger,
    judge,
    overdue_after,
    step,
)
from node.playback.records import PlayRecord, PlayResult
from node.service.recorder import derived_id, record_payload

S, T = OnAirState, Trigger
SHA = "ab" * 32


def run(*triggers, state=S.IDLE):
    for trigger in triggers:
        state = step(state, trigger)
    return state


# --- transitions ------------------------------------------------------------------------------------
def test_a_bulletin_goes_idle_warming_cued_starting_sounding_ending_idle():
    seen = []
    state = S.IDLE
    for trigger in (T.OFFERED, T.CUE, T.START, T.HEARD, T.END, T.RECORDED):
        state = step(state, trigger)
        seen.append(state)
    assert seen == [S.WARMING, S.CUED, S.STARTING, S.SOUNDING, S.ENDING, S.IDLE]


def test_a_programme_moves_entry_to_entry_and_through_a_gap_for_a_missing_clip():
    state = run(T.OFFERED, T.CUE, T.START, T.HEARD, T.START, T.ENTRY_MISSING)
    assert state is S.GAP
    assert run(T.START, T.HEARD, T.END, state=state) is S.ENDING


def test_a_dropped_live_stream_reconnects_then_sounds_again():
    state = run(T.OFFERED, T.CUE, T.START, T.HEARD, T.STREAM_DROPPED)
    assert state is S.RECONNECTING
    assert run(T.START, T.HEARD, state=state) is S.SOUNDING


@pytest.mark.parametrize("state", [s for s in S if s not in (S.IDLE, S.ENDING)])
def test_every_busy_state_can_end(state):
    """A stop, a preemption, an amp fault or a shutdown can end the item in any state it is in."""
    assert step(state, T.END) is S.ENDING


def test_a_record_is_only_stored_from_ending_and_ending_leads_only_to_idle():
    assert [key for key in TRANSITIONS if key[1] is T.RECORDED] == [(S.ENDING, T.RECORDED)]
    assert [key for key in TRANSITIONS if key[0] is S.ENDING] == [(S.ENDING, T.RECORDED)]


@pytest.mark.parametrize("state,trigger", [(S.IDLE, T.HEARD), (S.IDLE, T.END), (S.WARMING, T.START),
                                           (S.WARMING, T.HEARD), (S.ENDING, T.END), (S.SOUNDING, T.CUE),
                                           (S.IDLE, T.RECORDED), (S.CUED, T.OFFERED)])
def test_a_move_the_table_does_not_allow_is_an_illegal_transition(state, trigger):
    assert (state, trigger) not in TRANSITIONS
    with pytest.raises(IllegalTransition):
        step(state, trigger)


def test_every_state_has_a_resume_rule_and_is_reachable():
    assert set(RESUME) == set(S)
    reachable = {S.IDLE} | set(TRANSITIONS.values())
    assert reachable == set(S)


def test_resume_replays_only_what_never_sounded_and_stores_a_pending_record_without_replaying():
    assert RESUME[S.ENDING] is Resume.STORE_PENDING  # one play, one record: never offered again
    assert RESUME[S.SOUNDING] is Resume.RECORD_INTERRUPTED
    assert RESUME[S.RECONNECTING] is Resume.RECORD_INTERRUPTED
    assert RESUME[S.STARTING] is Resume.RECORD_INTERRUPTED  # the player had it: it may have sounded
    assert {s for s, r in RESUME.items() if r is Resume.OFFER_AGAIN} == {S.WARMING, S.CUED, S.GAP}
    assert RESUME[S.IDLE] is Resume.NOTHING


def test_a_state_is_overdue_only_after_its_own_end_plus_the_margin():
    assert overdue_after(S.SOUNDING, warmup=2, min_off=5, media_seconds=300) == 300 + STUCK_MARGIN_S
    assert overdue_after(S.CUED, warmup=2, min_off=5, media_seconds=40) == 40 + STUCK_MARGIN_S
    assert overdue_after(S.WARMING, warmup=2, min_off=5, media_seconds=300) == 7 + STUCK_MARGIN_S
    assert overdue_after(S.STARTING, warmup=2, min_off=5, media_seconds=300) == STUCK_MARGIN_S


# --- the live judge -------------------------------------------------------------------------------------
def _judge(kind="ended", detail="", *, seen=False, now=False, feedback=None):
    return judge(kind, detail, amp_fault_seen=seen, amp_fault_now=now, relay_feedback=feedback)


def test_player_error_fails_with_its_detail():
    assert _judge("error", "open_failed") == (PlayResult.FAILED, "player_error:open_failed")


def test_undecodable_input_fails_as_no_audio_not_as_a_player_error():
    assert _judge("error", "no_audio") == (PlayResult.FAILED, "no_audio")


def test_amp_fault_seen_while_playing_fails_even_if_it_cleared():
    assert _judge(seen=True) == (PlayResult.FAILED, "amp_fault")


def test_amp_fault_active_at_the_end_fails():
    assert _judge(now=True) == (PlayResult.FAILED, "amp_fault")


def test_relay_feedback_saying_open_fails_as_relay_feedback_mismatch():
    assert _judge(feedback=False) == (PlayResult.FAILED, "relay_feedback_mismatch")


def test_no_feedback_input_or_feedback_closed_completes():
    assert _judge(feedback=None) == (PlayResult.COMPLETED, None)
    assert _judge(feedback=True) == (PlayResult.COMPLETED, None)


def test_player_error_wins_over_amp_fault_and_amp_fault_over_feedback():
    assert _judge("error", "x", seen=True, feedback=False) == (PlayResult.FAILED, "player_error:x")
    assert _judge(seen=True, feedback=False) == (PlayResult.FAILED, "amp_fault")


# --- the live record builder ------------------------------------------------------------------------------
def test_record_payload_carries_every_field_of_the_record():
    record = PlayRecord(content_id="tin-sang", sha256=SHA, level="priority", source="schedule",
                        result=PlayResult.STOPPED, command_id=None, slot_id="sang@2026-01-01T00:00:00Z",
                        scheduled_at=100.0, started_at=101.5, ended_at=130.25, seconds_played=28.75, volume=70,
                        relays=[(99.5, "amplifier", True), (101.5, "north", True)], failure_reason="slot_end",
                        title="Tin sáng", id="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    payload = record_payload(record, "27787-01", 131.9)
    assert payload == {
        "v": 1, "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "node": "27787-01", "ts": 131, "kind": "play",
        "content_id": "tin-sang", "sha256": SHA, "level": "priority", "source": "schedule", "command_id": None,
        "slot_id": "sang@2026-01-01T00:00:00Z", "scheduled_at": 100.0, "started_at": 101.5, "ended_at": 130.25,
        "seconds": 28.75, "result": "stopped", "volume": 70,
        "relays": [[99.5, "amp", True], [101.5, "north", True]], "reason": "slot_end", "title": "Tin sáng"}


def test_record_payload_keeps_at_most_64_relay_changes():
    record = PlayRecord("c", SHA, "normal", "command", PlayResult.COMPLETED,
                        relays=[(float(i), "north", bool(i % 2)) for i in range(100)])
    relays = record_payload(record, "n", 0)["relays"]
    assert len(relays) == 64 and relays[0] == [0.0, "north", False]


def test_derived_ids_are_stable_distinct_and_valid_record_ids():
    import re

    a, b = derived_id("n", "cmd-1", 0, 10.0), derived_id("n", "cmd-1", 0, 10.0)
    assert a == b and a != derived_id("n", "cmd-1", 1, 10.0)
    assert re.fullmatch(r"[0-9A-Za-z_-]{16,64}", a) and len(a) == 26


# --- typed queue items ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [
    Bulletin(Clip("tin", SHA, 12.5, 1000, "mp3", "https://x/tin.mp3", 60, ("north",), "Bản tin"), "cmd-1",
             1700000000.0),
    Live("https://x/live", 1700003600.0, 50, 20.0, command_id="cmd-2"),
    Live("https://x/live", 1700003600.0, None, 30.0, slot_id="radio", starts_at=1700000000.0),
    Slot("sang", 1700000000.0, 1700001800.0, 70, (Clip("a", SHA, 10.0), Clip("b", SHA, 20.0, volume=40))),
])
def test_typed_content_round_trips_through_the_journal_form(content):
    item = QueueItem("id-1", Level.NORMAL, "command", content, 3.0, 9.0, 12.5, False, "tin")
    again = QueueItem.from_dict(item.to_dict())
    assert again == item and isinstance(again.content, type(content))


def test_a_slot_entry_takes_the_slot_volume_unless_it_has_its_own():
    slot = Slot("s", 0.0, 60.0, 70, (Clip("a", SHA, 10.0), Clip("b", SHA, 20.0, volume=40)))
    assert [slot.entry(0).volume, slot.entry(1).volume] == [70, 40]


def test_unknown_content_kind_is_refused():
    with pytest.raises(ValueError):
        content_from_dict({"kind": "podcast"})


def test_the_interrupted_record_of_one_journal_row_has_the_same_id_however_often_it_is_built():
    """Two power cuts before the journal is cleared must not give the district two records."""
    from node.service.recorder import Recorder

    item = QueueItem("cmd-9", Level.EMERGENCY, "command", Bulletin(Clip("bao", SHA, 60.0), "cmd-9"), 0.0)
    row = {"state": "sounding", "item": item.to_dict(), "since": 100.0, "entry": Clip("bao", SHA, 60.0).to_dict(),
           "entry_index": None, "entry_started": 102.0, "aired_until": 110.0}
    recorder = Recorder(node_id="n", store=None, reporter=None, wall=lambda: 500.0, default_volume=lambda: 80)
    first, second = recorder.interrupted(row), recorder.interrupted(dict(row))
    assert first.id == second.id
    assert (first.content_id, first.sha256, first.seconds_played, first.ended_at) == ("bao", SHA, 8.0, 110.0)
    later = recorder.interrupted({**row, "since": 900.0, "entry_started": 902.0, "aired_until": 903.0})
    assert later.id != first.id  # the same command on air again after a restart is another play
