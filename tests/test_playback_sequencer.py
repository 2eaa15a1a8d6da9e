"""Relay timing: exact order and times, no chatter, min_off honoured. Pure, simulated time."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from node.playback.relays import RelayBoard, RelaySpec
from node.playback.sequencer import RelayPhase, RelaySequencer


class Rig:
    """Drives a sequencer like the loop does and logs (time, action)."""

    def __init__(self, **timing):
        self.seq = RelaySequencer(**timing)
        self.log: list[tuple[float, tuple]] = []

    def run_until(self, t: float) -> None:
        while (deadline := self.seq.next_deadline()) is not None and deadline <= t:
            self._record(deadline, self.seq.tick(deadline))

    def do(self, t: float, method: str, *args) -> None:
        self.run_until(t)
        self._record(t, getattr(self.seq, method)(t, *args))

    def _record(self, t: float, actions: list[tuple]) -> None:
        self.log += [(t, action) for action in actions]


def test_single_item_exact_sequence_and_timings():
    rig = Rig(warmup=2.0, tail=1.0, idle_hold=30.0, min_off=5.0)
    rig.do(100.0, "request_play", None)
    rig.run_until(102.0)
    rig.do(112.0, "playback_finished")  # a 10 s bulletin
    rig.run_until(1000.0)
    assert rig.log == [
        (100.0, ("amp", True)),
        (102.0, ("zones", None, True)),
        (102.0, ("ready_to_play",)),
        (113.0, ("zones", None, False)),
        (143.0, ("amp", False)),
    ]
    assert rig.seq.phase is RelayPhase.OFF and rig.seq.next_deadline() is None


def test_back_to_back_items_do_not_chatter_the_amplifier():
    rig = Rig(warmup=2.0, tail=1.0, idle_hold=30.0, min_off=5.0)
    rig.do(0.0, "request_play", ["north"])
    rig.do(10.0, "playback_finished")
    rig.do(10.5, "request_play", ["north"])  # next item inside the tail: zones stay on, no warm-up
    rig.do(20.0, "playback_finished")
    rig.do(40.0, "request_play", ["north"])  # inside the idle hold: amp still on, no warm-up
    rig.do(50.0, "playback_finished")
    rig.run_until(1000.0)
    assert [a for _, a in rig.log].count(("amp", True)) == 1
    assert rig.log == [
        (0.0, ("amp", True)),
        (2.0, ("zones", ["north"], True)),
        (2.0, ("ready_to_play",)),
        (10.5, ("ready_to_play",)),
        (21.0, ("zones", None, False)),
        (40.0, ("zones", ["north"], True)),
        (40.0, ("ready_to_play",)),
        (51.0, ("zones", None, False)),
        (81.0, ("amp", False)),
    ]


def test_request_during_min_off_waits_then_warms_up():
    rig = Rig(warmup=2.0, tail=1.0, idle_hold=0.0, min_off=5.0)
    rig.do(0.0, "request_play", None)
    rig.do(5.0, "playback_finished")
    rig.do(7.0, "request_play", None)  # amp went off at 6.0; may not switch on before 11.0
    rig.run_until(100.0)
    assert rig.log == [
        (0.0, ("amp", True)),
        (2.0, ("zones", None, True)),
        (2.0, ("ready_to_play",)),
        (6.0, ("zones", None, False)),
        (6.0, ("amp", False)),
        (11.0, ("amp", True)),
        (13.0, ("zones", None, True)),
        (13.0, ("ready_to_play",)),
    ]


def test_preemption_with_other_zones_swaps_zones_without_touching_the_amp():
    rig = Rig()
    rig.do(0.0, "request_play", ["north"])
    rig.do(5.0, "request_play", None)  # emergency on every zone replaces the running item
    assert rig.log[-3:] == [(5.0, ("zones", None, False)), (5.0, ("zones", None, True)),
                            (5.0, ("ready_to_play",))]
    assert [a for _, a in rig.log].count(("amp", True)) == 1


def test_cancel_during_warmup_holds_then_switches_off():
    rig = Rig(warmup=2.0, idle_hold=30.0)
    rig.do(0.0, "request_play", None)
    rig.do(1.0, "playback_finished")  # stopped before it was ready
    rig.run_until(100.0)
    assert rig.log == [(0.0, ("amp", True)), (31.0, ("amp", False))]


def test_force_off_switches_everything_and_starts_min_off():
    rig = Rig(min_off=5.0)
    rig.do(0.0, "request_play", None)
    rig.run_until(3.0)
    rig.do(4.0, "force_off")
    assert rig.log[-2:] == [(4.0, ("zones", None, False)), (4.0, ("amp", False))]
    rig.do(6.0, "request_play", None)
    rig.run_until(20.0)
    assert [t for t, a in rig.log if a == ("amp", True)] == [0.0, 9.0]


def test_zero_warmup_is_ready_at_once():
    rig = Rig(warmup=0.0)
    rig.do(0.0, "request_play", None)
    assert rig.log == [(0.0, ("amp", True)), (0.0, ("zones", None, True)), (0.0, ("ready_to_play",))]


def test_negative_timing_is_refused():
    with pytest.raises(ValueError):
        RelaySequencer(warmup=-1)


def test_sequencer_actions_drive_real_relay_pins():
    factory = MockFactory()
    try:
        board = RelayBoard(RelaySpec(17), {"north": RelaySpec(27)}, pin_factory=factory)
        seq = RelaySequencer(warmup=2.0, tail=1.0, idle_hold=0.0, min_off=5.0)
        apply = {"amp": lambda on: board.amp_on() if on else board.amp_off()}
        for t, actions in [(0.0, seq.request_play(0.0, None)), (2.0, seq.tick(2.0)),
                           (9.0, seq.playback_finished(9.0)), (10.0, seq.tick(10.0))]:
            for action in actions:
                if action[0] == "amp":
                    apply["amp"](action[1])
                elif action[0] == "zones":
                    board.zones_on(action[1]) if action[2] else board.zones_off()
        assert [s.state for s in factory.pin(17).states] == [False, True, False]
        assert [s.state for s in factory.pin(27).states] == [False, True, False]
        board.close()
    finally:
        factory.reset()
