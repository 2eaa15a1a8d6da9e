"""Play records round-trip, and the rules that say an item failed to sound."""

from __future__ import annotations

from node.playback.player import PlayerEvent
from node.playback.records import (
    FAIL_AMP_FAULT,
    FAIL_NO_AUDIO,
    FAIL_PLAYER_ERROR,
    FAIL_RELAY_FEEDBACK,
    PlayRecord,
    PlayResult,
    judge_failure,
    relay_changes_during,
)


def ev(kind, detail=""):
    return PlayerEvent("x", kind, detail, 1.0)


def test_record_round_trips_through_json_with_vietnamese_text():
    rec = PlayRecord(content_id="bản-tin-1", sha256="ab" * 32, level="normal", source="command",
                     result=PlayResult.COMPLETED, command_id="cmd-1", started_at=1.5, ended_at=61.5,
                     seconds_played=60.0, volume=80, relays=[(-2.0, "amplifier", True), (0.0, "north", True)])
    again = PlayRecord.from_json(rec.to_json())
    assert again == rec
    assert "bản-tin-1" in rec.to_json()
    assert len(rec.id) == 32 and rec.id != PlayRecord("c", "s", "normal", "command", PlayResult.SKIPPED).id


def test_relay_changes_are_offsets_from_the_start_of_play():
    history = [(90.0, "amplifier", True), (98.0, "amplifier", True), (100.0, "north", True),
               (161.0, "north", False), (300.0, "amplifier", False)]
    assert relay_changes_during(history, 100.0, 161.0, lead=5.0) == [
        (-2.0, "amplifier", True), (0.0, "north", True), (61.0, "north", False)]


def test_ended_cleanly_is_not_a_failure():
    assert judge_failure([ev("playing"), ev("ended")], False, False, True) is None
    assert judge_failure([ev("playing"), ev("ended")], False, False, None) is None


def test_each_failure_to_sound_has_its_reason():
    assert judge_failure([ev("error", "open_failed")], False, False, None) == FAIL_PLAYER_ERROR
    assert judge_failure([ev("playing"), ev("error", "no_audio")], False, False, None) == FAIL_NO_AUDIO
    assert judge_failure([ev("playing"), ev("ended")], False, False, False) == FAIL_NO_AUDIO
    assert judge_failure([ev("playing"), ev("ended")], True, False, True) == FAIL_AMP_FAULT
    assert judge_failure([ev("playing"), ev("ended")], False, True, True) == FAIL_RELAY_FEEDBACK
    assert judge_failure([ev("error")], True, True, False) == FAIL_PLAYER_ERROR  # most specific first
