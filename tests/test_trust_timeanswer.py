"""Signed time answers (protocol §7a): every vector in tests/vectors/time/ gives its documented decision,
and the node-side pieces (nonce book, request format) hold up against replays and junk."""

import json
from pathlib import Path

import pytest

from node.errors import RemoteDataError
from node.trust import reasons
from node.trust.durations import parse_time
from node.trust.timeanswer import NonceBook, SignedTime, parse_request, request_body, verify_time_answer
from node.trust.trustdoc import load_trust_file

VECTORS = Path(__file__).parent / "vectors"
CASES = sorted((VECTORS / "time").glob("T[0-9][0-9]-*.json"))
TRUST = load_trust_file(VECTORS / "trust.json")


def test_there_is_a_time_vector_for_every_node_check():
    expected = {json.loads(p.read_text())["expected"]["reason"] for p in CASES}
    assert {None, reasons.TIME_NONCE_UNKNOWN, reasons.TIME_NONCE_STALE, reasons.TIME_TOO_UNCERTAIN,
            reasons.WRONG_TARGET, reasons.BAD_SIGNATURE, reasons.ROLE_NOT_ALLOWED} <= expected


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_time_vector_decision(path):
    vector = json.loads(path.read_text(encoding="utf-8"))
    ctx, expected = vector["context"], vector["expected"]
    result = verify_time_answer(vector["envelope"].encode(), trust=TRUST, node_id=ctx["node_id"],
                                issued=ctx["issued"], received_monotonic=ctx["received_monotonic"])
    decision = "accepted" if isinstance(result, SignedTime) else result.decision
    assert decision == expected["decision"], (vector["description"], result)
    if expected["decision"] == "accepted":
        assert isinstance(result, SignedTime), (vector["description"], result)
        assert result.time == parse_time(expected["time"])
        assert result.monotonic == pytest.approx(expected["monotonic"])
        assert result.uncertainty_s == pytest.approx(expected["uncertainty_s"])
        assert result.nonce == expected["nonce"]
    else:
        assert not isinstance(result, SignedTime), vector["description"]
        assert result.reason == expected["reason"], (vector["description"], result)


def test_an_answer_replayed_after_its_nonce_was_used_is_rejected():
    vector = json.loads(CASES[0].read_text())
    book = NonceBook()
    for nonce, sent in vector["context"]["issued"].items():
        book.issue(nonce, sent)
    first = verify_time_answer(vector["envelope"].encode(), trust=TRUST, node_id="27787-03", issued=book.issued,
                               received_monotonic=100.4)
    assert isinstance(first, SignedTime)
    book.use(first.nonce)
    again = verify_time_answer(vector["envelope"].encode(), trust=TRUST, node_id="27787-03", issued=book.issued,
                               received_monotonic=100.5)
    assert again.reason == reasons.TIME_NONCE_UNKNOWN


def test_nonce_book_forgets_old_nonces_and_keeps_recent_ones():
    book = NonceBook(keep_s=60)
    book.issue("a" * 64, 0.0)
    book.issue("b" * 64, 30.0)
    book.issue("c" * 64, 90.0)
    assert set(book.issued) == {"b" * 64, "c" * 64}
    assert book.last_issued() == 90.0


@pytest.mark.parametrize("payload", [b"", b"[]", b'{"v":1}', b'{"v":1,"nonce":"abc"}', b'{"v":2,"nonce":"' +
                                     b"a" * 64 + b'"}', b'{"v":1,"nonce":"' + b"a" * 64 + b'","x":1}',
                                     b'{"v":true,"nonce":"' + b"a" * 64 + b'"}', b"\xff"])
def test_malformed_time_requests_are_refused_by_the_district(payload):
    with pytest.raises(RemoteDataError):
        parse_request(payload)


def test_request_round_trips():
    assert parse_request(request_body("0" * 64)) == "0" * 64


def test_garbage_answers_never_raise():
    for junk in (b"", b"{}", b"\x00" * 10, b'{"payloadType":"application/vnd.speaker.time+json"}', b"a" * 5000):
        result = verify_time_answer(junk, trust=TRUST, node_id="27787-03", issued={"a" * 64: 0.0},
                                    received_monotonic=0.1)
        assert not isinstance(result, SignedTime) and result.reason in reasons.BY_CODE
