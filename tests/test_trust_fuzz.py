"""Fuzzing: whatever bytes arrive, the verifier answers Accepted or Rejected and never raises, and
never with internal_error (that reason means a check itself crashed: a bug, whatever the input).

FUZZ_EXAMPLES (default 10000) sets the number of examples per test. At 10000 this file takes a few
minutes on a small machine, hence the slow mark; FUZZ_EXAMPLES=300 runs it in seconds.
"""

import base64
import datetime as dt
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_fixtures import TRUST, V

from node.errors import RemoteDataError
from node.trust.commands import parse_command
from node.trust.envelope import parse_envelope
from node.trust.reasons import BY_CODE, INTERNAL_ERROR
from node.trust.trustdoc import verify_trust_update
from node.trust.verifier import Accepted, Rejected, TrustAccepted, verify_command, verify_message

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10000")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(
    max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=12), inner, max_size=5), max_leaves=30)

TEMPLATES = [
    V.command("play", V.play_body("emergency"), cid="fuzz-template-play-01"),
    V.command("stop", {"content_id": None, "level": "emergency", "all": False}, cid="fuzz-template-stop-01"),
    V.command("schedule", V.schedule_body(5), cid="fuzz-template-sched-01"),
    V.command("live", {"url": "https://r.example/l", "max_duration": 60, "level": "normal", "volume": None,
                       "grace": 30}, cid="fuzz-template-live-01"),
    V.command("config", {"version": 8, "settings": {"a.b": 1}}, cid="fuzz-template-config-1"),
    V.command("time", {"time": V.format_time(V.NOW)}, cid="fuzz-template-time-01"),
]
SIGNERS = ["bulletin", "emergency-a", "emergency-b", "schedule", "live"]


def decide(envelope: bytes, now=V.NOW):
    decision = verify_command(envelope, trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC,
                              now=now, seen=set(), versions={"schedule": 4, "config": 7})
    assert isinstance(decision, (Accepted, Rejected))
    if isinstance(decision, Rejected):
        assert decision.reason in BY_CODE and decision.reason != INTERNAL_ERROR, decision
    return decision


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data):
    decide(data)


@FUZZ
@given(st.dictionaries(st.sampled_from(["payloadType", "payload", "signatures", "x"]), json_values,
                       max_size=4))
def test_random_envelope_shapes_never_raise(document):
    decide(json.dumps(document).encode())


def _mutate(value, path, replacement):
    if not path:
        return replacement
    head, *rest = path
    if isinstance(value, dict) and value:
        key = sorted(value)[head % len(value)]
        return {**value, key: _mutate(value[key], rest, replacement)}
    if isinstance(value, list) and value:
        index = head % len(value)
        return value[:index] + [_mutate(value[index], rest, replacement)] + value[index + 1:]
    return replacement


@FUZZ
@given(st.sampled_from(TEMPLATES), st.lists(st.integers(0, 50), max_size=5), json_values,
       st.lists(st.sampled_from(SIGNERS), min_size=1, max_size=3))
def test_validly_signed_mutated_commands_never_raise(template, path, replacement, signers):
    """Signed by real keys, so the mutated body reaches the command parser, not just the signature check."""
    command = _mutate(template, path, replacement)
    decide(V.sign_payload(V.PAYLOAD_COMMAND, json.dumps(command).encode(), signers))


@FUZZ
@given(st.sampled_from(TEMPLATES), st.binary(max_size=64), st.integers(0, 4000))
def test_byte_flipped_payloads_never_raise_or_verify(template, junk, position):
    payload = bytearray(V.encode(template))
    position %= len(payload)
    payload[position:position + len(junk)] = junk
    envelope = V.sign(template, ["emergency-a", "emergency-b"])
    document = json.loads(envelope)
    document["payload"] = base64.b64encode(bytes(payload)).decode()
    decision = decide(json.dumps(document).encode())
    if bytes(payload) != V.encode(template):
        assert isinstance(decision, Rejected) and decision.reason == "bad_signature"


@FUZZ
@given(json_values)
def test_command_parser_raises_only_remote_data_errors(value):
    try:
        parse_command(json.dumps(value).encode())
    except RemoteDataError as exc:
        assert exc.reason in BY_CODE and exc.reason != INTERNAL_ERROR


TRUST_TEMPLATES = [V.trust_body(version=4), V.trust_body(version=5, roots=["root-1"], root_threshold=1)]


@FUZZ
@given(st.sampled_from(TRUST_TEMPLATES), st.lists(st.integers(0, 50), max_size=5), json_values,
       st.lists(st.sampled_from(V.ROOTS + SIGNERS), min_size=1, max_size=3), st.sampled_from([V.NOW, None]))
def test_root_signed_mutated_trust_updates_through_the_broker_path_never_raise(template, path, replacement,
                                                                                signers, now):
    """verify_message (the intake's one entry point) on trust updates signed by real root keys, so the
    mutated body reaches the trust document parser."""
    body = _mutate(template, path, replacement)
    envelope = V.sign_payload(V.PAYLOAD_TRUST, json.dumps(body).encode(), signers)
    decision = verify_message(envelope, trust=TRUST, node_id=V.NODE_ID, groups=V.GROUPS, topic=V.OWN_TOPIC,
                              now=now, floor=V.NOW)
    assert isinstance(decision, (TrustAccepted, Rejected))
    if isinstance(decision, Rejected):
        assert decision.reason in BY_CODE and decision.reason != INTERNAL_ERROR, decision


@FUZZ
@given(st.binary(max_size=512))
def test_trust_update_parser_raises_only_remote_data_errors(data):
    for candidate in (data, V.sign_payload(V.PAYLOAD_TRUST, data, V.ROOTS)):
        try:
            parse_envelope(candidate)
            verify_trust_update(candidate, current_trust=TRUST, now_or_floor=V.NOW + dt.timedelta(days=1))
        except RemoteDataError as exc:
            assert exc.reason in BY_CODE and exc.reason != INTERNAL_ERROR
