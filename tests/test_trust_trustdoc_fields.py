"""The trust document parser and its update rules, one fault at a time with the exact reason and detail.

parse_trust_body needs no signature, so most rows are pure and fast; the signature rows use the fixed
keys of tests/vectors/make_vectors.py. Every limit is tested at its value and one past it.
"""

import datetime as dt
import json

import pytest
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust.envelope import PAYLOAD_TRUST, parse_envelope, sign_envelope
from node.trust.trustdoc import (
    MAX_KEYS,
    MAX_NAME_CHARS,
    load_trust_file,
    parse_trust_body,
    root_signers,
    verify_trust_update,
)

NOW = V.NOW
UTC = dt.timezone.utc
_DROP = object()
BULLETIN = V.keyid("bulletin")
B16 = BULLETIN[:16]
ROOT1 = V.keyid("root-1")


def body_with(**changes) -> dict:
    body = V.trust_body()
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return body


def with_key(**changes) -> dict:
    body = V.trust_body()
    entry = body["keys"][BULLETIN]
    for name, value in changes.items():
        if value is _DROP:
            del entry[name]
        else:
            entry[name] = value
    return body


def with_root(change) -> dict:
    body = V.trust_body()
    change(body["root"])
    return body


def fault(body) -> tuple[str, str]:
    with pytest.raises(RemoteDataError) as info:
        parse_trust_body(json.dumps(body).encode())
    return info.value.reason, info.value.detail


def raised(call) -> tuple[str, str]:
    with pytest.raises(RemoteDataError) as info:
        call()
    return info.value.reason, info.value.detail


def seeded(i: int):
    return ed25519.from_seed(bytes([i]) * 32)


def root_entry(key) -> dict:
    return {"public": ed25519.public_b64(key)}


def _set(mapping, name, value):
    mapping[name] = value


@pytest.mark.parametrize("body,reason,detail", [
    ([], "malformed", "trust: trust must be an object"),
    (body_with(v=_DROP), "malformed", "trust: trust.v is missing"),
    (body_with(version=_DROP, expires=_DROP), "malformed", "trust: trust.expires is missing"),
    (body_with(zz=1, extra=2), "malformed", "trust: trust: unknown field 'extra'"),
    (body_with(type="command"), "malformed", "trust: type must be 'trust'"),
    (body_with(v=2), "unsupported_version", "trust v=2"),
    (body_with(v=True), "unsupported_version", "trust v=True"),
    (body_with(root=[]), "malformed", "trust: root must be an object"),
    (with_root(lambda r: r.pop("threshold")), "malformed", "trust: root.threshold is missing"),
    (with_root(lambda r: _set(r, "x", 1)), "malformed", "trust: root: unknown field 'x'"),
    (with_root(lambda r: _set(r, "keys", [])), "malformed", "trust: root.keys must be an object of 1..64 keys"),
    (with_root(lambda r: _set(r, "keys", {})), "malformed", "trust: root.keys must be an object of 1..64 keys"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: []})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}] must be an object"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: {}})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}].public is missing"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: {**r["keys"][ROOT1], "name": "r"}})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}]: unknown field 'name'"),
    (with_root(lambda r: _set(r, "keys", {ROOT1.upper(): r["keys"][ROOT1]})), "malformed",
     f"trust: root.keys[{ROOT1.upper()[:16]}]: keyid must be 64 lower-case hex characters"),
    (with_root(lambda r: _set(r, "keys", {ROOT1[:63]: r["keys"][ROOT1]})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}]: keyid must be 64 lower-case hex characters"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: {"public": "!!"}})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}].public is not valid base64"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: {"public": "AAAA"}})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}].public must be a 32-byte Ed25519 key"),
    (with_root(lambda r: _set(r, "keys", {ROOT1: root_entry(seeded(1))})), "malformed",
     f"trust: root.keys[{ROOT1[:16]}]: keyid is not the SHA-256 of the public key"),
    (with_root(lambda r: _set(r, "threshold", 0)), "malformed", "trust: root.threshold must be an integer >= 1"),
    (with_root(lambda r: _set(r, "threshold", True)), "malformed", "trust: root.threshold must be an integer >= 1"),
    (with_root(lambda r: _set(r, "threshold", 1.0)), "malformed", "trust: root.threshold must be an integer >= 1"),
    (with_root(lambda r: _set(r, "threshold", 3)), "malformed",
     "trust: root.threshold is larger than the number of root keys"),
    (body_with(keys=[]), "malformed", "trust: keys must be an object of at most 64 keys"),
    (with_key(name=_DROP), "malformed", f"trust: keys[{B16}].name is missing"),
    (with_key(public=_DROP), "malformed", f"trust: keys[{B16}].public is missing"),
    (with_key(roles=_DROP), "malformed", f"trust: keys[{B16}].roles is missing"),
    (with_key(group="x"), "malformed", f"trust: keys[{B16}]: unknown field 'group'"),
    (with_key(name=""), "malformed", f"trust: keys[{B16}].name must be a short string"),
    (with_key(name="n" * 65), "malformed", f"trust: keys[{B16}].name must be a short string"),
    (with_key(name=5), "malformed", f"trust: keys[{B16}].name must be a short string"),
    (with_key(roles="bulletin"), "malformed", f"trust: keys[{B16}].roles must be a list of role names"),
    (with_key(roles=["bulletin", 5]), "malformed", f"trust: keys[{B16}].roles must be a list of role names"),
    (with_key(roles=["Bulletin"]), "malformed", f"trust: keys[{B16}].roles must be a list of role names"),
    (with_key(roles=["r" * 33]), "malformed", f"trust: keys[{B16}].roles must be a list of role names"),
    (with_key(public=V.trust_body()["keys"][V.keyid("live")]["public"]), "malformed",
     f"trust: keys[{B16}]: keyid is not the SHA-256 of the public key"),
    (with_key(not_before="2026-01-01"), "malformed",
     f"trust: keys[{B16}].not_before: not an RFC 3339 time: '2026-01-01' (want e.g. 2026-11-26T05:30:00Z)"),
    (with_key(expires=20280101), "malformed", f"trust: keys[{B16}].expires: time must be a string"),
    (body_with(thresholds=[]), "malformed", "trust: thresholds must be an object"),
    (body_with(thresholds={"emergency": 0}), "malformed", "trust: thresholds.emergency must be an integer >= 1"),
    (body_with(thresholds={"emergency": 3}), "malformed",
     "trust: thresholds.emergency=3 but only 2 key(s) hold that role"),
    (body_with(thresholds={"release": 1}), "malformed", "trust: thresholds.release=1 but only 0 key(s) hold that role"),
    (body_with(revoked="x"), "malformed", "trust: revoked must be a list of keyids"),
    (body_with(revoked=[BULLETIN, 5]), "malformed", "trust: revoked must be a list of keyids"),
    (body_with(revoked=[BULLETIN.upper()]), "malformed", "trust: revoked must be a list of keyids"),
    (body_with(issued_at="yesterday"), "malformed",
     "trust: issued_at: not an RFC 3339 time: 'yesterday' (want e.g. 2026-11-26T05:30:00Z)"),
    (body_with(expires=None), "malformed", "trust: expires: time must be a string"),
    (body_with(expires="2026-01-01T00:00:00Z"), "malformed", "trust: expires must be after issued_at"),
    (body_with(version=0), "malformed", "trust: version must be an integer >= 1"),
    (body_with(version=2**53 + 1), "malformed", "trust: version must be an integer >= 1"),
    (body_with(version="4"), "malformed", "trust: version must be an integer >= 1"),
])
def test_each_trust_document_fault_has_its_reason_and_detail(body, reason, detail):
    assert fault(body) == (reason, detail)


def test_a_trust_document_keeps_every_field():
    payload = V.encode(V.trust_body())
    document = parse_trust_body(payload, b"the envelope")
    assert (document.version, document.issued_at, document.expires) == (
        3, dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 12, 31, tzinfo=UTC))
    assert dict(document.root_keys) == {V.keyid(n): ed25519.public_raw(V.key(n)) for n in V.ROOTS}
    assert document.root_threshold == 2
    assert dict(document.thresholds) == {"emergency": 2}
    assert document.revoked == frozenset({V.keyid("revoked-bulletin")})
    assert (document.payload, document.envelope) == (payload, b"the envelope")
    key = document.keys[BULLETIN]
    assert (key.keyid, key.name, key.public, key.roles, key.not_before, key.expires) == (
        BULLETIN, "bulletin", ed25519.public_raw(V.key("bulletin")), frozenset({"bulletin"}),
        dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC))
    assert document.threshold("emergency") == 2 and document.threshold("bulletin") == 1
    assert document.key_named("schedule").roles == frozenset({"config", "schedule", "time"})
    assert document.key_named("nobody") is None
    assert parse_trust_body(payload).envelope == b""


def test_optional_parts_of_a_trust_document_default_to_nothing():
    body = body_with(thresholds=_DROP, revoked=_DROP)
    del body["keys"][BULLETIN]["not_before"]
    body["keys"][BULLETIN]["expires"] = None
    document = parse_trust_body(json.dumps(body).encode())
    assert (dict(document.thresholds), document.revoked) == ({}, frozenset())
    assert (document.keys[BULLETIN].not_before, document.keys[BULLETIN].expires) == (None, None)
    assert document.threshold("emergency") == 1


def test_trust_document_limits_are_inclusive():
    roots = [seeded(i) for i in range(1, MAX_KEYS + 1)]
    body = body_with(version=2**53, thresholds={"emergency": 2, "bulletin": 2}, keys={}, revoked=[])
    body["root"] = {"keys": {ed25519.keyid_of_key(k): root_entry(k) for k in roots}, "threshold": MAX_KEYS}
    for i, key in enumerate(seeded(100 + i) for i in range(MAX_KEYS)):
        body["keys"][ed25519.keyid_of_key(key)] = {"name": "n" * MAX_NAME_CHARS, "public": ed25519.public_b64(key),
                                                   "roles": ["emergency", "bulletin", "r" * 32]}
    document = parse_trust_body(json.dumps(body).encode())
    assert (len(document.root_keys), document.root_threshold, len(document.keys), document.version) == (
        MAX_KEYS, MAX_KEYS, MAX_KEYS, 2**53)
    extra = seeded(250)
    body["root"]["keys"][ed25519.keyid_of_key(extra)] = root_entry(extra)
    assert fault(body) == ("malformed", "trust: root.keys must be an object of 1..64 keys")
    body["root"]["keys"].pop(ed25519.keyid_of_key(extra))
    body["keys"][ed25519.keyid_of_key(extra)] = {"name": "x", "public": ed25519.public_b64(extra), "roles": []}
    assert fault(body) == ("malformed", "trust: keys must be an object of at most 64 keys")


def test_a_trust_document_may_hold_no_signing_keys_and_a_key_may_hold_no_role():
    document = parse_trust_body(json.dumps(body_with(keys={}, thresholds={})).encode())
    assert dict(document.keys) == {}
    assert parse_trust_body(json.dumps(with_key(roles=[])).encode()).keys[BULLETIN].roles == frozenset()
    assert parse_trust_body(json.dumps(with_root(lambda r: _set(r, "threshold", 1))).encode()).root_threshold == 1


# -- the provisioned file ----------------------------------------------------------------------------------

def test_the_provisioned_file_loads_from_bytes_a_bytearray_or_a_path(tmp_path):
    data = V.trust_envelope()
    path = tmp_path / "trust.json"
    path.write_bytes(data)
    for source in (data, bytearray(data), path, str(path)):
        document = load_trust_file(source)
        assert (document.version, document.envelope) == (3, data)


def test_the_provisioned_file_counts_only_root_signatures_that_verify():
    assert raised(lambda: load_trust_file(V.trust_envelope(signers=["root-1"]))) == (
        "root_threshold_not_met", "1 of 2 root signatures")
    assert load_trust_file(V.trust_envelope(signers=["stranger", "bulletin", "root-1", "root-2"])).version == 3
    doubled = V.trust_envelope(signers=["root-1", "root-1"])
    assert raised(lambda: load_trust_file(doubled)) == ("root_threshold_not_met", "1 of 2 root signatures")


def test_a_forged_root_signature_before_the_good_ones_does_not_stop_the_count():
    document = json.loads(V.trust_envelope(signers=["root-1", "root-1", "root-2"]))
    document["signatures"][0]["sig"] = document["signatures"][2]["sig"]  # root-2's signature under root-1's id
    assert load_trust_file(json.dumps(document).encode()).version == 3


def test_a_trust_envelope_may_be_four_times_a_command_and_carry_up_to_64_signatures():
    body = V.trust_body()
    body["keys"][BULLETIN]["roles"] = ["bulletin"] + [f"r{i:05d}" for i in range(9000)]
    big = V.trust_envelope(body)
    assert 65536 < len(big) <= 4 * 65536
    assert load_trust_file(big).keys[BULLETIN].roles >= {"bulletin", "r08999"}
    body["keys"][BULLETIN]["roles"] = ["bulletin"] + [f"r{i:05d}" for i in range(22000)]
    huge = V.trust_envelope(body)
    assert raised(lambda: load_trust_file(huge)) == ("too_large", f"envelope is {len(huge)} bytes, limit 262144")
    many = V.trust_envelope(signers=V.ROOTS + ["stranger"] * 62)
    assert load_trust_file(many).version == 3
    too_many = V.trust_envelope(signers=V.ROOTS + ["stranger"] * 63)
    assert raised(lambda: load_trust_file(too_many)) == ("limit_exceeded", "envelope.signatures: 65 > 64")


def test_a_command_envelope_is_not_a_trust_file():
    command = V.sign(V.command("play", V.play_body(), cid="not-a-trust-file-01"), ["bulletin"])
    expected = ("unsupported_type", f"expected {PAYLOAD_TRUST}")
    assert raised(lambda: load_trust_file(command)) == expected
    assert raised(lambda: verify_trust_update(command, current_trust=TRUST, now_or_floor=NOW)) == expected


def test_root_signers_skip_revoked_unknown_and_repeated_keys():
    envelope = parse_envelope(V.trust_envelope(signers=["stranger", "root-1", "root-1", "root-2"]),
                              max_signatures=64)
    assert root_signers(envelope, TRUST.root_keys) == {ROOT1, V.keyid("root-2")}
    assert root_signers(envelope, TRUST.root_keys, revoked={ROOT1}) == {V.keyid("root-2")}


# -- updates -------------------------------------------------------------------------------------------

def update(body, signers=V.ROOTS, current=TRUST, at=NOW):
    return verify_trust_update(V.trust_envelope(body, signers), current_trust=current, now_or_floor=at)


def test_an_update_keeps_its_own_bytes():
    body = body_with(version=4)
    envelope = V.trust_envelope(body)
    new = verify_trust_update(envelope, current_trust=TRUST, now_or_floor=NOW)
    assert (new.version, new.payload, new.envelope) == (4, V.encode(body), envelope)


@pytest.mark.parametrize("body,signers,expected", [
    (body_with(version=4), ["root-1"], ("root_threshold_not_met", "1 of 2 current root signatures")),
    (V.trust_body(), V.ROOTS, ("duplicate", "trust version 3 again")),
    (body_with(version=3, revoked=[]), V.ROOTS, ("rollback", "trust version 3 <= current 3")),
    (body_with(version=2), V.ROOTS, ("rollback", "trust version 2 <= current 3")),
    (body_with(version=4, expires="2026-11-26T05:30:00Z"), V.ROOTS, ("expired", "trust version 4 expired")),
    (V.trust_body(version=4, roots=["root-2", "new-root-1"]), V.ROOTS,
     ("root_threshold_not_met", "1 of 2 new root signatures")),
])
def test_each_trust_update_fault_has_its_reason_and_detail(body, signers, expected):
    assert raised(lambda: update(body, signers)) == expected


def test_an_update_is_valid_until_the_instant_it_expires():
    body = body_with(version=4, expires="2026-11-26T05:30:01Z")
    assert update(body).version == 4
    assert raised(lambda: update(body, at=NOW + dt.timedelta(seconds=1))) == ("expired", "trust version 4 expired")


def test_a_root_revoked_by_the_current_document_cannot_sign_the_next_one():
    current = load_trust_file(V.trust_envelope(V.trust_body(revoked=["revoked-bulletin", "root-1"])))
    assert raised(lambda: update(body_with(version=4), current=current)) == (
        "root_threshold_not_met", "1 of 2 current root signatures")


def test_raising_the_root_threshold_alone_needs_the_new_threshold_of_signatures():
    three = ["root-1", "root-2", "new-root-1"]
    current = load_trust_file(V.trust_envelope(V.trust_body(roots=three, root_threshold=2)))
    raised_threshold = V.trust_body(version=4, roots=three, root_threshold=3)
    assert raised(lambda: update(raised_threshold, ["root-1", "root-2"], current)) == (
        "root_threshold_not_met", "2 of 3 new root signatures")
    assert update(raised_threshold, three, current).root_threshold == 3
    same_root = V.trust_body(version=4, roots=three, root_threshold=2)
    assert update(same_root, ["root-1", "new-root-1"], current).version == 4


def test_an_update_signed_by_a_current_root_revoked_in_the_new_document_still_counts_for_the_current_root():
    # Revocation in the NEW document takes effect after it is accepted; the rotation check reads the new
    # root keys only, not the new revocations.
    three = ["root-1", "root-2", "new-root-1"]
    new_root = V.trust_body(version=4, roots=["root-2", "new-root-1"], root_threshold=2)
    new_root["revoked"] = sorted([V.keyid("revoked-bulletin"), V.keyid("root-2")])
    document = update(new_root, three)
    assert V.keyid("root-2") in document.root_keys and V.keyid("root-2") in document.revoked


def test_a_sign_envelope_trust_document_with_keys_in_any_order_verifies():
    payload = json.dumps(V.trust_body(version=4), indent=2).encode()
    envelope = sign_envelope(PAYLOAD_TRUST, payload, [V.key("root-2"), V.key("root-1")])
    assert verify_trust_update(envelope, current_trust=TRUST, now_or_floor=NOW).payload == payload


def test_a_one_character_key_name_is_enough():
    assert parse_trust_body(json.dumps(with_key(name="b")).encode()).keys[BULLETIN].name == "b"


def test_a_trust_payload_that_is_not_json_names_the_trust_payload():
    with pytest.raises(RemoteDataError) as info:
        parse_trust_body(b'{"v":1,"v":1}')
    assert (info.value.reason, info.value.detail) == ("malformed", "trust payload: not valid JSON (duplicate key 'v')")
