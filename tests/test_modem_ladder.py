"""The recovery ladder: waits, climbs one rung at a time, never hammers a step, reports the outage once."""

import datetime as dt

import pytest

from node.modem.status import ModemStatus
from node.modem.supervision import RecoveryLadder, network_time_bound


def run(ladder, start, end, *, registered=False, step=1.0):
    """Poll every `step` seconds with the link down; return [(time, action)] for actions taken."""
    actions, now = [], start
    while now <= end:
        action = ladder.observe(now, registered=registered, broker_connected=False)
        if action:
            actions.append((now, action))
        now += step
    return actions


def test_nothing_happens_before_no_link_after():
    ladder = RecoveryLadder(no_link_after=300, has_power_cycle=True)
    assert run(ladder, 0, 299) == []


def test_ladder_climbs_one_step_after_each_interval():
    ladder = RecoveryLadder(no_link_after=300, has_power_cycle=True)
    actions = run(ladder, 0, 300 + 60 + 600 + 1800 + 3600 + 3600, step=5)
    assert actions == [
        (300, "requery"),
        (360, "cfun_reset"),
        (960, "power_cycle"),
        (2760, "reboot"),
        (6360, "reboot"),
        (9960, "reboot"),
    ]


def test_each_step_is_rate_limited_even_when_polled_often():
    ladder = RecoveryLadder(no_link_after=10, step_intervals={"requery": 30, "cfun_reset": 100})
    actions = run(ladder, 0, 139, step=0.5)
    assert [a for _, a in actions] == ["requery", "cfun_reset"]
    assert actions[1][0] - actions[0][0] == 30


def test_without_power_switch_the_ladder_skips_power_cycle():
    ladder = RecoveryLadder(
        no_link_after=0, step_intervals={"requery": 1, "cfun_reset": 1, "reboot": 1}, has_power_cycle=False
    )
    assert [a for _, a in run(ladder, 0, 3)] == ["requery", "cfun_reset", "reboot", "reboot"]


def test_registered_modem_with_broker_down_stops_at_cfun_reset():
    # The district server may be the one that is down: do not reboot every node in the province.
    ladder = RecoveryLadder(
        no_link_after=0, step_intervals={"requery": 1, "cfun_reset": 10}, has_power_cycle=True
    )
    assert [a for _, a in run(ladder, 0, 40, registered=True)] == [
        "requery",
        "cfun_reset",
        "cfun_reset",
        "cfun_reset",
        "cfun_reset",
    ]


def test_link_return_resets_the_ladder_and_reports_once():
    ladder = RecoveryLadder(no_link_after=300, has_power_cycle=True)
    run(ladder, 0, 400)
    assert ladder.observe(1000, registered=True, broker_connected=True) is None
    assert ladder.take_events() == [
        {"type": "link_restored", "down_s": 1000.0, "steps": ["requery", "cfun_reset"]}
    ]
    assert ladder.observe(1001, registered=True, broker_connected=True) is None
    assert ladder.take_events() == []
    # A new outage starts from the bottom rung and waits no_link_after again.
    assert run(ladder, 2000, 2299) == []
    assert ladder.observe(2300, registered=False, broker_connected=False) == "requery"


def test_short_blip_is_not_reported():
    ladder = RecoveryLadder(no_link_after=300, min_report_s=30)
    ladder.observe(0, registered=True, broker_connected=False)
    ladder.observe(5, registered=True, broker_connected=True)
    assert ladder.take_events() == []


def test_unknown_step_name_is_a_misuse():
    with pytest.raises(ValueError):
        RecoveryLadder(step_intervals={"reboot_now": 1})


def test_network_time_bound_from_status_and_dict():
    status = ModemStatus(network_time="2026-11-26T12:30:00+07:00")
    expected = dt.datetime(2026, 11, 26, 5, 30, tzinfo=dt.timezone.utc)
    assert network_time_bound(status) == expected
    assert network_time_bound(status.to_json()) == expected
    assert network_time_bound(ModemStatus()) is None
    assert network_time_bound({"network_time": "1980-01-06T00:00:12+00:00"}) is None
    assert network_time_bound({"network_time": "garbage"}) is None
