"""The relay sequencer's whole timeline at its default timings, every boundary instant, and the exact
snapshot it persists: the amplifier relay must neither chatter nor stay on, whatever the order of events."""

import pytest

from node.playback.sequencer import RelayPhase, RelaySequencer


def test_the_default_timeline_to_the_instant():
    seq = RelaySequencer()
    assert seq.snapshot() == {"phase": "off", "deadline": None, "off_since": None, "zones_on": False}
    assert seq.request_play(0.0, ["cho", "dinh"]) == [("amp", True)]
    assert (seq.phase, seq.next_deadline(), seq.amp_on) == (RelayPhase.WARMING, 2.0, True)
    assert seq.tick(1.999) == []
    assert seq.tick(2.0) == [("zones", ["cho", "dinh"], True), ("ready_to_play",)]
    assert seq.snapshot() == {"phase": "playing", "deadline": None, "off_since": None, "zones_on": ["cho", "dinh"]}
    assert seq.playback_finished(10.0) == []
    assert seq.next_deadline() == 11.0
    assert seq.tick(11.0) == [("zones", None, False)]
    assert (seq.phase, seq.next_deadline()) == (RelayPhase.HOLD, 41.0)
    assert seq.tick(41.0) == [("amp", False)]
    assert seq.snapshot() == {"phase": "off", "deadline": None, "off_since": 41.0, "zones_on": False}
    assert seq.amp_on is False
    assert seq.request_play(45.999) == []
    assert (seq.phase, seq.next_deadline()) == (RelayPhase.WAITING, 46.0)


def test_min_off_ends_at_its_instant():
    seq = RelaySequencer()
    seq.request_play(0.0)
    seq.force_off(10.0)
    assert seq.request_play(15.0) == [("amp", True)]


def test_a_repeated_request_while_waiting_starts_once_min_off_has_passed():
    seq = RelaySequencer()
    seq.request_play(0.0)
    seq.force_off(10.0)
    assert seq.request_play(12.0) == []
    assert seq.request_play(15.5) == [("amp", True)]
    assert seq.next_deadline() == 17.0     # warm-up counted from the end of min_off (15.0)


def test_a_request_cancelled_while_waiting_leaves_everything_off():
    seq = RelaySequencer()
    seq.request_play(0.0)
    seq.force_off(10.0)
    seq.request_play(12.0)
    assert seq.playback_finished(13.0) == []
    assert (seq.phase, seq.next_deadline(), seq.amp_on) == (RelayPhase.OFF, None, False)
    assert seq.tick(100.0) == []


def test_all_zones_are_one_relay_command():
    seq = RelaySequencer(warmup=0.0)
    assert seq.request_play(0.0) == [("amp", True), ("zones", None, True), ("ready_to_play",)]
    assert seq.snapshot()["zones_on"] is None


@pytest.mark.parametrize("name", ["warmup", "tail", "idle_hold", "min_off"])
def test_each_negative_timing_is_refused_by_name(name):
    with pytest.raises(ValueError) as info:
        RelaySequencer(**{name: -1.5})
    assert str(info.value) == f"{name} must be >= 0, got -1.5"
    assert getattr(RelaySequencer(**{name: 0.0}), name) == 0.0


def test_one_late_tick_performs_every_step_it_passed_in_order():
    seq = RelaySequencer()
    seq.request_play(0.0)
    seq.force_off(10.0)
    seq.request_play(12.0, ["cho"])
    assert seq.tick(100.0) == [("amp", True), ("zones", ["cho"], True), ("ready_to_play",)]
    seq.playback_finished(110.0)
    assert seq.tick(1000.0) == [("zones", None, False), ("amp", False)]
    assert seq.snapshot() == {"phase": "off", "deadline": None, "off_since": 141.0, "zones_on": False}
