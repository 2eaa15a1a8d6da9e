"""Clock attacks and faults: 1970 boots, clocks years ahead, replayed beacons, lying cellular time."""

import datetime as dt

import pytest
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust.time_trust import ClockPolicy, ClockTrust
from node.trust.trustdoc import load_trust_file
from node.trust.verifier import Accepted, Rejected, verify_command

UTC = dt.timezone.utc
NOW = V.NOW
FLOOR = NOW - dt.timedelta(days=2)          # last trusted time this node saw
BUILD = dt.datetime(2026, 9, 1, tzinfo=UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
FIVE_YEARS_AHEAD = NOW + dt.timedelta(days=5 * 365)


def clock(**kw):
    return ClockTrust(FLOOR, build_date=BUILD, **kw)


def verify(envelope, now, floor=None):
    return verify_command(envelope, trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC,
                          now=now, seen=set(), versions={}, floor=floor)


# A command that expired a day before NOW: a 1970 clock would see it as "not yet valid", a clock stuck in
# the past (a replayed beacon) as fresh. Also one valid only in the future.
EXPIRED = V.sign(V.command("play", V.play_body(), cid="expired-yesterday-001",
                           not_before=NOW - dt.timedelta(days=2), expires=NOW - dt.timedelta(days=1)),
                 ["bulletin"])
FRESH = V.sign(V.command("play", V.play_body(), cid="fresh-right-now-00001"), ["bulletin"])


def beacon(at, cid="time-beacon-000000001", signers=("schedule",)):
    body = {"time": V.format_time(at)}
    return V.sign(V.command("time", body, cid=cid, not_before=at - dt.timedelta(seconds=5),
                            expires=at + dt.timedelta(minutes=5)), list(signers))


def test_boot_at_1970_is_untrusted_even_when_ntp_claims_sync_and_nothing_expired_is_accepted():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=5.0, ntp_synced=True) is None
    assert c.status()["trusted"] is False
    for envelope in (EXPIRED, FRESH):
        assert verify(envelope, c.trusted_now()).reason == "clock_untrusted"


def test_clock_five_years_ahead_without_ntp_beacon_or_cellular_is_untrusted():
    c = clock()
    assert c.observe(wall=FIVE_YEARS_AHEAD, monotonic=5.0, ntp_synced=False) is None
    assert verify(EXPIRED, c.trusted_now()).reason == "clock_untrusted"
    assert verify(FRESH, c.trusted_now()).reason == "clock_untrusted"
    assert c.floor == FLOOR  # an untrusted reading never moves the floor


def test_ntp_synchronised_clock_is_trusted_and_raises_the_floor():
    c = clock()
    assert c.observe(wall=NOW, monotonic=5.0, ntp_synced=True) == NOW
    assert c.status() | {"note": ""} == {"trusted": True, "source": "ntp", "offset_s": 0.0,
                                         "floor": NOW.isoformat(), "note": ""}
    assert c.floor == NOW
    assert isinstance(verify(FRESH, c.trusted_now()), Accepted)
    assert verify(EXPIRED, c.trusted_now()).reason == "expired"


def test_floor_is_never_below_the_build_date():
    assert ClockTrust(EPOCH, build_date=BUILD).floor == BUILD


def test_beacon_sets_time_on_a_1970_boot_and_expired_content_stays_rejected():
    c = clock()
    c.observe(wall=EPOCH, monotonic=100.0, ntp_synced=False)
    decision = verify(beacon(NOW), now=None, floor=c.floor)
    assert isinstance(decision, Accepted)
    c.accept_beacon(decision.command.body.time, monotonic=100.0)
    now = c.observe(wall=EPOCH + dt.timedelta(seconds=60), monotonic=160.0, ntp_synced=False)
    assert now == NOW + dt.timedelta(seconds=60)
    assert c.status()["source"] == "beacon"
    assert verify(EXPIRED, now).reason == "expired"
    assert isinstance(verify(FRESH, now), Accepted)


def test_beacon_replayed_below_the_floor_is_rejected_by_verifier_and_clock():
    old = NOW - dt.timedelta(days=10)
    assert verify(beacon(old), now=None, floor=FLOOR).reason == "beacon_too_old"
    with pytest.raises(RemoteDataError) as info:
        clock().accept_beacon(old, monotonic=1.0)
    assert info.value.reason == "beacon_too_old"


def test_beacon_older_than_the_one_in_use_is_rejected():
    c = clock()
    c.accept_beacon(NOW, monotonic=10.0)
    with pytest.raises(RemoteDataError):
        c.accept_beacon(NOW - dt.timedelta(hours=1), monotonic=20.0)


def test_forged_beacon_is_rejected():
    forged = beacon(NOW + dt.timedelta(days=365), signers=("stranger",))
    assert verify(forged, now=None, floor=FLOOR).reason == "unknown_key"
    by_bulletin = beacon(NOW, signers=("bulletin",))
    assert verify(by_bulletin, now=None, floor=FLOOR).reason == "role_not_allowed"


def test_beacon_signed_by_a_time_key_expired_at_the_beacon_time_is_rejected():
    body = V.trust_body()
    body["keys"][V.keyid("schedule")]["expires"] = "2026-11-27T00:00:00Z"
    trust = load_trust_file(V.trust_envelope(body))
    decision = verify_command(beacon(NOW + dt.timedelta(days=2)), trust=trust, node_id=V.NODE_ID,
                              groups=V.GROUPS, topic=V.OWN_TOPIC, now=None, floor=FLOOR)
    assert isinstance(decision, Rejected)
    assert decision.reason == "key_expired"


def test_stale_beacon_stops_being_a_source():
    c = clock(policy=ClockPolicy(beacon_max_age_s=3600))
    c.accept_beacon(NOW, monotonic=0.0)
    assert c.observe(wall=EPOCH, monotonic=3000.0, ntp_synced=False) is not None
    assert c.observe(wall=EPOCH, monotonic=4000.0, ntp_synced=False) is None


def test_signed_beacon_beats_ntp_that_disagrees():
    c = clock()
    c.accept_beacon(NOW, monotonic=0.0)
    assert c.observe(wall=FIVE_YEARS_AHEAD, monotonic=10.0, ntp_synced=True) == NOW + dt.timedelta(seconds=10)
    assert c.status()["source"] == "beacon"
    assert c.floor < FIVE_YEARS_AHEAD


def test_cellular_time_within_bounds_is_used_but_does_not_raise_the_floor():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=NOW) == NOW
    assert c.status()["source"] == "cellular"
    assert c.floor == FLOOR
    assert verify(EXPIRED, c.trusted_now()).reason == "expired"


def test_cellular_time_years_ahead_or_below_the_floor_is_refused():
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=FIVE_YEARS_AHEAD) is None
    c = clock()
    assert c.observe(wall=EPOCH, monotonic=1.0, ntp_synced=False, cellular=EPOCH) is None
