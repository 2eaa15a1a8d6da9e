"""Attacks on the trust document: rollback, unsigned or under-signed updates, root rotation, revocation."""

import datetime as dt
import json

import pytest
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust.trustdoc import load_trust_file, verify_trust_update
from node.trust.verifier import Accepted, verify_command

NOW = V.NOW
CURRENT = TRUST


def update(body, signers=V.ROOTS, current=CURRENT, at=NOW):
    return verify_trust_update(V.trust_envelope(body, signers), current_trust=current, now_or_floor=at)


def reason_of(call) -> str:
    with pytest.raises(RemoteDataError) as info:
        call()
    return info.value.reason


def test_provisioned_trust_file_loads():
    assert CURRENT.version == 3
    assert CURRENT.threshold("emergency") == 2 and CURRENT.threshold("bulletin") == 1
    assert CURRENT.key_named("bulletin").roles == frozenset({"bulletin"})


def test_provisioned_trust_file_with_too_few_root_signatures_is_refused():
    under_signed = V.trust_envelope(signers=["root-1"])
    assert reason_of(lambda: load_trust_file(under_signed)) == "root_threshold_not_met"


def test_trust_file_whose_keyid_is_not_the_key_hash_is_refused():
    body = V.trust_body()
    entry = body["keys"].pop(V.keyid("bulletin"))
    body["keys"][V.keyid("stranger")] = entry  # attacker relabels a key
    assert reason_of(lambda: load_trust_file(V.trust_envelope(body))) == "malformed"


def test_unreachable_emergency_threshold_is_refused():
    body = V.trust_body(thresholds={"emergency": 3})
    assert reason_of(lambda: update({**body, "version": 4})) == "malformed"


def test_newer_trust_document_signed_by_root_is_accepted():
    new = update({**V.trust_body(), "version": 4})
    assert new.version == 4


def test_older_trust_document_is_rejected():
    assert reason_of(lambda: update(V.trust_body(version=2))) == "rollback"


def test_same_version_with_different_content_is_rejected():
    assert reason_of(lambda: update(V.trust_body(version=3, revoked=[]))) == "rollback"


def test_identical_trust_document_again_is_a_duplicate():
    assert reason_of(lambda: verify_trust_update(V.trust_envelope(), current_trust=CURRENT,
                                                 now_or_floor=NOW)) == "duplicate"


def test_trust_document_not_signed_by_root_is_rejected():
    body = V.trust_body(version=4, revoked=[])
    assert reason_of(lambda: update(body, signers=["bulletin", "emergency-a"])) == "root_threshold_not_met"


def test_trust_document_signed_by_only_one_of_two_roots_is_rejected():
    assert reason_of(lambda: update(V.trust_body(version=4), signers=["root-1"])) == "root_threshold_not_met"


def test_same_root_signing_twice_counts_once():
    assert reason_of(lambda: update(V.trust_body(version=4), signers=["root-1", "root-1"])) == \
        "root_threshold_not_met"


def test_expired_trust_document_is_rejected():
    body = V.trust_body(version=4, expires="2026-11-01T00:00:00Z")
    assert reason_of(lambda: update(body)) == "expired"


def test_expired_trust_document_is_rejected_at_the_floor_when_the_clock_is_untrusted():
    body = V.trust_body(version=4, expires="2026-11-01T00:00:00Z")
    floor = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    assert reason_of(lambda: update(body, at=floor)) == "expired"


def test_root_rotation_signed_by_old_and_new_roots_is_accepted_and_then_only_new_root_counts():
    rotated = V.trust_body(version=4, roots=["root-2", "new-root-1"], root_threshold=2)
    new = update(rotated, signers=["root-1", "root-2", "new-root-1"])
    assert set(new.root_keys) == {V.keyid("root-2"), V.keyid("new-root-1")}
    # After the rotation, the retired root-1 cannot help sign version 5.
    five = V.trust_body(version=5, roots=["root-2", "new-root-1"], root_threshold=2)
    assert reason_of(lambda: update(five, signers=["root-1", "root-2"], current=new)) == \
        "root_threshold_not_met"
    assert update(five, signers=["root-2", "new-root-1"], current=new).version == 5


def test_root_rotation_not_signed_by_the_new_root_is_rejected():
    rotated = V.trust_body(version=4, roots=["root-2", "new-root-1"], root_threshold=2)
    assert reason_of(lambda: update(rotated, signers=["root-1", "root-2"])) == "root_threshold_not_met"


def test_root_rotation_signed_only_by_the_new_root_is_rejected():
    rotated = V.trust_body(version=4, roots=["new-root-1"], root_threshold=1)
    assert reason_of(lambda: update(rotated, signers=["new-root-1"])) == "root_threshold_not_met"


def test_revoking_a_key_in_a_trust_update_stops_its_commands():
    command = V.sign(V.command("play", V.play_body(), cid="after-revocation-01"), ["bulletin"])
    kwargs = dict(node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC, now=NOW, seen=set(), versions={})
    assert isinstance(verify_command(command, trust=CURRENT, **kwargs), Accepted)
    new = update(V.trust_body(version=4, revoked=["revoked-bulletin", "bulletin"]))
    assert verify_command(command, trust=new, **kwargs).reason == "revoked_key"


def test_command_envelope_offered_as_trust_update_is_rejected():
    command = V.sign(V.command("play", V.play_body(), cid="not-a-trust-doc-01"), ["bulletin"])
    assert reason_of(lambda: verify_trust_update(command, current_trust=CURRENT, now_or_floor=NOW)) == \
        "unsupported_type"


def test_trust_document_with_unknown_field_is_rejected():
    body = {**V.trust_body(version=4), "extra": json.loads("{}")}
    assert reason_of(lambda: update(body)) == "malformed"
