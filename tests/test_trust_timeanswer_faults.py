"""Signed time answers (node/trust/timeanswer.py) one fault at a time: exact reason and detail, every
bound (nonce age, uncertainty, radius, nonce count, size) at its value and one step past. Pure: fixed
keys from tests/vectors/make_vectors.py; the "schedule" key holds the `time` role."""

import datetime as dt
import json

import pytest
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_TIME
from node.trust.timeanswer import (
    DEFAULT_TIME_POLICY,
    MAX_NONCES,
    MAX_RADIUS_MS,
    NonceBook,
    SignedTime,
    TimeAnswer,
    TimePolicy,
    answer_body,
    format_answer_time,
    parse_answer,
    parse_request,
    request_body,
    verify_time_answer,
)
from node.trust.trustdoc import load_trust_file

NOW = V.NOW
UTC = dt.timezone.utc
A, B, C = "a" * 64, "b" * 64, "c" * 64
SCHEDULE = V.keyid("schedule")


def answer(nonces=(A,), time=NOW, radius=250, node=V.NODE_ID, signers=("schedule",)) -> bytes:
    return V.sign_payload(PAYLOAD_TIME, answer_body(node, nonces, time, radius), list(signers))


def decide(envelope, issued=None, received=100.5, trust=TRUST, policy=DEFAULT_TIME_POLICY):
    return verify_time_answer(envelope, trust=trust, node_id=V.NODE_ID, issued={A: 100.0} if issued is None else issued,
                              received_monotonic=received, policy=policy)


def refused(decision, reason, detail=None, keyid=None):
    assert not isinstance(decision, SignedTime), decision
    assert (decision.reason, decision.report) == (reason, True), decision
    if detail is not None:
        assert decision.detail == detail, decision
    if keyid is not None:
        assert decision.keyid == keyid, decision
    assert decision.command_id is None
    return decision


# -- the request and the answer body, as bytes -------------------------------------------------------------

def test_a_request_is_compact_json_with_the_nonce():
    assert request_body(A) == b'{"v":1,"nonce":"' + A.encode() + b'"}'
    assert parse_request(request_body(B)) == B


@pytest.mark.parametrize("payload,reason,detail", [
    (b"[]", "malformed", "time request must be exactly {v, nonce}"),
    (b'{"v":1}', "malformed", "time request must be exactly {v, nonce}"),
    (json.dumps({"v": 1, "nonce": A, "x": 1}).encode(), "malformed", "time request must be exactly {v, nonce}"),
    (json.dumps({"v": 2, "nonce": A}).encode(), "unsupported_version", "time request v must be 1"),
    (json.dumps({"v": True, "nonce": A}).encode(), "unsupported_version", "time request v must be 1"),
    (json.dumps({"v": 1, "nonce": A.upper()}).encode(), "malformed",
     "time request nonce must be 64 lower-case hex characters"),
    (json.dumps({"v": 1, "nonce": 5}).encode(), "malformed", "time request nonce must be 64 lower-case hex characters"),
    (b"{", "malformed", "time request: not valid JSON (Expecting property name enclosed in double quotes: "
                        "line 1 column 2 (char 1))"),
])
def test_each_time_request_fault_has_its_reason_and_detail(payload, reason, detail):
    with pytest.raises(RemoteDataError) as info:
        parse_request(payload)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_answer_times_are_written_in_utc_milliseconds():
    plus7 = dt.timezone(dt.timedelta(hours=7))
    assert format_answer_time(dt.datetime(2026, 11, 26, 12, 30, 0, 250999, tzinfo=plus7)) == "2026-11-26T05:30:00.250Z"
    assert format_answer_time(dt.datetime(2026, 11, 26, 5, 30, 0, 7000, tzinfo=UTC)) == "2026-11-26T05:30:00.007Z"


def test_the_answer_body_is_compact_sorted_json():
    assert answer_body("27787-03", (A,), NOW, 250.9) == (
        b'{"node":"27787-03","nonces":["' + A.encode() + b'"],"radius_ms":250,"time":"2026-11-26T05:30:00.000Z",'
        b'"type":"time","v":1}')


def body(**changes) -> bytes:
    doc = json.loads(answer_body(V.NODE_ID, (A,), NOW, 250))
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP}).encode()


_DROP = object()


@pytest.mark.parametrize("payload,reason,detail", [
    (b"[]", "malformed", "time answer must be a JSON object"),
    (body(extra=1, zz=2), "malformed", "time answer: unknown field 'extra'"),
    (body(radius_ms=_DROP, node=_DROP), "malformed", "time answer: missing field 'node'"),
    (body(v=2), "unsupported_version", "time answer v must be 1"),
    (body(v=True), "unsupported_version", "time answer v must be 1"),
    (body(type="command"), "unsupported_type", "time answer type must be 'time'"),
    (body(node="27787-3"), "malformed", "node has an invalid value"),
    (body(node=2778703), "malformed", "node has an invalid value"),
    (body(nonces=A), "malformed", "nonces must be a list of 1-16 nonces"),
    (body(nonces=[]), "malformed", "nonces must be a list of 1-16 nonces"),
    (body(nonces=[A] * 17), "malformed", "nonces must be a list of 1-16 nonces"),
    (body(nonces=[A, "A" * 64]), "malformed", "nonces[1] has an invalid value"),
    (body(nonces=[7]), "malformed", "nonces[0] has an invalid value"),
    (body(radius_ms=-1), "malformed", "radius_ms must be an integer 0-3600000"),
    (body(radius_ms=3600001), "malformed", "radius_ms must be an integer 0-3600000"),
    (body(radius_ms=1.5), "malformed", "radius_ms must be an integer 0-3600000"),
    (body(radius_ms=True), "malformed", "radius_ms must be an integer 0-3600000"),
    (body(time="noon"), "malformed", "time: not an RFC 3339 time: 'noon' (want e.g. 2026-11-26T05:30:00Z)"),
    (b'{"v":1,"v":1}', "malformed", "time answer: not valid JSON (duplicate key 'v')"),
])
def test_each_time_answer_body_fault_has_its_reason_and_detail(payload, reason, detail):
    with pytest.raises(RemoteDataError) as info:
        parse_answer(payload)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_an_answer_body_keeps_its_fields_and_its_limits_are_inclusive():
    parsed = parse_answer(body(nonces=[A] * MAX_NONCES, radius_ms=MAX_RADIUS_MS))
    assert parsed == TimeAnswer(V.NODE_ID, (A,) * 16, NOW, 3600000)
    assert parse_answer(body(radius_ms=0)).radius_ms == 0


# -- the nonce book ---------------------------------------------------------------------------------------

def test_the_nonce_book_keeps_a_nonce_exactly_keep_s_and_forgets_it_after():
    book = NonceBook()
    assert book.keep_s == 60.0 and book.last_issued() is None
    book.issue(A, 0.0)
    book.issue(B, 60.0)
    assert book.issued == {A: 0.0, B: 60.0}
    book.issue(C, 60.5)
    assert book.issued == {B: 60.0, C: 60.5}
    assert book.last_issued() == 60.5
    book.use(C)
    book.use(C)   # a nonce used twice is gone, not an error
    assert book.issued == {B: 60.0}


# -- verifying an answer ----------------------------------------------------------------------------------

def test_an_answer_sets_the_time_at_the_midpoint_of_the_round_trip():
    result = decide(answer(radius=250))
    assert result == SignedTime(NOW, 100.25, 0.75, A, (SCHEDULE,))


def test_the_most_recent_request_an_answer_serves_is_the_one_used():
    result = decide(answer(nonces=(C, A, B)), issued={A: 99.0, B: 100.0, "d" * 64: 100.4})
    assert (result.nonce, result.monotonic, result.uncertainty_s) == (B, 100.25, 0.75)
    latest_first = decide(answer(nonces=(A, B)), issued={A: 100.0, B: 99.0})
    assert (latest_first.nonce, latest_first.monotonic) == (A, 100.25)


def test_an_answer_in_the_same_instant_as_its_request_is_used():
    result = decide(answer(radius=100), received=100.0)
    assert (result.monotonic, result.uncertainty_s) == (100.0, 0.1)


def test_a_refused_answer_is_labelled_with_the_hash_of_its_bytes():
    import hashlib

    envelope = answer(node="27787-04")
    assert decide(envelope).envelope_sha256 == hashlib.sha256(envelope).hexdigest()


def test_answer_times_are_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")
    time.tzset()
    try:
        assert format_answer_time(dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)) == "2026-11-26T05:30:00.000Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_answer_may_come_exactly_at_the_nonce_age_limit_and_not_after():
    on_time = decide(answer(radius=0), received=105.0)
    assert isinstance(on_time, SignedTime) and on_time.uncertainty_s == 5.0
    refused(decide(answer(radius=0), received=105.25), "time_nonce_stale",
            "answer came 5.2 s after the request (limit 5 s)")
    refused(decide(answer(), received=99.5), "time_nonce_stale", "answer came -0.5 s after the request (limit 5 s)")
    patient = TimePolicy(nonce_max_age_s=8.5, max_uncertainty_s=20)
    assert isinstance(decide(answer(radius=0), received=108.5, policy=patient), SignedTime)
    refused(decide(answer(radius=0), received=108.75, policy=patient), "time_nonce_stale",
            "answer came 8.8 s after the request (limit 8.5 s)")


def test_an_answer_exactly_at_the_uncertainty_bound_is_used_and_one_millisecond_more_is_not():
    assert decide(answer(radius=9500)).uncertainty_s == 10.0
    refused(decide(answer(radius=9501)), "time_too_uncertain", "radius 9501 ms + round trip 0.500 s > 10 s")
    strict = TimePolicy(max_uncertainty_s=0.5)
    assert isinstance(decide(answer(radius=0), policy=strict), SignedTime)
    refused(decide(answer(radius=1), policy=strict), "time_too_uncertain", "radius 1 ms + round trip 0.500 s > 0.5 s")


def test_an_answer_for_another_node_or_no_nonce_of_ours_is_refused():
    refused(decide(answer(node="27787-04")), "wrong_target", "time answer for node 27787-04")
    refused(decide(answer(nonces=(B,))), "time_nonce_unknown",
            "answers no nonce this node has outstanding (unsolicited, queued or replayed)")
    refused(decide(answer(), issued={}), "time_nonce_unknown")


def test_an_answer_is_refused_by_size_and_type_before_its_signatures():
    envelope = answer()
    assert isinstance(decide(envelope, policy=TimePolicy(max_answer_bytes=len(envelope))), SignedTime)
    refused(decide(envelope, policy=TimePolicy(max_answer_bytes=len(envelope) - 1)), "too_large",
            f"envelope is {len(envelope)} bytes, limit {len(envelope) - 1}")
    refused(decide(b" " * 4000 + envelope), "too_large")
    command = V.sign_payload(PAYLOAD_COMMAND, answer_body(V.NODE_ID, (A,), NOW, 250), ["schedule"])
    refused(decide(command), "unsupported_type", f"{PAYLOAD_COMMAND} is not a time answer")


def test_only_time_keys_valid_at_the_answer_s_own_time_may_answer():
    refused(decide(answer(signers=["stranger"])), "unknown_key", keyid=V.keyid("stranger"))
    refused(decide(answer(signers=["bulletin"])), "role_not_allowed", "a time answer needs role 'time'",
            keyid=V.keyid("bulletin"))
    refused(decide(answer(time=dt.datetime(2025, 12, 31, tzinfo=UTC))), "key_not_yet_valid", keyid=SCHEDULE)
    expiry = dt.datetime(2027, 12, 31, tzinfo=UTC)
    refused(decide(answer(time=expiry)), "trust_expired", "trust version 3 expired")
    assert decide(answer(time=expiry - dt.timedelta(milliseconds=1))).time == expiry - dt.timedelta(milliseconds=1)


def test_a_forged_time_signature_is_named_even_beside_a_valid_one():
    document = json.loads(answer(signers=["schedule", "bulletin"]))
    document["signatures"][0]["sig"] = document["signatures"][1]["sig"]
    refused(decide(json.dumps(document).encode()), "bad_signature", keyid=SCHEDULE)


def _two_time_keys(body):
    body["keys"][V.keyid("bulletin")]["roles"] = ["bulletin", "time"]
    body["thresholds"] = {"emergency": 2, "time": 2}


def _expired_second_time_key(body):
    _two_time_keys(body)
    body["keys"][V.keyid("bulletin")]["expires"] = "2026-06-01T00:00:00Z"


def trust_with(change):
    body = V.trust_body()
    change(body)
    return load_trust_file(V.trust_envelope(body))


def test_a_document_may_ask_two_time_keys():
    trust = trust_with(_two_time_keys)
    refused(decide(answer(), trust=trust), "threshold_not_met", "role 'time' needs 2 distinct keys, got 1",
            keyid=SCHEDULE)
    both = decide(answer(signers=["schedule", "bulletin"]), trust=trust)
    assert both.keyids == tuple(sorted([SCHEDULE, V.keyid("bulletin")]))
    refused(decide(answer(signers=["schedule", "bulletin"]), trust=trust_with(_expired_second_time_key)),
            "key_expired", keyid=V.keyid("bulletin"))
    refused(decide(answer(signers=["stranger", "schedule"]), trust=trust), "threshold_not_met", keyid=SCHEDULE)


def test_a_time_answer_from_a_key_without_the_role_beside_a_time_key_is_not_counted():
    result = decide(answer(signers=["bulletin", "schedule"]))
    assert isinstance(result, SignedTime) and result.keyids == (SCHEDULE,)
