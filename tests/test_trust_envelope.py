"""The wire format pieces: PAE bytes, keyids, strict JSON and base64, durations and RFC 3339 times."""

import base64
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust.durations import format_time, parse_duration, parse_time
from node.trust.envelope import PAYLOAD_COMMAND, pae, parse_envelope, sign_envelope
from node.trust.reasons import BY_CODE, TABLE

# The worked example printed in docs/protocol.md; another implementation must reproduce these bytes.
SEED = bytes.fromhex("286f208c2b6fd1f3a93b950e689a7d429fc276ac4e7f764ea7e247066671c283")
PAE_HEX = ("445353457631203336206170706c69636174696f6e2f766e642e737065616b65722e636f6d6d616e642b6a736f6e"
           "2037207b2276223a317d")
SIG_HEX = ("c34254b0f5e6f5a91f961ce6624dd1c08887ed575c66fb3b3af956ca891c54bd"
           "586d1c94cbaaa8bab215a57fded0d4eb22e8edd68918098cbeeb3f1b244d8307")


def test_pae_matches_the_documented_worked_example():
    assert pae(PAYLOAD_COMMAND, b'{"v":1}') == bytes.fromhex(PAE_HEX)
    assert pae(PAYLOAD_COMMAND, b'{"v":1}') == b'DSSEv1 36 application/vnd.speaker.command+json 7 {"v":1}'


def test_signature_and_keyid_match_the_documented_worked_example():
    key = ed25519.from_seed(SEED)
    assert key.sign(bytes.fromhex(PAE_HEX)).hex() == SIG_HEX
    assert ed25519.keyid_of_key(key) == "2cf37c9bd74479f207c9c17e26b98acd0b169292738238630a3a0674c3f463e2"


def test_pae_counts_bytes_not_characters():
    assert pae("t", "Ấp".encode()) == b"DSSEv1 1 t 4 " + "Ấp".encode()  # 2 characters, 4 bytes


def test_envelope_round_trip_keeps_exact_payload_bytes():
    payload = b'{"b": 1,  "a":2}'  # odd spacing: must never be re-serialized
    envelope = parse_envelope(sign_envelope(PAYLOAD_COMMAND, payload, [ed25519.from_seed(SEED)]))
    assert envelope.payload == payload
    assert ed25519.verify(ed25519.public_raw(ed25519.from_seed(SEED)), envelope.signatures[0].sig,
                          envelope.signed_bytes())


def test_url_safe_base64_is_accepted_as_dsse_allows():
    payload = b"\xfb\xff" * 10
    document = json.loads(sign_envelope(PAYLOAD_COMMAND, payload, [ed25519.from_seed(SEED)]))
    document["payload"] = base64.urlsafe_b64encode(payload).decode()
    assert parse_envelope(json.dumps(document).encode()).payload == payload


@pytest.mark.parametrize("data,reason", [
    (b'{"payloadType":"x","payload":"","signatures":[{"keyid":"k","sig":""}]}', "unsupported_type"),
    (b'{"payloadType":"%s","payload":"e30=","signatures":[]}' % PAYLOAD_COMMAND.encode(), "malformed"),
    (b'{"payloadType":"%s","payload":"e30","signatures":[{"keyid":"k","sig":""}]}' % PAYLOAD_COMMAND.encode(),
     "malformed"),
    (b'{"payloadType":"%s","payload":"e30=","payload":"e30=","signatures":[]}' % PAYLOAD_COMMAND.encode(),
     "malformed"),
    (b'{"payloadType":"%s","payload":NaN,"signatures":[]}' % PAYLOAD_COMMAND.encode(), "malformed"),
])
def test_bad_envelopes_are_rejected_with_stable_reasons(data, reason):
    with pytest.raises(RemoteDataError) as info:
        parse_envelope(data)
    assert info.value.reason == reason


def test_verify_refuses_wrong_sizes_without_raising():
    assert ed25519.verify(b"short", b"\x00" * 64, b"m") is False
    assert ed25519.verify(b"\x00" * 32, b"\x00" * 10, b"m") is False


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800),
                                          ("45", 45), ("1.5h", 5400), ("1w", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "-5m", "0s", "5 minutes", "2y", "1e3s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rfc3339_times_parse_to_utc_and_format_back():
    assert parse_time("2026-11-26T12:30:00+07:00") == dt.datetime(2026, 11, 26, 5, 30, tzinfo=dt.timezone.utc)
    assert format_time(parse_time("2026-11-26T05:30:00.123456789Z")) == "2026-11-26T05:30:00Z"


@pytest.mark.parametrize("text", ["2026-11-26 05:30:00Z", "2026-11-26T05:30:00", "2026-02-30T00:00:00Z",
                                  "2026-11-26t05:30:00z", "26/11/2026", "2026-11-26T05:30:00+25:00"])
def test_ambiguous_or_impossible_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_reason_table_has_unique_codes_and_only_benign_silence():
    assert len(BY_CODE) == len(TABLE)
    assert {r.code for r in TABLE if not r.reported} == {"not_for_us", "duplicate"}


def test_protocol_doc_reason_table_mirrors_the_code():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes|no) \| (.+) \|$", doc, flags=re.M)
    assert {(code, reported == "yes") for code, reported, _ in rows} == {(r.code, r.reported) for r in TABLE}


# One fault at a time, each with the exact reason and detail the parser gives: a check that is weakened
# or removed lets the envelope through, or another check catches it with another detail, and the row
# fails (mutation testing found these holes: NaN accepted, '>' turned '>=', details lost).
_T = PAYLOAD_COMMAND
_SIG = {"keyid": "k1", "sig": "AAAA"}


def _envelope(**fields) -> bytes:
    document = {"payloadType": _T, "payload": "e30=", "signatures": [_SIG], **fields}
    return json.dumps({k: v for k, v in document.items() if v is not _DROP}).encode()


_DROP = object()


@pytest.mark.parametrize("data,reason,detail", [
    (b'{"payloadType":"%s","payload":"e30=","signatures":[{"keyid":"k1","sig":"AAAA"}],"n":NaN}' % _T.encode(),
     "malformed", "envelope: not valid JSON (NaN is not JSON)"),
    (b'{"payloadType":"%s","payload":"e30=","payload":"e30=","signatures":[]}' % _T.encode(),
     "malformed", "envelope: not valid JSON (duplicate key 'payload')"),
    (_envelope(extra=1, zzz=2), "malformed", "envelope: unknown field 'extra'"),
    (_envelope(payloadType=7), "malformed", "envelope.payloadType must be a string"),
    (_envelope(payload=5), "malformed", "envelope.payload must be a base64 string"),
    (_envelope(payload="e30"), "malformed", "envelope.payload is not valid base64"),
    (_envelope(signatures=[]), "malformed", "envelope.signatures must be a non-empty list"),
    (_envelope(signatures={"keyid": "k"}), "malformed", "envelope.signatures must be a non-empty list"),
    (_envelope(signatures=[_SIG] * 9), "limit_exceeded", "envelope.signatures: 9 > 8"),
    (_envelope(signatures=["k1"]), "malformed", "envelope.signatures[0] must be an object with keyid and sig"),
    (_envelope(signatures=[{**_SIG, "x": 1}]), "malformed",
     "envelope.signatures[0] must be an object with keyid and sig"),
    (_envelope(signatures=[{**_SIG, "keyid": ""}]), "malformed",
     "envelope.signatures[0].keyid must be a short non-empty string"),
    (_envelope(signatures=[{**_SIG, "keyid": 5}]), "malformed",
     "envelope.signatures[0].keyid must be a short non-empty string"),
    (_envelope(signatures=[{**_SIG, "keyid": "k" * 129}]), "malformed",
     "envelope.signatures[0].keyid must be a short non-empty string"),
    (_envelope(signatures=[_SIG, {**_SIG, "sig": "!"}]), "malformed", "envelope.signatures[1].sig is not valid base64"),
    (_envelope(payloadType="text/plain"), "unsupported_type", "payloadType 'text/plain'"),
    (_envelope(payloadType="t" * 100), "unsupported_type", "payloadType " + repr("t" * 80)),
])
def test_each_envelope_fault_has_its_own_reason_and_detail(data, reason, detail):
    with pytest.raises(RemoteDataError) as info:
        parse_envelope(data)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_envelope_limits_are_inclusive():
    at_limit = _envelope(signatures=[_SIG] * 8)
    assert len(parse_envelope(at_limit).signatures) == 8
    assert parse_envelope(_envelope(signatures=[{**_SIG, "keyid": "k" * 128}])).signatures[0].keyid == "k" * 128
    assert parse_envelope(at_limit, max_bytes=len(at_limit)).payload == b"{}"
    with pytest.raises(RemoteDataError) as info:
        parse_envelope(at_limit, max_bytes=len(at_limit) - 1)
    assert (info.value.reason, info.value.detail) == ("too_large", f"envelope is {len(at_limit)} bytes, "
                                                                   f"limit {len(at_limit) - 1}")


def test_one_url_safe_character_selects_the_url_safe_alphabet():
    from node.trust.envelope import b64decode

    assert b64decode("+/+/", "x") == b"\xfb\xff\xbf"   # standard alphabet
    assert b64decode("-AAA", "x") == base64.b64decode("+AAA")
    assert b64decode("_AAA", "x") == base64.b64decode("/AAA")
    assert b64decode("-_-_", "x") == b"\xfb\xff\xbf"


def test_a_json_error_is_quoted_up_to_80_characters():
    from node.trust.envelope import strict_json

    key = "k" * 100
    with pytest.raises(RemoteDataError) as info:
        strict_json('{"%s": 1, "%s": 2}' % (key, key), "x")
    assert info.value.detail == "x: not valid JSON (" + f"duplicate key {key!r}"[:80] + ")"


def test_strict_json_reads_text_as_well_as_bytes():
    from node.trust.envelope import strict_json

    assert strict_json('{"a": 1}', "x") == {"a": 1}
    assert strict_json(b'{"a": 1}', "x") == {"a": 1}


def test_envelopes_are_written_as_compact_json_in_field_order():
    # docs/protocol.md "Envelope serialization": what the district tools send, byte for byte.
    from node.trust.envelope import encode_envelope

    assert encode_envelope(PAYLOAD_COMMAND, b"{}", [("k1", b"\x00\x01")]) == (
        b'{"payloadType":"application/vnd.speaker.command+json","payload":"e30=",'
        b'"signatures":[{"keyid":"k1","sig":"AAE="}]}')
