"""ClockTrust (node/trust/time_trust.py) at each of its bounds: anchor age, NTP agreement, RTC and
cellular lead and age, floor correction, drift, in order of the sources, with the exact status it
reports. Pure: readings are fed in, nothing is read from the host."""

import datetime as dt

import pytest

from node.trust.time_trust import ClockPolicy, ClockTrust

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
FLOOR = NOW - dt.timedelta(days=2)
BUILD = dt.datetime(2026, 9, 1, tzinfo=UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
DAY = 86400.0


def s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def test_the_default_policy_is_the_documented_one():
    policy = ClockPolicy()
    assert (policy.signed_max_age_s, policy.drift_ppm, policy.ntp_bound_s, policy.cellular_max_age_s,
            policy.cellular_max_lead_s, policy.rtc_max_age_s, policy.rtc_max_lead_s) == (
        DAY, 100.0, 60.0, 12 * 3600.0, 30 * DAY, 12 * 3600.0, 400 * DAY)


def test_a_new_clock_is_untrusted_with_its_floor_and_no_reading():
    clock = ClockTrust(FLOOR)
    assert (clock.floor, clock.trusted_now(), clock.schedule_now(), clock.conflict) == (FLOOR, None, None, False)
    assert clock.status() == {"trusted": False, "source": None, "offset_s": None, "floor": FLOOR.isoformat(),
                              "note": "no reading yet", "conflict": False}
    assert clock.signed_age(10.0) is None
    assert ClockTrust(FLOOR, build_date=BUILD).floor == FLOOR
    assert ClockTrust(EPOCH, build_date=BUILD).floor == BUILD


# -- signed answers --------------------------------------------------------------------------------------

def test_a_signed_answer_raises_the_floor_to_its_lower_bound_only_when_that_is_higher():
    clock = ClockTrust(FLOOR)
    assert clock.accept_signed(NOW, 10.0, 2.0) is None
    assert clock.floor == NOW - s(2) and clock.signed_age(15.0) == 5.0
    assert clock.accept_signed(NOW - s(1), 20.0, 1.0) is None   # lower bound NOW - 2 s: equal, unchanged
    assert clock.floor == NOW - s(2)


def test_a_floor_ahead_of_a_signed_answer_is_corrected_and_the_correction_returned():
    ahead = ClockTrust(NOW + s(100.2504), build_date=BUILD)
    assert ahead.accept_signed(NOW, 0.0, 1.0) == 100.25
    assert ahead.floor == NOW - s(1)
    no_build = ClockTrust(NOW + s(50))
    assert no_build.accept_signed(NOW, 0.0, 0.5) == 50.0 and no_build.floor == NOW - s(0.5)
    above_build = ClockTrust(BUILD + s(10), build_date=BUILD)
    assert above_build.accept_signed(BUILD, 0.0, 3.0) == 10.0 and above_build.floor == BUILD


def test_a_floor_exactly_at_the_upper_bound_of_a_signed_answer_stands():
    clock = ClockTrust(NOW + s(1))
    assert clock.accept_signed(NOW, 0.0, 1.0) is None
    assert clock.floor == NOW + s(1)


def test_signed_time_runs_on_the_monotonic_clock_until_exactly_its_maximum_age():
    clock = ClockTrust(FLOOR)
    clock.accept_signed(NOW, 100.0, 0.0)
    assert clock.observe(wall=EPOCH, monotonic=100.0 + DAY, ntp_synced=False) == NOW + s(DAY)
    assert clock.status()["source"] == "signed" and clock.status()["note"] == "signed district time"
    assert clock.observe(wall=EPOCH, monotonic=100.0 + DAY + 1, ntp_synced=False) is None
    assert clock.observe(wall=EPOCH, monotonic=99.0, ntp_synced=False) is None    # monotonic went back: a reboot
    short = ClockTrust(FLOOR, policy=ClockPolicy(signed_max_age_s=10))
    short.accept_signed(NOW, 0.0, 0.0)
    assert short.observe(wall=EPOCH, monotonic=10.0, ntp_synced=False) == NOW + s(10)
    assert short.observe(wall=EPOCH, monotonic=11.0, ntp_synced=False) is None


def test_the_floor_follows_signed_time_less_its_uncertainty_and_drift():
    clock = ClockTrust(FLOOR, policy=ClockPolicy(drift_ppm=1000.0))
    clock.accept_signed(NOW, 0.0, 2.0)
    clock.observe(wall=EPOCH, monotonic=1000.0, ntp_synced=False)
    assert clock.floor == NOW + s(1000 - 2.0 - 1.0)   # 1000 s at 1000 ppm: 1 s of drift


# -- NTP against signed time ------------------------------------------------------------------------------

def test_ntp_that_agrees_with_signed_time_within_the_bound_plus_uncertainty_is_used():
    clock = ClockTrust(FLOOR, policy=ClockPolicy(drift_ppm=0.0))
    clock.accept_signed(NOW, 0.0, 5.0)
    wall = NOW + s(65)       # exactly bound (60) + uncertainty (5) ahead
    assert clock.observe(wall=wall, monotonic=0.0, ntp_synced=True) == wall
    assert clock.status() == {"trusted": True, "source": "ntp", "offset_s": 0.0, "floor": (NOW - s(5)).isoformat(),
                              "note": "NTP synchronised, agrees with signed time", "conflict": False}
    behind = NOW - s(65)
    assert clock.observe(wall=behind, monotonic=0.0, ntp_synced=True) == behind


def test_ntp_beyond_the_bound_loses_to_signed_time_and_raises_the_conflict():
    clock = ClockTrust(FLOOR, policy=ClockPolicy(drift_ppm=0.0))
    clock.accept_signed(NOW, 0.0, 5.0)
    wall = NOW + s(65.25)
    assert clock.observe(wall=wall, monotonic=0.0, ntp_synced=True) == NOW
    assert (clock.conflict, clock.conflict_s) == (True, 65.25)
    status = clock.status()
    assert (status["source"], status["offset_s"], status["note"]) == (
        "signed", -65.25, "NTP is +65 s off signed time: using signed time")
    assert clock.observe(wall=NOW - s(70), monotonic=0.0, ntp_synced=True) == NOW
    assert clock.conflict_s == -70.0 and clock.status()["note"] == "NTP is -70 s off signed time: using signed time"
    assert clock.observe(wall=NOW, monotonic=0.0, ntp_synced=True) == NOW and clock.conflict_s is None
    clock.observe(wall=NOW + s(65.2468), monotonic=0.0, ntp_synced=True)
    assert clock.conflict_s == 65.247
    clock.observe(wall=wall, monotonic=0.0, ntp_synced=True)
    assert clock.observe(wall=wall, monotonic=0.0, ntp_synced=False) == NOW and clock.conflict is False


def test_ntp_alone_counts_from_exactly_the_floor():
    clock = ClockTrust(FLOOR)
    assert clock.observe(wall=FLOOR, monotonic=0.0, ntp_synced=True) == FLOOR
    assert clock.status()["note"] == "NTP synchronised (no signed time yet)"
    assert clock.observe(wall=FLOOR - s(1), monotonic=0.0, ntp_synced=True) is None
    assert clock.status()["note"] == "NTP clock is below the trusted floor"
    assert clock.observe(wall=NOW, monotonic=0.0, ntp_synced=False) is None
    assert clock.status()["note"] == "no signed, NTP, RTC or cellular time"
    assert clock.floor == FLOOR


# -- bounded sources: RTC first, then cellular -------------------------------------------------------------

@pytest.mark.parametrize("source,lead_s,age_s", [("rtc", 400 * DAY, 12 * 3600.0), ("cellular", 30 * DAY, 12 * 3600.0)])
def test_a_bounded_source_is_trusted_from_the_floor_to_its_lead_and_for_its_age(source, lead_s, age_s):
    def reading(value, monotonic=0.0, read_at=0.0):
        clock = ClockTrust(FLOOR)
        clock.observe(wall=EPOCH, monotonic=read_at, ntp_synced=False, **{source: value})
        return clock, clock.observe(wall=EPOCH, monotonic=monotonic, ntp_synced=False)

    clock, now = reading(FLOOR)
    assert now == FLOOR and clock.status()["source"] == source
    assert reading(FLOOR + s(lead_s))[1] == FLOOR + s(lead_s)
    clock, now = reading(FLOOR + s(lead_s + 1))
    assert now is None and clock.status()["note"] == "RTC/cellular time outside [floor, floor + max lead]"
    assert clock.schedule_now() == FLOOR + s(lead_s + 1)        # still plays the schedule in force
    clock, now = reading(FLOOR - s(1))
    assert now is None and clock.schedule_now() is None
    assert reading(NOW, monotonic=age_s)[1] == NOW + s(age_s)
    clock, now = reading(NOW, monotonic=age_s + 1)
    assert now is None and clock.schedule_now() is None
    assert clock.status()["note"] == "no signed, NTP, RTC or cellular time"
    assert reading(NOW, monotonic=5.0, read_at=10.0)[1] is None
    assert clock.floor == FLOOR


def test_the_rtc_wins_over_cellular_and_cellular_stands_in_for_an_rtc_out_of_bounds():
    clock = ClockTrust(FLOOR)
    clock.observe(wall=EPOCH, monotonic=0.0, ntp_synced=False, rtc=NOW, cellular=NOW + s(5))
    assert clock.trusted_now() == NOW and clock.status()["source"] == "rtc"
    assert clock.status()["note"] == "hardware clock within bounds"
    clock.observe(wall=EPOCH, monotonic=0.0, ntp_synced=False, rtc=FLOOR - s(1))
    assert clock.trusted_now() == NOW + s(5) and clock.status()["source"] == "cellular"
    assert clock.status()["note"] == "cellular network time within bounds"


def test_schedule_time_prefers_the_trusted_time_then_the_rtc_then_cellular():
    far = FLOOR + s(500 * DAY)
    clock = ClockTrust(FLOOR)
    clock.observe(wall=EPOCH, monotonic=0.0, ntp_synced=False, rtc=far, cellular=far + s(7))
    assert (clock.trusted_now(), clock.schedule_now()) == (None, far)
    clock.observe(wall=EPOCH, monotonic=0.0, ntp_synced=False, rtc=FLOOR - s(1))
    assert clock.schedule_now() == far + s(7)
    clock.observe(wall=NOW, monotonic=0.0, ntp_synced=True)
    assert clock.schedule_now() == clock.trusted_now() == NOW


def test_a_bounded_or_ntp_source_never_raises_the_floor_but_signed_time_under_ntp_does():
    clock = ClockTrust(FLOOR, policy=ClockPolicy(drift_ppm=0.0))
    clock.observe(wall=NOW, monotonic=0.0, ntp_synced=True, rtc=NOW, cellular=NOW)
    assert clock.floor == FLOOR
    clock.accept_signed(NOW - s(3600), 0.0, 0.0)
    assert clock.floor == NOW - s(3600)
    clock.observe(wall=NOW - s(3600) + s(100), monotonic=100.0, ntp_synced=True)
    assert clock.status()["source"] == "ntp" and clock.floor == NOW - s(3500)


def test_status_reports_the_offset_of_trusted_time_from_the_wall_clock():
    clock = ClockTrust(FLOOR)
    clock.accept_signed(NOW, 0.0, 0.0)
    clock.observe(wall=NOW - s(12.3456), monotonic=0.0, ntp_synced=False)
    assert clock.status()["offset_s"] == 12.346
    assert clock.status()["trusted"] is True


def test_a_signed_time_whose_lower_bound_equals_the_floor_leaves_the_persisted_floor_as_it_was():
    plus7 = dt.timezone(dt.timedelta(hours=7))
    floor = NOW.astimezone(plus7)
    clock = ClockTrust(floor, policy=ClockPolicy(drift_ppm=0.0))
    assert clock.accept_signed(NOW + s(1), 0.0, 1.0) is None          # lower bound == floor
    assert clock.status()["floor"] == "2026-11-26T12:30:00+07:00"
    clock = ClockTrust(floor, policy=ClockPolicy(drift_ppm=0.0))
    clock.accept_signed(NOW - s(0.5), 0.0, 1.0)                      # lower bound 1.5 s below the floor
    clock.observe(wall=EPOCH, monotonic=1.5, ntp_synced=False)      # now exactly at the floor + uncertainty
    assert clock.status()["floor"] == "2026-11-26T12:30:00+07:00"
    clock.observe(wall=EPOCH, monotonic=2.5, ntp_synced=False)
    assert clock.floor == NOW + s(1)


def test_a_looser_agreeing_answer_keeps_the_tighter_anchor_up_to_the_edge_of_agreement():
    def clock_after(time, uncertainty):
        clock = ClockTrust(FLOOR, policy=ClockPolicy(drift_ppm=0.0))
        clock.accept_signed(NOW, 0.0, 1.0)                   # held at monotonic 10: NOW + 10 s, ±1 s
        clock.accept_signed(time, 10.0, uncertainty)
        return clock.observe(wall=EPOCH, monotonic=10.0, ntp_synced=False)

    held = NOW + s(10)
    assert clock_after(held + s(3), 2.0) == held                # 3 s apart = 2 + 1: agrees, looser: kept
    assert clock_after(held + s(3.5), 2.0) == held + s(3.5)     # beyond agreement: the new answer wins
    assert clock_after(held + s(0.5), 1.0) == held + s(0.5)     # as tight as the held one: the newer wins
