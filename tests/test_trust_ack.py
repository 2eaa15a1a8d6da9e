"""Record acknowledgements (node/trust/ack.py): who may make a node forget records, one fault at a time.

Pure: fixed keys from tests/vectors/make_vectors.py. A forged or misdirected acknowledgement could only
cause loss of proof-of-play, so each refusal is pinned to its exact reason and detail.
"""

import datetime as dt
import json

import pytest
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust.ack import MAX_ACK_BYTES, MAX_IDS, encode_ack_body, verify_ack
from node.trust.envelope import PAYLOAD_ACK, PAYLOAD_COMMAND
from node.trust.trustdoc import load_trust_file

NOW = V.NOW
IDS = V.ACK_IDS
NO_SIGNER = "no valid signature by a key with the 'ack' role"


def ack(body: bytes | None = None, signers=("collector",)) -> bytes:
    return V.sign_payload(PAYLOAD_ACK, V.ack_body() if body is None else body, list(signers))


def body(**fields) -> bytes:
    return json.dumps({"v": 1, "node": V.NODE_ID, "ids": IDS, **fields}).encode()


def refused(data, trust=TRUST, now=None) -> tuple[str, str]:
    with pytest.raises(RemoteDataError) as info:
        verify_ack(data, trust, V.NODE_ID, now)
    return info.value.reason, info.value.detail


def trust_with(change):
    document = V.trust_body()
    change(document["keys"][V.keyid("collector")])
    return load_trust_file(V.trust_envelope(document))


def test_a_collector_acknowledgement_names_the_records_to_delete_once_each():
    assert verify_ack(ack(), TRUST, V.NODE_ID) == IDS
    assert verify_ack(ack(), TRUST, V.NODE_ID, NOW) == IDS
    doubled = ack(body(ids=[IDS[0], IDS[1], IDS[0]]))
    assert verify_ack(doubled, TRUST, V.NODE_ID) == IDS


def test_the_district_encodes_acknowledgements_compactly_with_sorted_keys():
    assert encode_ack_body("27787-03", ("a" * 8,)) == b'{"ids":["aaaaaaaa"],"node":"27787-03","v":1}'
    assert verify_ack(ack(encode_ack_body(V.NODE_ID, IDS)), TRUST, V.NODE_ID) == IDS


@pytest.mark.parametrize("signers,reason", [
    (["stranger"], "unknown_key"),
    (["revoked-bulletin"], "revoked_key"),
    (["bulletin"], "role_not_allowed"),
    (["stranger", "bulletin"], "role_not_allowed"),
    (["bulletin", "stranger"], "role_not_allowed"),
    (["revoked-bulletin", "stranger"], "revoked_key"),
])
def test_only_a_key_with_the_ack_role_may_acknowledge(signers, reason):
    assert refused(ack(signers=signers)) == (reason, NO_SIGNER)


def test_a_good_signature_after_a_failed_one_still_counts():
    assert verify_ack(ack(signers=["stranger", "bulletin", "revoked-bulletin", "collector"]), TRUST, V.NODE_ID) == IDS


def test_a_forged_collector_signature_is_a_bad_signature():
    document = json.loads(ack())
    document["signatures"][0]["sig"] = json.loads(ack(signers=["bulletin"]))["signatures"][0]["sig"]
    assert refused(json.dumps(document).encode()) == ("bad_signature", NO_SIGNER)


def test_a_revoked_collector_key_cannot_acknowledge():
    document = V.trust_body(revoked=["revoked-bulletin", "collector"])
    assert refused(ack(), load_trust_file(V.trust_envelope(document))) == ("revoked_key", NO_SIGNER)


def test_key_validity_counts_only_when_the_node_has_trusted_time():
    def window(entry):
        entry["not_before"] = "2026-11-26T05:00:00Z"
        entry["expires"] = "2026-11-26T06:00:00Z"

    trust = trust_with(window)
    expiry = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc)
    start = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)
    assert refused(ack(), trust, expiry) == ("key_expired", NO_SIGNER)
    assert verify_ack(ack(), trust, V.NODE_ID, expiry - dt.timedelta(seconds=1)) == IDS
    assert verify_ack(ack(), trust, V.NODE_ID, start) == IDS
    assert refused(ack(), trust, start - dt.timedelta(seconds=1)) == ("key_not_yet_valid", NO_SIGNER)
    assert verify_ack(ack(), trust, V.NODE_ID, None) == IDS


def test_a_key_without_validity_times_acknowledges_at_any_time():
    def open_ended(entry):
        del entry["not_before"], entry["expires"]

    assert verify_ack(ack(), trust_with(open_ended), V.NODE_ID, NOW) == IDS


@pytest.mark.parametrize("payload,reason,detail", [
    (b"[]", "malformed", "ack must be an object with exactly v, node, ids"),
    (json.dumps({"v": 1, "node": V.NODE_ID}).encode(), "malformed", "ack must be an object with exactly v, node, ids"),
    (body(extra=1), "malformed", "ack must be an object with exactly v, node, ids"),
    (b"{nope", "malformed", "ack: not valid JSON (Expecting property name enclosed in double quotes: "
                             "line 1 column 2 (char 1))"),
    (body(v=2), "unsupported_version", "ack.v must be 1"),
    (body(v=True), "unsupported_version", "ack.v must be 1"),
    (body(node="27787-01"), "wrong_target", "ack.node '27787-01' is not this node"),
    (body(node="2" * 40), "wrong_target", f"ack.node {'2' * 32!r} is not this node"),
    (body(ids=[]), "malformed", "ack.ids must be a non-empty list"),
    (body(ids="01KB3Z5Q6R0000000000000000"), "malformed", "ack.ids must be a non-empty list"),
    (body(ids=[f"record-{i:04d}" for i in range(MAX_IDS + 1)]), "limit_exceeded", "ack.ids: 257 > 256"),
    (body(ids=[IDS[0], "../../etc"]), "malformed", "ack.ids[1] has an invalid value"),
    (body(ids=["short"]), "malformed", "ack.ids[0] has an invalid value"),
    (body(ids=["i" * 65]), "malformed", "ack.ids[0] has an invalid value"),
    (body(ids=[IDS[0] + "\n"]), "malformed", "ack.ids[0] has an invalid value"),
    (body(ids=[12345678]), "malformed", "ack.ids[0] has an invalid value"),
])
def test_each_acknowledgement_body_fault_has_its_reason_and_detail(payload, reason, detail):
    assert refused(ack(payload)) == (reason, detail)


def test_acknowledgement_limits_are_inclusive():
    ids = [f"r{i:07d}" for i in range(MAX_IDS)]
    assert verify_ack(ack(body(ids=ids)), TRUST, V.NODE_ID) == ids
    assert verify_ack(ack(body(ids=["i" * 64, "j" * 8])), TRUST, V.NODE_ID) == ["i" * 64, "j" * 8]


def test_an_acknowledgement_is_refused_by_type_and_size_before_any_signature_is_checked():
    command = V.sign_payload(PAYLOAD_COMMAND, V.ack_body(), ["collector"])
    assert refused(command) == ("unsupported_type", f"{PAYLOAD_COMMAND} is not an acknowledgement")
    oversized = b" " * (MAX_ACK_BYTES - len(ack())) + ack()
    assert verify_ack(oversized, TRUST, V.NODE_ID) == IDS
    assert refused(b" " + oversized) == ("too_large", f"envelope is {MAX_ACK_BYTES + 1} bytes, limit {MAX_ACK_BYTES}")


def _second_ack_key(window):
    def change(document):
        window(document["keys"][V.keyid("collector")])
        document["keys"][V.keyid("bulletin")]["roles"] = ["bulletin", "ack"]
    body = V.trust_body()
    change(body)
    return load_trust_file(V.trust_envelope(body))


def test_a_second_ack_key_counts_after_a_forged_expired_or_early_first_one():
    def expired(entry):
        entry["expires"] = "2026-11-26T05:00:00Z"

    def early(entry):
        entry["not_before"] = "2026-11-26T06:00:00Z"

    both = ack(signers=["collector", "bulletin"])
    assert verify_ack(both, _second_ack_key(expired), V.NODE_ID, NOW) == IDS
    assert verify_ack(both, _second_ack_key(early), V.NODE_ID, NOW) == IDS
    document = json.loads(both)
    document["signatures"][0]["sig"] = document["signatures"][1]["sig"]
    assert verify_ack(json.dumps(document).encode(), _second_ack_key(lambda entry: None), V.NODE_ID, NOW) == IDS
