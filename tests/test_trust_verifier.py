"""Attacks on node commands: each test names the attack and proves the verifier refuses it."""

import base64
import datetime as dt
import json

import pytest
from trust_fixtures import TRUST, V

from node.trust.commands import Limits
from node.trust.verifier import Accepted, Rejected, verify_command

NOW = V.NOW


def verify(envelope, **overrides):
    kwargs = dict(trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC, now=NOW, seen=set(),
                  versions={"schedule": 4, "config": 7})
    kwargs.update(overrides)
    return verify_command(envelope, **kwargs)


def play(cid="attack-test-play-0001", level="normal", signers=("bulletin",), **kw):
    return V.sign(V.command("play", V.play_body(level), cid=cid, **kw), list(signers))


def assert_rejected(decision, reason, report=True):
    assert isinstance(decision, Rejected), decision
    assert decision.reason == reason, decision
    assert decision.report is report


def test_genuine_bulletin_is_accepted_with_its_fields():
    decision = verify(play())
    assert isinstance(decision, Accepted)
    assert decision.command.body.content.content_id == "ban-tin-sang-2611"
    assert decision.command.level == "normal"
    assert decision.keyids == (V.keyid("bulletin"),)
    assert decision.remember_until >= decision.command.expires
    assert "bulletin" in decision.roles


def test_forged_signature_is_rejected():
    envelope = json.loads(play())
    envelope["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 64).decode()
    assert_rejected(verify(json.dumps(envelope).encode()), "bad_signature")


def test_signature_moved_onto_another_payload_is_rejected():
    good, other = json.loads(play()), json.loads(play(cid="attack-test-other-0002", level="priority"))
    good["payload"] = other["payload"]
    assert_rejected(verify(json.dumps(good).encode()), "bad_signature")


def test_command_signed_by_unknown_key_is_rejected():
    assert_rejected(verify(play(signers=["stranger"])), "unknown_key")


def test_unknown_signature_next_to_a_valid_one_does_not_block_acceptance():
    assert isinstance(verify(play(signers=["stranger", "bulletin"])), Accepted)


def test_command_signed_by_revoked_key_is_rejected():
    decision = verify(play(signers=["revoked-bulletin"]))
    assert_rejected(decision, "revoked_key")
    assert decision.keyid == V.keyid("revoked-bulletin")


def test_key_used_after_its_own_expiry_is_rejected():
    assert_rejected(verify(play(signers=["old-bulletin"])), "key_expired")


def test_key_used_before_its_own_validity_is_rejected():
    assert_rejected(verify(play(signers=["future-bulletin"])), "key_not_yet_valid")


def test_bulletin_key_signing_an_emergency_is_rejected():
    assert_rejected(verify(play(level="emergency", signers=["bulletin"])), "role_not_allowed")


def test_bulletin_key_cannot_change_configuration():
    envelope = V.sign(V.command("config", {"version": 8, "settings": {"audio.volume": 100}},
                                cid="attack-config-by-bulletin"), ["bulletin"])
    assert_rejected(verify(envelope), "role_not_allowed")


def test_emergency_with_one_signature_when_two_are_required_is_rejected():
    assert_rejected(verify(play(level="emergency", signers=["emergency-a"])), "threshold_not_met")


def test_two_signatures_from_the_same_key_count_once():
    decision = verify(play(level="emergency", signers=["emergency-a", "emergency-a"]))
    assert_rejected(decision, "threshold_not_met")


def test_emergency_with_one_forged_second_signature_names_the_forgery():
    envelope = json.loads(play(level="emergency", signers=["emergency-a", "emergency-b"]))
    envelope["signatures"][1]["sig"] = base64.b64encode(b"\x01" * 64).decode()
    assert_rejected(verify(json.dumps(envelope).encode()), "bad_signature")


def test_emergency_with_both_keys_is_accepted():
    decision = verify(play(level="emergency", signers=["emergency-b", "emergency-a"]))
    assert isinstance(decision, Accepted)
    assert set(decision.keyids) == {V.keyid("emergency-a"), V.keyid("emergency-b")}


def test_emergency_cancel_needs_only_one_emergency_key():
    stop = V.command("stop", {"content_id": None, "level": "emergency", "all": False},
                     cid="cancel-false-alarm-01")
    assert isinstance(verify(V.sign(stop, ["emergency-a"])), Accepted)
    assert_rejected(verify(V.sign(stop, ["bulletin"])), "role_not_allowed")


def test_replayed_command_same_bytes_later_is_rejected():
    envelope = play()
    seen = set()
    first = verify(envelope, seen=seen)
    assert isinstance(first, Accepted)
    seen.add(first.command.id)
    later = verify(envelope, seen=seen, now=NOW + dt.timedelta(minutes=30))
    assert_rejected(later, "replayed")
    assert later.command_id == first.command.id


def test_replay_after_restart_is_rejected_when_seen_ids_are_restored():
    envelope = play()
    first = verify(envelope, seen=set())
    persisted = json.dumps([[first.command.id, first.remember_until.isoformat()]])  # what the store writes
    restored = {cid for cid, until in json.loads(persisted) if dt.datetime.fromisoformat(until) > NOW}
    assert_rejected(verify(envelope, seen=restored.__contains__), "replayed")


def test_remember_until_outlives_the_command_so_a_forgotten_id_cannot_replay():
    envelope = play()
    first = verify(envelope)
    # Once the id may be forgotten, the command itself is expired: no window where a replay is accepted.
    assert_rejected(verify(envelope, now=first.remember_until), "expired")


def test_two_fresh_commands_out_of_order_are_both_accepted():
    early = play(cid="fresh-command-early-01", not_before=NOW - dt.timedelta(minutes=20))
    late = play(cid="fresh-command-later-02", not_before=NOW - dt.timedelta(minutes=5))
    seen = set()
    for envelope in (late, early):
        decision = verify(envelope, seen=seen)
        assert isinstance(decision, Accepted)
        seen.add(decision.command.id)


def test_expired_command_is_rejected():
    envelope = play(not_before=NOW - dt.timedelta(hours=3), expires=NOW - dt.timedelta(hours=1))
    assert_rejected(verify(envelope), "expired")


def test_not_yet_valid_command_is_rejected():
    envelope = play(not_before=NOW + dt.timedelta(hours=1), expires=NOW + dt.timedelta(hours=3))
    assert_rejected(verify(envelope), "not_yet_valid")


def test_skew_is_configurable():
    envelope = play(not_before=NOW + dt.timedelta(seconds=50))
    assert_rejected(verify(envelope), "not_yet_valid")
    assert isinstance(verify(envelope, limits=Limits(skew_seconds=60)), Accepted)


def test_command_valid_for_too_long_is_rejected():
    assert_rejected(verify(play(expires=NOW + dt.timedelta(days=60))), "validity_too_long")


def test_command_for_another_node_on_our_own_topic_is_rejected_and_reported():
    assert_rejected(verify(play(targets=["27787-04"])), "wrong_target", report=True)


def test_command_for_another_group_on_a_group_topic_is_ignored_silently():
    decision = verify(play(targets=["c27790"]), topic="spk/group/c27790/cmd")
    assert_rejected(decision, "not_for_us", report=False)
    assert decision.decision == "ignored"


def test_command_for_our_district_group_is_accepted():
    assert isinstance(verify(play(targets=["d760"]), topic="spk/group/d760/cmd"), Accepted)


def test_untrusted_clock_rejects_every_command():
    assert_rejected(verify(play(), now=None), "clock_untrusted")


def test_expired_trust_document_stops_acceptance():
    assert_rejected(verify(play(), now=dt.datetime(2028, 1, 2, tzinfo=dt.timezone.utc)), "trust_expired")


@pytest.mark.parametrize("kind,body", [
    ("schedule", V.schedule_body(3)),
    ("config", {"version": 6, "settings": {"audio.volume": 10}}),
])
def test_rollback_of_schedule_or_config_version_is_rejected(kind, body):
    envelope = V.sign(V.command(kind, body, cid=f"rollback-{kind}-00001"), ["schedule"])
    assert_rejected(verify(envelope), "rollback")


def test_same_schedule_version_again_is_a_silent_duplicate():
    envelope = V.sign(V.command("schedule", V.schedule_body(4), cid="schedule-dup-000001"), ["schedule"])
    assert_rejected(verify(envelope), "duplicate", report=False)


def test_schedule_with_both_playlist_and_live_in_a_slot_is_malformed():
    body = V.schedule_body(5)
    body["slots"][0]["live"] = {"url": "https://radio.example/vov1"}
    decision = verify(V.sign(V.command("schedule", body, cid="schedule-both-00001"), ["schedule"]))
    assert_rejected(decision, "malformed")
    assert "slots[0]" in decision.detail


def test_malformed_json_is_rejected_naming_the_problem():
    decision = verify(V.sign_payload(V.PAYLOAD_COMMAND, b"{not json", ["bulletin"]))
    assert_rejected(decision, "malformed")


def test_wrong_type_is_rejected_naming_the_field():
    envelope = V.sign(V.command("play", V.play_body(volume="loud"), cid="wrong-type-volume-01"), ["bulletin"])
    decision = verify(envelope)
    assert_rejected(decision, "malformed")
    assert "body.volume" in decision.detail


def test_boolean_is_not_accepted_as_a_number():
    envelope = V.sign(V.command("play", V.play_body(length=True), cid="bool-as-number-0001"), ["bulletin"])
    assert_rejected(verify(envelope), "malformed")


def test_duplicate_json_keys_are_rejected():
    payload = V.encode(V.command("play", V.play_body(), cid="duplicate-keys-00001"))
    payload = payload.replace(b'"targets":["27787-03"]', b'"targets":["27787-04"],"targets":["27787-03"]')
    assert_rejected(verify(V.sign_payload(V.PAYLOAD_COMMAND, payload, ["bulletin"])), "malformed")


def test_huge_string_field_is_rejected():
    huge = V.command("play", V.play_body(title="x" * 5000), cid="huge-title-0000001")
    envelope = V.sign(huge, ["bulletin"])
    decision = verify(envelope)
    assert_rejected(decision, "limit_exceeded")
    assert "title" in decision.detail


def test_audio_longer_than_the_node_accepts_is_rejected():
    envelope = V.sign(V.command("play", V.play_body(length=10**12), cid="huge-audio-0000001"), ["bulletin"])
    assert_rejected(verify(envelope), "limit_exceeded")
    small = Limits(audio_max_bytes=1000)
    assert_rejected(verify(play(), limits=small), "limit_exceeded")


def test_too_many_signatures_are_rejected_before_any_is_checked():
    assert_rejected(verify(play(signers=["stranger"] * 9)), "limit_exceeded")


def test_oversized_envelope_is_rejected_before_parsing():
    assert_rejected(verify(b"{" * 70000), "too_large")
    assert_rejected(verify(play(), limits=Limits(max_envelope_bytes=100)), "too_large")


@pytest.mark.parametrize("garbage,detail", [
    (b"", "envelope: not valid JSON"),
    (b"null", "envelope must be a JSON object"),
    (b"[]", "envelope must be a JSON object"),
    (b'"x"', "envelope must be a JSON object"),
    (b"\xff\xfe", "envelope: not UTF-8"),
    (b"[" * 5000 + b"]" * 5000, "envelope: nested too deeply"),
    (b'{"payloadType":1}', "envelope.payloadType must be a string"),
    (b'{"payloadType":"x","payload":"!!","signatures":[]}', "envelope.payload is not valid base64"),
    ("not bytes", "envelope must be bytes"),
    (None, "envelope must be bytes"),
    (12, "envelope must be bytes"),
])
def test_garbage_is_malformed_with_the_parser_s_own_detail(garbage, detail):
    # The parser's typed error, named exactly: a check that goes missing turns into another detail or into
    # internal_error, and this test notices.
    decision = verify(garbage)
    assert_rejected(decision, "malformed")
    assert decision.detail.startswith(detail), decision


def test_a_bug_inside_a_check_is_internal_error_not_malformed(monkeypatch):
    import node.trust.verifier as verifier

    def broken_check(*args):
        raise KeyError("roles")  # what a typo in a check looks like

    monkeypatch.setattr(verifier, "_check_targets", broken_check)
    decision = verify(play())
    assert_rejected(decision, "internal_error")
    assert decision.detail.startswith("KeyError at test_trust_verifier.py:"), decision


def test_every_refusal_names_the_exact_refused_bytes_by_sha256(monkeypatch):
    # Crash, trust update, stored envelope and non-bytes input included: the district's only handle on a
    # refusal whose command_id is null (tests/vectors cover each reason's command_id).
    import hashlib

    import node.trust.verifier as verifier
    from node.trust.verifier import verify_message, verify_stored

    envelope = play(signers=["revoked-bulletin"])
    digest = hashlib.sha256(envelope).hexdigest()
    assert verify(envelope).envelope_sha256 == digest
    stale = V.trust_envelope(V.trust_body(version=1))
    assert verify_message(stale, trust=TRUST, node_id=V.NODE_ID, now=NOW).envelope_sha256 == \
        hashlib.sha256(stale).hexdigest()
    assert verify_stored(envelope, trust=TRUST, node_id=V.NODE_ID, kinds=("play",)).envelope_sha256 == digest
    assert verify("not bytes").envelope_sha256 is None
    monkeypatch.setattr(verifier, "_check_targets", lambda *args: {}["roles"])
    crashed = verify(play())
    assert crashed.reason == "internal_error" and crashed.envelope_sha256 == hashlib.sha256(play()).hexdigest()


def test_a_bug_in_the_trust_update_path_is_internal_error_too(monkeypatch):
    import node.trust.verifier as verifier
    from node.trust.verifier import verify_message

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'version'")

    monkeypatch.setattr(verifier, "trust_update_from_envelope", broken)
    decision = verify_message(V.trust_envelope(), trust=TRUST, node_id=V.NODE_ID, now=NOW)
    assert_rejected(decision, "internal_error")


def test_plain_http_live_url_is_refused():
    """A correctly signed live relay over plain http would play whatever the network path delivers."""
    live = V.command("live", {"url": "http://radio.example/khan-cap", "max_duration": 1800, "level": "normal"},
                     cid="live-plain-http-0001")
    decision = verify(V.sign(live, ["live"]))
    assert_rejected(decision, "live_url_refused")
    assert "body.url" in decision.detail


def test_plain_http_live_schedule_slot_is_refused():
    body = V.schedule_body(5)
    live_slots = [i for i, slot in enumerate(body["slots"]) if "live" in slot]
    assert live_slots
    body["slots"][live_slots[0]]["live"]["url"] = "http://radio.example/vov1"
    decision = verify(V.sign(V.command("schedule", body, cid="schedule-http-live-01"), ["schedule"]))
    assert_rejected(decision, "live_url_refused")
    assert f"slots[{live_slots[0]}].live.url" in decision.detail


def test_live_url_with_another_scheme_stays_malformed():
    live = V.command("live", {"url": "rtsp://radio.example/x", "max_duration": 60, "level": "normal"},
                     cid="live-rtsp-scheme-0001")
    assert_rejected(verify(V.sign(live, ["live"])), "malformed")


def _stored(envelope, kinds=("play", "live"), **overrides):
    from node.trust.verifier import verify_stored

    kwargs = dict(trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, kinds=kinds)
    kwargs.update(overrides)
    return verify_stored(envelope, **kwargs)


def test_stored_command_with_zeroed_signature_is_refused_on_read_back():
    envelope = json.loads(play(cid="stored-zero-sig-0001", level="priority"))
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    assert_rejected(_stored(json.dumps(envelope).encode()), "bad_signature")


def test_stored_command_of_another_type_in_the_journal_is_refused():
    stop = V.sign(V.command("stop", {"content_id": None, "level": "normal", "all": False}, cid="stored-stop-0001"),
                  ["bulletin"])
    assert_rejected(_stored(stop), "unsupported_type")
    assert isinstance(_stored(stop, kinds=("stop",)), Accepted)


def test_stored_command_is_accepted_again_whatever_its_id_or_age():
    """Replay and expiry are the reader's decisions (the id is in seen_ids by design)."""
    old = play(cid="stored-old-play-0001", not_before=NOW - dt.timedelta(days=40),
               expires=NOW - dt.timedelta(days=20))
    decision = _stored(old)
    assert isinstance(decision, Accepted) and decision.command.id == "stored-old-play-0001"


def test_stored_command_for_another_node_is_refused():
    other = play(cid="stored-other-node-01", targets=("99999-01",))
    assert_rejected(_stored(other), "wrong_target")
