"""The verifier at its edges: each boundary (skew, expiry, validity cap, key validity, reset epoch,
thresholds) one step inside and one step outside, which problem wins when several signatures fail,
and the exact fields of each decision. Pure: fixed keys from tests/vectors/make_vectors.py, no IO.

Time beacons (`time` commands) are left to tests/test_trust_time_trust.py: their verifier branch is
being retired (issue 9).
"""

import base64
import datetime as dt
import inspect
import json

import pytest
from trust_fixtures import TRUST, V

from node.trust.commands import Limits
from node.trust.trustdoc import load_trust_file
from node.trust.verifier import (
    Accepted,
    Rejected,
    TrustAccepted,
    reject,
    required_roles,
    verify_command,
    verify_message,
    verify_stored,
)

NOW = V.NOW
S = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)


def verify(envelope, **overrides):
    kwargs = dict(trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC, now=NOW, seen=set(),
                  versions={"schedule": 4, "config": 7})
    kwargs.update(overrides)
    return verify_command(envelope, **kwargs)


def play(cid="edge-test-play-000001", level="normal", signers=("bulletin",), **kw):
    return V.sign(V.command("play", V.play_body(level), cid=cid, **kw), list(signers))


def signed(kind, body, signers, cid="edge-test-command-0001", **kw):
    return V.sign(V.command(kind, body, cid=cid, **kw), list(signers))


def trust_with(change) -> object:
    """A trust document like the provisioned one with one change (signed by the same roots)."""
    body = V.trust_body()
    change(body)
    return load_trust_file(V.trust_envelope(body))


def key_entry(body, name):
    return body["keys"][V.keyid(name)]


def rejected(decision, reason, detail=None, *, keyid=None, command_id=None, report=True):
    assert isinstance(decision, Rejected), decision
    assert (decision.reason, decision.report) == (reason, report), decision
    if detail is not None:
        assert decision.detail == detail, decision
    if keyid is not None:
        assert decision.keyid == keyid, decision
    if command_id is not None:
        assert decision.command_id == command_id, decision
    return decision


def forged(envelope: bytes, index: int) -> bytes:
    document = json.loads(envelope)
    document["signatures"][index]["sig"] = base64.b64encode(b"\x02" * 64).decode()
    return json.dumps(document).encode()


# -- what an accepted command carries ---------------------------------------------------------------------

def test_accepted_command_remembers_its_id_exactly_one_skew_past_expiry():
    decision = verify(play(expires=NOW + dt.timedelta(hours=2)))
    assert isinstance(decision, Accepted)
    assert decision.remember_until == NOW + dt.timedelta(hours=2, seconds=30)
    small = verify(play(expires=NOW + dt.timedelta(hours=2)), limits=Limits(skew_seconds=5))
    assert small.remember_until == NOW + dt.timedelta(hours=2, seconds=5)
    assert (decision.decision, decision.report) == ("accepted", False)


def test_accepted_command_lists_its_signers_sorted_and_every_role_they_prove():
    config = signed("config", {"version": 8, "settings": {"audio.volume": 60}}, ["schedule", "stranger"])
    decision = verify(config)
    assert decision.keyids == (V.keyid("schedule"),)
    assert decision.roles == frozenset({"config", "schedule", "time"})
    emergency = verify(play(level="emergency", signers=["emergency-b", "emergency-a", "bulletin"]))
    assert emergency.keyids == tuple(sorted([V.keyid("emergency-a"), V.keyid("emergency-b"), V.keyid("bulletin")]))
    assert emergency.roles == frozenset({"emergency", "bulletin"})


def test_a_rejection_is_reported_unless_its_reason_is_a_benign_silence():
    assert reject("expired", "d", "k", "c") == Rejected("expired", "d", "k", "c", True)
    assert reject("duplicate").decision == "ignored" and reject("duplicate").report is False
    assert reject("no_such_code_yet").report is True
    assert Rejected("expired").decision == "rejected"


# -- time edges: skew, expiry, validity caps, key validity, trust expiry --------------------------------

def test_not_before_exactly_one_skew_ahead_is_accepted_and_one_second_more_is_not():
    inside = play(not_before=NOW + dt.timedelta(seconds=30))
    assert isinstance(verify(inside), Accepted)
    outside = play(not_before=NOW + dt.timedelta(seconds=31))
    rejected(verify(outside), "not_yet_valid", "not before 2026-11-26T05:30:31+00:00",
             command_id="edge-test-play-000001")


def test_a_command_expires_at_its_expiry_instant_not_a_second_later():
    rejected(verify(play(), now=NOW + dt.timedelta(hours=2)), "expired", "expired at 2026-11-26T07:30:00+00:00",
             command_id="edge-test-play-000001")
    assert isinstance(verify(play(), now=NOW + dt.timedelta(hours=2) - S), Accepted)


@pytest.mark.parametrize("kind,body,signers,cap", [
    ("play", V.play_body(), ["bulletin"], 31 * DAY),
    ("stop", {"all": False, "level": "normal", "content_id": None}, ["bulletin"], DAY),
    ("live", {"url": "https://radio.example/vov1", "max_duration": 1800, "level": "normal"}, ["live"], DAY),
    ("schedule", V.schedule_body(5), ["schedule"], 400 * DAY),
    ("config", {"version": 8, "settings": {"audio.volume": 60}}, ["schedule"], 400 * DAY),
])
def test_each_command_type_may_be_valid_for_exactly_its_cap_and_not_a_second_more(kind, body, signers, cap):
    not_before = NOW - dt.timedelta(minutes=10)
    assert isinstance(verify(signed(kind, body, signers, not_before=not_before, expires=not_before + cap)), Accepted)
    too_long = signed(kind, body, signers, not_before=not_before, expires=not_before + cap + S)
    rejected(verify(too_long), "validity_too_long", f"{kind} may be valid for at most {cap.total_seconds():.0f} s",
             command_id="edge-test-command-0001")


def test_an_update_valid_one_second_past_its_cap_is_refused_before_its_release_is_read():
    not_before = NOW - dt.timedelta(minutes=10)
    body = {"release": "not a release", "files_url": "https://district.example/r/"}
    too_long = signed("update", body, ["bulletin", "live"], not_before=not_before,
                      expires=not_before + 31 * DAY + S)
    rejected(verify(too_long, trust=RELEASE_TRUST), "validity_too_long", "update may be valid for at most 2678400 s")
    at_cap = signed("update", body, ["bulletin", "live"], not_before=not_before, expires=not_before + 31 * DAY)
    decision = rejected(verify(at_cap, trust=RELEASE_TRUST), "malformed", command_id="edge-test-command-0001")
    assert decision.detail.startswith("body.release: "), decision


def test_a_type_without_a_validity_cap_is_not_capped():
    limits = Limits(max_validity={"stop": 86400.0})
    long_play = play(expires=NOW + 90 * DAY)
    assert isinstance(verify(long_play, limits=limits), Accepted)
    rejected(verify(long_play), "validity_too_long")


def _expiring_bulletin(body):
    key_entry(body, "bulletin")["expires"] = "2026-11-26T05:30:00Z"
    key_entry(body, "bulletin")["not_before"] = "2026-11-26T05:00:00Z"


def test_a_key_is_expired_from_its_expiry_instant_and_valid_from_its_not_before_instant():
    trust = trust_with(_expiring_bulletin)
    rejected(verify(play(), trust=trust, now=NOW), "key_expired", "signature by key " + V.keyid("bulletin")[:16],
             keyid=V.keyid("bulletin"), command_id="edge-test-play-000001")
    assert isinstance(verify(play(), trust=trust, now=NOW - S), Accepted)
    start = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)
    early = play(not_before=start)
    assert isinstance(verify(early, trust=trust, now=start), Accepted)
    rejected(verify(early, trust=trust, now=start - S), "key_not_yet_valid", keyid=V.keyid("bulletin"))


def test_a_key_without_validity_times_is_valid_whenever_the_trust_is():
    def open_ended(body):
        del key_entry(body, "bulletin")["expires"]
        del key_entry(body, "bulletin")["not_before"]

    trust = trust_with(open_ended)
    assert isinstance(verify(play(), trust=trust), Accepted)
    late = dt.datetime(2027, 12, 30, tzinfo=dt.timezone.utc)
    assert isinstance(verify(play(not_before=late, expires=late + DAY), trust=trust, now=late), Accepted)


def test_the_trust_document_expires_at_its_expiry_instant():
    expiry = dt.datetime(2027, 12, 31, tzinfo=dt.timezone.utc)
    at_expiry = play(not_before=expiry - dt.timedelta(hours=1), expires=expiry + dt.timedelta(hours=1))
    rejected(verify(at_expiry, now=expiry), "trust_expired", "trust version 3 expired",
             command_id="edge-test-play-000001")
    assert isinstance(verify(at_expiry, now=expiry - S), Accepted)


def test_an_untrusted_clock_names_the_command_it_refused():
    rejected(verify(play(), now=None), "clock_untrusted", "no trusted time on this node",
             command_id="edge-test-play-000001")


# -- which problem is named when no signature counts -----------------------------------------------------

@pytest.mark.parametrize("signers,reason,culprit", [
    (["stranger", "revoked-bulletin"], "revoked_key", "revoked-bulletin"),
    (["revoked-bulletin", "stranger"], "revoked_key", "revoked-bulletin"),
    (["stranger", "old-bulletin"], "key_expired", "old-bulletin"),
    (["future-bulletin", "stranger"], "key_not_yet_valid", "future-bulletin"),
    (["future-bulletin", "old-bulletin"], "key_expired", "old-bulletin"),
    (["old-bulletin", "revoked-bulletin"], "revoked_key", "revoked-bulletin"),
    (["stranger"], "unknown_key", "stranger"),
])
def test_the_most_telling_signature_problem_is_named(signers, reason, culprit):
    rejected(verify(play(signers=signers)), reason, "signature by key " + V.keyid(culprit)[:16],
             keyid=V.keyid(culprit))


@pytest.mark.parametrize("signers,forge,culprit", [
    (["revoked-bulletin", "bulletin"], 1, "bulletin"),
    (["bulletin", "stranger"], 0, "bulletin"),
    (["old-bulletin", "bulletin"], 1, "bulletin"),
])
def test_a_forgery_is_named_before_any_other_problem(signers, forge, culprit):
    rejected(verify(forged(play(signers=signers), forge)), "bad_signature", keyid=V.keyid(culprit))


def test_a_key_signing_twice_is_checked_once_and_the_next_signer_still_counts():
    decision = verify(play(level="emergency", signers=["emergency-a", "emergency-a", "emergency-b"]))
    assert isinstance(decision, Accepted)
    assert decision.keyids == tuple(sorted([V.keyid("emergency-a"), V.keyid("emergency-b")]))


def test_a_revoked_key_does_not_count_even_with_a_valid_signature_beside_it():
    decision = verify(play(signers=["revoked-bulletin", "bulletin"]))
    assert isinstance(decision, Accepted) and decision.keyids == (V.keyid("bulletin"),)


# -- roles and thresholds ------------------------------------------------------------------------------

def test_required_roles_per_command_type():
    def command(kind, body, **kw):
        return verify(signed(kind, body, ["bulletin", "emergency-a", "emergency-b", "live", "schedule"], **kw)).command

    assert required_roles(command("play", V.play_body("priority")), TRUST) == [("bulletin", 1)]
    assert required_roles(command("play", V.play_body("emergency")), TRUST) == [("emergency", 2)]
    assert required_roles(command("stop", {"all": True}), TRUST) == [("emergency", 1)]
    assert required_roles(command("stop", {"level": "emergency"}), TRUST) == [("emergency", 1)]
    assert required_roles(command("stop", {"level": "priority"}), TRUST) == [("bulletin", 1)]
    assert required_roles(command("stop", {"content_id": "x"}), TRUST) == [("bulletin", 1)]
    live = {"url": "https://radio.example/vov1", "max_duration": 1800, "level": "emergency"}
    assert required_roles(command("live", live), TRUST) == [("live", 1), ("emergency", 2)]
    assert required_roles(command("live", {**live, "level": "priority"}), TRUST) == [("live", 1)]
    assert required_roles(command("schedule", V.schedule_body(5)), TRUST) == [("schedule", 1)]
    assert required_roles(command("config", {"version": 9, "settings": {}}), TRUST) == [("config", 1)]


def test_a_stop_of_everything_needs_an_emergency_key_and_a_stop_of_one_item_a_bulletin_key():
    stop_all = signed("stop", {"all": True}, ["bulletin"])
    rejected(verify(stop_all), "role_not_allowed", "stop needs role 'emergency'", keyid=V.keyid("bulletin"),
             command_id="edge-test-command-0001")
    assert isinstance(verify(signed("stop", {"all": True}, ["emergency-b"])), Accepted)
    assert isinstance(verify(signed("stop", {"content_id": "ban-tin-sang-2611"}, ["bulletin"])), Accepted)
    rejected(verify(signed("stop", {"content_id": "x"}, ["emergency-a"])), "role_not_allowed",
             "stop needs role 'bulletin'")


def test_an_emergency_live_relay_needs_the_live_role_and_two_emergency_keys():
    body = {"url": "https://radio.example/vov1", "max_duration": 1800, "level": "emergency"}
    rejected(verify(signed("live", body, ["live"])), "role_not_allowed", "live needs role 'emergency'",
             keyid=V.keyid("live"))
    rejected(verify(signed("live", body, ["emergency-a", "emergency-b"])), "role_not_allowed",
             "live needs role 'live'")
    rejected(verify(signed("live", body, ["live", "emergency-a"])), "threshold_not_met",
             "role 'emergency' needs 2 distinct keys, got 1", keyid=V.keyid("emergency-a"))
    assert isinstance(verify(signed("live", body, ["live", "emergency-a", "emergency-b"])), Accepted)
    assert isinstance(verify(signed("live", {**body, "level": "normal"}, ["live"])), Accepted)


def test_a_priority_bulletin_needs_only_the_bulletin_role():
    assert isinstance(verify(play(level="priority")), Accepted)
    rejected(verify(play(level="priority", signers=["live"])), "role_not_allowed", "play needs role 'bulletin'",
             keyid=V.keyid("live"), command_id="edge-test-play-000001")


def test_threshold_not_met_names_the_role_the_count_and_the_first_holder():
    rejected(verify(play(level="emergency", signers=["emergency-b"])), "threshold_not_met",
             "role 'emergency' needs 2 distinct keys, got 1", keyid=V.keyid("emergency-b"),
             command_id="edge-test-play-000001")


def test_a_threshold_of_three_needs_three_keys():
    def three_emergency_keys(body):
        key_entry(body, "bulletin")["roles"] = ["bulletin", "emergency"]
        body["thresholds"] = {"emergency": 3}

    trust = trust_with(three_emergency_keys)
    rejected(verify(play(level="emergency", signers=["emergency-a", "emergency-b"]), trust=trust),
             "threshold_not_met", "role 'emergency' needs 3 distinct keys, got 2",
             keyid=min(V.keyid("emergency-a"), V.keyid("emergency-b")))
    assert isinstance(verify(play(level="emergency", signers=["emergency-a", "emergency-b", "bulletin"]),
                             trust=trust), Accepted)


def test_an_expired_second_emergency_key_is_named_rather_than_the_threshold():
    def expire_b(body):
        key_entry(body, "emergency-b")["expires"] = "2026-06-01T00:00:00Z"

    decision = verify(play(level="emergency", signers=["emergency-a", "emergency-b"]), trust=trust_with(expire_b))
    rejected(decision, "key_expired", keyid=V.keyid("emergency-b"), command_id="edge-test-play-000001")


@pytest.mark.parametrize("second", ["stranger", "revoked-bulletin", "old-bulletin"])
def test_a_failed_signature_by_a_key_without_the_role_does_not_hide_the_threshold(second):
    decision = verify(play(level="emergency", signers=["emergency-a", second]))
    rejected(decision, "threshold_not_met", keyid=V.keyid("emergency-a"))


def test_a_forged_signature_by_a_key_with_the_role_is_named_even_with_one_good_holder():
    envelope = forged(play(level="emergency", signers=["emergency-a", "emergency-b"]), 0)
    rejected(verify(envelope), "bad_signature", keyid=V.keyid("emergency-a"), command_id="edge-test-play-000001")


# -- targets -------------------------------------------------------------------------------------------

def test_a_wrong_target_names_every_target_cut_at_120_characters():
    targets = [f"{10000 + i}-01" for i in range(20)]
    decision = rejected(verify(play(targets=targets)), "wrong_target", command_id="edge-test-play-000001")
    assert decision.detail == "targets " + ",".join(targets)[:120]
    few = rejected(verify(play(targets=["27787-04", "c1"])), "wrong_target")
    assert few.detail == "targets 27787-04,c1"


@pytest.mark.parametrize("target", [V.NODE_ID, "all", "c27787", "d760", "p75"])
def test_our_id_all_and_each_of_our_groups_are_for_us(target):
    assert isinstance(verify(play(targets=[target])), Accepted)


def test_a_command_for_others_is_wrong_target_on_our_topic_or_from_usb_and_silent_on_a_group_topic():
    other = play(targets=["27787-04"])
    rejected(verify(other, topic=None), "wrong_target")
    rejected(verify(other, topic=f"spk/node/{V.NODE_ID}/cmd"), "wrong_target")
    rejected(verify(other, topic="spk/node/27787-04/cmd"), "not_for_us", report=False,
             command_id="edge-test-play-000001")
    rejected(verify(other, topic=f"spk/node/{V.NODE_ID}/cmd/x"), "not_for_us", report=False)


def test_groups_are_read_from_any_iterable():
    assert isinstance(verify(play(targets=["d760"]), groups=iter(["d760"])), Accepted)
    rejected(verify(play(targets=["d760"]), groups=()), "wrong_target")


# -- reset epoch, replay, versions ---------------------------------------------------------------------

def test_a_command_issued_at_the_reset_instant_is_accepted_and_one_second_earlier_is_not():
    not_before = NOW - dt.timedelta(minutes=10)
    epoch = not_before
    assert isinstance(verify(play(not_before=not_before), reset_epoch=epoch), Accepted)
    rejected(verify(play(not_before=not_before), reset_epoch=epoch + S), "issued_before_reset",
             "issued 2026-11-26T05:20:00+00:00 before the state reset at 2026-11-26T05:20:01+00:00",
             command_id="edge-test-play-000001")


def test_an_old_issue_time_or_an_old_not_before_each_count_as_before_the_reset():
    epoch = NOW - dt.timedelta(minutes=10)
    early_issue = play(not_before=epoch, issued_at="2026-11-26T05:19:59Z")
    rejected(verify(early_issue, reset_epoch=epoch), "issued_before_reset")
    early_start = play(not_before=epoch - S, issued_at="2026-11-26T05:25:00Z")
    rejected(verify(early_start, reset_epoch=epoch), "issued_before_reset",
             "issued 2026-11-26T05:25:00+00:00 before the state reset at 2026-11-26T05:20:00+00:00")


def test_replay_is_judged_by_a_set_a_callable_or_not_at_all():
    envelope = play()
    rejected(verify(envelope, seen={"edge-test-play-000001"}), "replayed",
             "command edge-test-play-000001 was already accepted", command_id="edge-test-play-000001")
    rejected(verify(envelope, seen=lambda cid: cid == "edge-test-play-000001"), "replayed")
    assert isinstance(verify(envelope, seen=lambda cid: 0), Accepted)
    assert isinstance(verify(envelope, seen=None), Accepted)
    assert isinstance(verify(envelope, seen={"another-command-id-01"}), Accepted)


@pytest.mark.parametrize("kind,body,current,expected", [
    ("schedule", V.schedule_body(4), 5, ("rollback", "schedule version 4 < 5")),
    ("schedule", V.schedule_body(5), 5, ("duplicate", "schedule version 5 already applied")),
    ("schedule", V.schedule_body(6), 5, None),
    ("config", {"version": 6, "settings": {}}, 7, ("rollback", "config version 6 < 7")),
    ("config", {"version": 7, "settings": {}}, 7, ("duplicate", "config version 7 already applied")),
    ("config", {"version": 8, "settings": {}}, 7, None),
])
def test_versions_only_go_forward(kind, body, current, expected):
    decision = verify(signed(kind, body, ["schedule"]), versions={kind: current})
    if expected is None:
        assert isinstance(decision, Accepted)
    else:
        rejected(decision, *expected, report=expected[0] != "duplicate", command_id="edge-test-command-0001")


def test_the_first_schedule_and_config_of_a_node_have_nothing_to_roll_back():
    for kind, body in (("schedule", V.schedule_body(1)), ("config", {"version": 1, "settings": {}})):
        assert isinstance(verify(signed(kind, body, ["schedule"]), versions=None), Accepted)
        assert isinstance(verify(signed(kind, body, ["schedule"]), versions={"schedule": 1, "config": 1}),
                          Rejected)


# -- trust updates through verify_message --------------------------------------------------------------

def newer_trust():
    return V.trust_envelope({**V.trust_body(), "version": 4})


def test_a_trust_update_is_checked_at_now_and_at_the_floor_when_the_clock_is_untrusted():
    floor = NOW - DAY
    by_now = verify_message(newer_trust(), trust=TRUST, node_id=V.NODE_ID, now=NOW, floor=floor)
    assert isinstance(by_now, TrustAccepted) and (by_now.document.version, by_now.at) == (4, NOW)
    assert (by_now.decision, by_now.report) == ("accepted", False)
    by_floor = verify_message(newer_trust(), trust=TRUST, node_id=V.NODE_ID, now=None, floor=floor)
    assert isinstance(by_floor, TrustAccepted) and by_floor.at == floor
    rejected(verify_message(newer_trust(), trust=TRUST, node_id=V.NODE_ID, now=None), "clock_untrusted",
             "no trusted time and no time floor on this node")


def test_verify_message_decides_commands_too():
    decision = verify_message(play(), trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC,
                              now=NOW, seen=set())
    assert isinstance(decision, Accepted) and decision.command.id == "edge-test-play-000001"
    rejected(verify_message(signed("schedule", V.schedule_body(4), ["schedule"]), trust=TRUST,
                            node_id=V.NODE_ID, now=NOW, versions={"schedule": 4}), "duplicate", report=False)


def test_a_trust_document_is_not_a_command():
    rejected(verify(newer_trust()), "unsupported_type", "application/vnd.speaker.trust+json is not a command")
    ack = V.sign_payload("application/vnd.speaker.ack+json", b"{}", ["collector"])
    rejected(verify(ack), "unsupported_type", "application/vnd.speaker.ack+json is not a command")
    rejected(verify_message(ack, trust=TRUST, node_id=V.NODE_ID, now=NOW), "unsupported_type")


def test_a_bug_in_a_check_names_the_exception_the_file_and_the_line(monkeypatch):
    import node.trust.verifier as verifier

    line = None

    def broken(*args):
        nonlocal line
        line = inspect.currentframe().f_lineno + 1
        raise ValueError("v" * 100)

    monkeypatch.setattr(verifier, "_check_targets", broken)
    decision = rejected(verify(play()), "internal_error")
    assert decision.detail == f"ValueError at test_trust_verifier_edges.py:{line}: {'v' * 80}"
    assert (decision.keyid, decision.command_id) == (None, None)


# -- stored envelopes, read back before they act -----------------------------------------------------------

def stored(envelope, kinds=("play", "live"), **overrides):
    kwargs = dict(trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, kinds=kinds)
    kwargs.update(overrides)
    return verify_stored(envelope, **kwargs)


def test_a_stored_command_is_judged_by_each_key_at_the_command_s_own_not_before():
    may = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    by_old_key = play(signers=["old-bulletin"], not_before=may, expires=may + DAY)
    decision = stored(by_old_key)
    assert isinstance(decision, Accepted)
    assert (decision.keyids, decision.roles) == ((V.keyid("old-bulletin"),), frozenset({"bulletin"}))
    assert decision.remember_until == may + DAY + dt.timedelta(seconds=30)
    assert stored(by_old_key, limits=Limits(skew_seconds=0)).remember_until == may + DAY
    rejected(stored(play(signers=["old-bulletin"])), "key_expired", keyid=V.keyid("old-bulletin"),
             command_id="edge-test-play-000001")
    rejected(stored(play(signers=["future-bulletin"])), "key_not_yet_valid", keyid=V.keyid("future-bulletin"))


def test_a_stored_command_keeps_every_role_and_threshold():
    rejected(stored(play(level="emergency", signers=["bulletin"])), "role_not_allowed",
             "play needs role 'emergency'", keyid=V.keyid("bulletin"), command_id="edge-test-play-000001")
    rejected(stored(play(level="emergency", signers=["emergency-a"])), "threshold_not_met",
             "role 'emergency' needs 2 distinct keys, got 1", keyid=V.keyid("emergency-a"),
             command_id="edge-test-play-000001")
    both = stored(play(level="emergency", signers=["emergency-b", "emergency-a"]))
    assert isinstance(both, Accepted)
    assert both.keyids == tuple(sorted([V.keyid("emergency-a"), V.keyid("emergency-b")]))
    forged_second = forged(play(level="emergency", signers=["emergency-a", "emergency-b"]), 1)
    rejected(stored(forged_second), "bad_signature", keyid=V.keyid("emergency-b"), command_id="edge-test-play-000001")
    rejected(stored(play(level="emergency", signers=["emergency-a", "stranger"])), "threshold_not_met")


def test_a_stored_command_signed_by_strangers_or_revoked_keys_is_refused():
    rejected(stored(play(signers=["stranger"])), "unknown_key", keyid=V.keyid("stranger"))
    rejected(stored(play(signers=["revoked-bulletin"])), "revoked_key", keyid=V.keyid("revoked-bulletin"))


def test_a_stored_command_of_a_kind_not_kept_there_names_the_kinds():
    schedule = signed("schedule", V.schedule_body(5), ["schedule"])
    rejected(stored(schedule), "unsupported_type", "a schedule command where only play/live is kept",
             command_id="edge-test-command-0001")
    assert isinstance(stored(schedule, kinds=("schedule",)), Accepted)


def test_a_stored_trust_document_or_garbage_is_not_a_command():
    rejected(stored(newer_trust()), "unsupported_type", "application/vnd.speaker.trust+json is not a command")
    rejected(stored(b"[]"), "malformed", "envelope must be a JSON object")
    rejected(stored(play(), limits=Limits(max_envelope_bytes=100)), "too_large")


def test_a_stored_command_for_one_of_our_groups_is_kept():
    assert isinstance(stored(play(targets=["d760"])), Accepted)
    rejected(stored(play(targets=["d760"]), groups=()), "wrong_target", command_id="edge-test-play-000001")


# -- update commands need the release role, two keys whatever the document says -----------------------------

def _release_holders(body):
    key_entry(body, "bulletin")["roles"] = ["bulletin", "release"]
    key_entry(body, "live")["roles"] = ["live", "release"]


RELEASE_TRUST = trust_with(_release_holders)


def test_an_update_needs_two_release_keys_even_when_the_document_asks_for_one():
    body = {"release": "not a release", "files_url": "https://district.example/r/"}
    rejected(verify(signed("update", body, ["schedule"]), trust=RELEASE_TRUST), "role_not_allowed",
             "update needs role 'release'")
    rejected(verify(signed("update", body, ["bulletin"]), trust=RELEASE_TRUST), "threshold_not_met",
             "role 'release' needs 2 distinct keys, got 1", keyid=V.keyid("bulletin"))
    assert required_roles(_update_command(body), RELEASE_TRUST) == [("release", 2)]


def _update_command(body):
    from node.trust.commands import parse_command

    return parse_command(V.encode(V.command("update", body, cid="edge-test-command-0001")))


# -- what verify_message passes on, and what the limits bound --------------------------------------------

def message(envelope, **overrides):
    kwargs = dict(trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC, now=NOW, seen=set())
    kwargs.update(overrides)
    return verify_message(envelope, **kwargs)


def test_verify_message_applies_the_topic_the_seen_ids_and_the_reset_epoch():
    rejected(message(play(targets=["c27790"]), topic="spk/group/c27790/cmd"), "not_for_us", "targets c27790",
             report=False, command_id="edge-test-play-000001")
    rejected(message(play(), seen={"edge-test-play-000001"}), "replayed")
    rejected(message(play(), reset_epoch=NOW), "issued_before_reset")
    assert isinstance(message(play(), reset_epoch=NOW - dt.timedelta(hours=1)), Accepted)
    rejected(message(play(), now=None, floor=NOW), "clock_untrusted", "no trusted time on this node")


def test_an_accepted_trust_update_keeps_the_envelope_bytes_it_came_in():
    envelope = newer_trust()
    decision = message(envelope)
    assert isinstance(decision, TrustAccepted) and decision.document.envelope == envelope


def test_the_signature_count_and_the_parse_follow_the_configured_limits():
    three = play(signers=["stranger", "live", "bulletin"])
    rejected(verify(three, limits=Limits(max_signatures=2)), "limit_exceeded", "envelope.signatures: 3 > 2")
    assert isinstance(verify(three, limits=Limits(max_signatures=3)), Accepted)
    rejected(stored(three, limits=Limits(max_signatures=2)), "limit_exceeded", "envelope.signatures: 3 > 2")
    rejected(stored(play(), limits=Limits(audio_max_bytes=1000)), "limit_exceeded",
             "body.length is 482113 bytes, limit 1000")


def _two_of_everything(body):
    key_entry(body, "bulletin")["roles"] = ["bulletin", "live", "schedule", "config"]
    body["thresholds"] = {"emergency": 2, "live": 2, "schedule": 2, "config": 2}


TWO_KEY_TRUST = trust_with(_two_of_everything)


@pytest.mark.parametrize("kind,body,role", [
    ("live", {"url": "https://radio.example/vov1", "max_duration": 1800, "level": "normal"}, "live"),
    ("schedule", V.schedule_body(5), "schedule"),
    ("config", {"version": 8, "settings": {}}, "config"),
])
def test_a_trust_document_may_ask_two_keys_for_live_schedule_and_config(kind, body, role):
    single = ["live"] if kind == "live" else ["schedule"]
    rejected(verify(signed(kind, body, single), trust=TWO_KEY_TRUST), "threshold_not_met",
             f"role {role!r} needs 2 distinct keys, got 1")
    assert isinstance(verify(signed(kind, body, single + ["bulletin"]), trust=TWO_KEY_TRUST), Accepted)
    rejected(stored(signed(kind, body, single), kinds=(kind,), trust=TWO_KEY_TRUST), "threshold_not_met",
             f"role {role!r} needs 2 distinct keys, got 1")


def test_a_rejection_without_detail_has_an_empty_detail():
    assert reject("expired").detail == "" and reject("expired").keyid is None


def test_a_typed_error_carries_the_key_and_command_it_names_into_the_rejection(monkeypatch):
    import node.trust.verifier as verifier
    from node.errors import RemoteDataError

    def refusing_parser(payload, limits):
        raise RemoteDataError("limit_exceeded", "body.title is long", keyid="k1", command_id="c-named-by-parser")

    monkeypatch.setattr(verifier, "parse_command", refusing_parser)
    decision = verify(play())
    assert (decision.reason, decision.detail, decision.keyid, decision.command_id) == (
        "limit_exceeded", "body.title is long", "k1", "c-named-by-parser")


def test_a_signed_time_beacon_is_refused_as_retired():
    beacon = signed("time", {"time": "2026-11-26T05:30:00Z"}, ["schedule"])
    decision = rejected(verify(beacon), "unsupported_type",
                        "time beacons are retired: time comes as signed answers to the node's nonces")
    assert decision.command_id is None
