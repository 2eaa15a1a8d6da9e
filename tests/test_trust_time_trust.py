"""Clock attacks and faults, on the pure ClockTrust: 1970 boots, clocks years ahead, NTP that lies,
a floor pushed ahead by older firmware, lying cellular time, an RTC, retired beacons."""

import datetime as dt

from trust_fixtures import TRUST, V

from node.trust.time_trust import ClockPolicy, ClockTrust
from node.trust.verifier import Accepted, Rejected, verify_command

UTC = dt.timezone.utc
NOW = V.NOW
FLOOR = NOW - dt.timedelta(days=2)          # last trusted time this node saw
BUILD = dt.datetime(2026, 9, 1, tzinfo=UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
FIVE_YEARS_AHEAD = NOW + dt.timedelta(days=5 * 365)
TEN_YEARS_AHEAD = NOW + dt.timedelta(days=3652)


def clock(floor=FLOOR, **kw):
    return ClockTrust(floor, build_date=BUILD, **kw)


def verify(envelope, now):
    return verify_command(envelope, trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC,
                          now=now, seen=set(), versions={})


# A command that expired a day before NOW: a 1970 clock would see it as "not yet valid", a clock stuck in
# the past as fresh. Also one valid right now.
EXPIRED = V.sign(V.command("play", V.play_body(), cid="expired-yesterday-001",
                           not_before=NOW - dt.timedelta(days=2), expires=NOW - dt.timedelta(days=1)),
                 ["bulletin"])
FRESH = V.sign(V.command("play", V.play_body(), cid="fresh-right-now-00001"), ["bulletin"])


def test_boot_at_1970_is_untrusted_even_when_ntp_claims_sync_and_nothing_expired_is_accepted():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=5.0, ntp_synced=True) is None
    assert verify(EXPIRED, c.trusted_now()).reason == "clock_untrusted"
    assert verify(FRESH, c.trusted_now()).reason == "clock_untrusted"


def test_clock_five_years_ahead_without_ntp_signed_rtc_or_cellular_is_untrusted():
    c = clock()
    assert c.observe(wall=FIVE_YEARS_AHEAD, monotonic=5.0, ntp_synced=False) is None
    assert c.status()["trusted"] is False


def test_ntp_alone_is_trusted_above_the_floor_but_never_raises_the_floor():
    c = clock()
    assert c.observe(wall=NOW, monotonic=5.0, ntp_synced=True) == NOW
    assert c.status()["source"] == "ntp"
    assert c.floor == FLOOR


def test_floor_is_never_below_the_build_date():
    assert ClockTrust(EPOCH, build_date=BUILD).floor == BUILD


def test_signed_time_sets_time_on_a_1970_boot_and_expired_content_stays_rejected():
    c = clock()
    c.observe(wall=EPOCH, monotonic=100.0, ntp_synced=False)
    c.accept_signed(NOW, monotonic=100.0, uncertainty_s=0.5)
    now = c.observe(wall=EPOCH + dt.timedelta(seconds=60), monotonic=160.0, ntp_synced=False)
    assert now == NOW + dt.timedelta(seconds=60)
    assert c.status()["source"] == "signed"
    assert verify(EXPIRED, now).reason == "expired"
    assert isinstance(verify(FRESH, now), Accepted)


def test_signed_time_raises_the_floor_by_monotonic_time_minus_its_uncertainty():
    c = clock()
    c.accept_signed(NOW, monotonic=0.0, uncertainty_s=1.0)
    assert c.floor == NOW - dt.timedelta(seconds=1)
    c.observe(wall=EPOCH, monotonic=600.0, ntp_synced=False)
    drift = 600 * 100e-6
    assert c.floor == NOW + dt.timedelta(seconds=600 - 1.0 - drift)


def test_ntp_ten_years_ahead_loses_to_signed_time_and_raises_clock_conflict():
    c = clock()
    c.accept_signed(NOW, monotonic=0.0, uncertainty_s=0.5)
    assert c.observe(wall=TEN_YEARS_AHEAD, monotonic=10.0, ntp_synced=True) == NOW + dt.timedelta(seconds=10)
    assert c.status()["source"] == "signed" and c.conflict and c.status()["conflict"] is True
    assert c.floor < NOW + dt.timedelta(seconds=11)          # NTP moved nothing
    assert isinstance(verify(FRESH, c.trusted_now()), Accepted)
    # NTP comes back to its senses: fine-grained NTP time again, alarm cleared.
    assert c.observe(wall=NOW + dt.timedelta(seconds=21), monotonic=20.0, ntp_synced=True) == \
        NOW + dt.timedelta(seconds=21)
    assert c.status()["source"] == "ntp" and not c.conflict


def test_ntp_within_the_bound_of_signed_time_is_used_and_cannot_push_the_floor_past_signed_plus_bound():
    policy = ClockPolicy(ntp_bound_s=60)
    c = clock(policy=policy)
    c.accept_signed(NOW, monotonic=0.0, uncertainty_s=0.5)
    for mono in range(60, 4200, 60):     # NTP creeps 1 s ahead per minute, always "synchronised"
        c.observe(wall=NOW + dt.timedelta(seconds=mono * 61 / 60), monotonic=float(mono), ntp_synced=True)
        signed = NOW + dt.timedelta(seconds=mono)
        assert c.floor <= signed
    assert c.conflict                   # once it was more than 60 s off, signed time took over


def test_floor_ten_years_ahead_saved_by_old_firmware_is_corrected_by_a_fresh_signed_answer():
    c = clock(floor=TEN_YEARS_AHEAD)
    assert c.observe(wall=NOW, monotonic=1.0, ntp_synced=True) is None    # below the (wrong) floor
    corrected = c.accept_signed(NOW, monotonic=1.0, uncertainty_s=0.5)
    assert corrected is not None and corrected > 3600 * 24 * 3000
    assert c.floor == NOW - dt.timedelta(seconds=0.5)
    assert c.observe(wall=NOW, monotonic=2.0, ntp_synced=True) == NOW
    assert isinstance(verify(FRESH, c.trusted_now()), Accepted)


def test_no_sequence_of_wrong_ntp_answers_moves_the_floor_without_signed_time():
    c = clock()
    for step, wall in enumerate([TEN_YEARS_AHEAD, FIVE_YEARS_AHEAD, EPOCH, NOW + dt.timedelta(days=400)]):
        c.observe(wall=wall, monotonic=float(step), ntp_synced=True)
    assert c.floor == FLOOR


def test_stale_signed_time_stops_being_a_source():
    c = clock(policy=ClockPolicy(signed_max_age_s=3600))
    c.accept_signed(NOW, monotonic=0.0, uncertainty_s=0.5)
    assert c.observe(wall=EPOCH, monotonic=3000.0, ntp_synced=False) is not None
    assert c.observe(wall=EPOCH, monotonic=4000.0, ntp_synced=False) is None


def test_cellular_time_within_bounds_is_used_but_does_not_raise_the_floor():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=NOW) == NOW
    assert c.status()["source"] == "cellular"
    assert c.floor == FLOOR


def test_cellular_time_years_ahead_or_below_the_floor_is_refused():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=FIVE_YEARS_AHEAD) is None
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=EPOCH) is None


def test_rtc_within_bounds_is_trusted_and_ahead_of_them_is_not():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, rtc=NOW) == NOW
    assert c.status()["source"] == "rtc" and c.floor == FLOOR
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, rtc=FIVE_YEARS_AHEAD) is None


def test_cellular_time_after_a_40_day_outage_still_plays_the_schedule_but_admits_no_command():
    c = clock(floor=NOW - dt.timedelta(days=40))
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=NOW) is None
    assert c.trusted_now() is None and c.schedule_now() == NOW
    assert verify(FRESH, c.trusted_now()).reason == "clock_untrusted"


def test_schedule_time_is_never_below_the_floor():
    c = clock()
    c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=FLOOR - dt.timedelta(days=1))
    assert c.schedule_now() is None


def test_a_signed_time_beacon_command_is_retired_and_never_accepted():
    beacon = V.sign(V.command("time", {"time": V.format_time(NOW)}, cid="time-beacon-000000001",
                              not_before=NOW - dt.timedelta(seconds=5), expires=NOW + dt.timedelta(minutes=5)),
                    ["schedule"])
    for now in (None, NOW):
        result = verify(beacon, now)
        assert isinstance(result, Rejected) and result.reason == "unsupported_type"


def test_a_looser_answer_that_agrees_does_not_widen_the_uncertainty_but_one_that_disagrees_wins():
    c = ClockTrust(NOW - dt.timedelta(days=1), build_date=BUILD)
    c.accept_signed(NOW, 100.0, 0.3)
    c.accept_signed(NOW + dt.timedelta(seconds=10.5), 110.0, 4.2)    # slow round trip, same time give or take
    assert c._signed_now(110.0)[1] < 0.31                            # noqa: SLF001 - the anchor kept is the tight one
    c.accept_signed(NOW + dt.timedelta(seconds=200), 120.0, 4.2)     # disagrees beyond both bounds: signed, newest
    assert c._signed_now(120.0)[0] == NOW + dt.timedelta(seconds=200)  # noqa: SLF001
