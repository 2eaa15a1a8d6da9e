"""Signed time answers to node nonces (docs/protocol.md §7a). Pure: no IO, no clock of its own.

The model is Uptane's time server and Roughtime: the node asks with a fresh random nonce, the district
answers with a signed body holding its time, an uncertainty radius and the nonce(s) it answers. A
signature alone proves only *who* said the time, never *when*: a captured answer can be replayed and a
broker can queue one for hours. The nonce proves the answer was made after the node asked, and the
node's own monotonic round trip bounds how long ago that was, so

    time at the midpoint of the round trip = answer.time,  uncertainty = radius + round trip.

An answer that carries no nonce this node issued in the last few seconds never sets the clock: not an
unsolicited one, not one queued on a persistent session, not a replay of an accepted one (a nonce is
used once).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from node.errors import RemoteDataError
from node.trust import reasons
from node.trust.durations import parse_time
from node.trust.envelope import PAYLOAD_TIME, parse_envelope, strict_json
from node.trust.trustdoc import TrustDocument
from node.trust.verifier import Rejected, _crypto_signers, _decide, _worst, keys_valid_at, reject

NONCE = re.compile(r"^[0-9a-f]{64}$")   # 32 random bytes, lower-case hex
MAX_NONCES = 16                         # one answer may serve a batch of requests (Roughtime-style)
MAX_RADIUS_MS = 3_600_000
_NODE_ID = re.compile(r"^\d{5}-\d{2}$")


@dataclass(frozen=True)
class TimePolicy:
    nonce_max_age_s: float = 5.0        # an answer to an older request is stale: it may have waited in a queue
    max_uncertainty_s: float = 10.0     # radius + round trip beyond this is too vague to set a clock by
    max_answer_bytes: int = 4096


DEFAULT_TIME_POLICY = TimePolicy()


@dataclass(frozen=True)
class SignedTime:
    """An accepted answer: `time` held at node monotonic `monotonic`, give or take `uncertainty_s`."""

    time: dt.datetime
    monotonic: float
    uncertainty_s: float
    nonce: str
    keyids: tuple[str, ...]


@dataclass(frozen=True)
class TimeAnswer:
    node: str
    nonces: tuple[str, ...]
    time: dt.datetime
    radius_ms: int


def request_body(nonce: str) -> bytes:
    """The node's request on spk/node/NODE/time/req (unsigned: only the answer's signature matters)."""
    return json.dumps({"v": 1, "nonce": nonce}, separators=(",", ":")).encode()


def parse_request(payload: bytes) -> str:
    """District side: the nonce of a request, or RemoteDataError(malformed)."""
    doc = strict_json(payload, "time request")
    if not isinstance(doc, dict) or set(doc) != {"v", "nonce"}:
        raise RemoteDataError(reasons.MALFORMED, "time request must be exactly {v, nonce}")
    if doc["v"] != 1 or isinstance(doc["v"], bool):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, "time request v must be 1")
    if not isinstance(doc["nonce"], str) or not NONCE.match(doc["nonce"]):
        raise RemoteDataError(reasons.MALFORMED, "time request nonce must be 64 lower-case hex characters")
    return doc["nonce"]


def format_answer_time(value: dt.datetime) -> str:
    """RFC 3339 with milliseconds, UTC: '2026-11-26T05:30:00.250Z'."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def answer_body(node_id: str, nonces, time: dt.datetime, radius_ms: int) -> bytes:
    """District side: the exact body bytes to sign (compact JSON, sorted keys)."""
    doc = {"v": 1, "type": "time", "node": node_id, "nonces": list(nonces), "time": format_answer_time(time),
           "radius_ms": int(radius_ms)}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def parse_answer(payload: bytes) -> TimeAnswer:
    doc = strict_json(payload, "time answer")
    if not isinstance(doc, dict):
        raise RemoteDataError(reasons.MALFORMED, "time answer must be a JSON object")
    fields = {"v", "type", "node", "nonces", "time", "radius_ms"}
    if set(doc) != fields:
        extra, missing = sorted(set(doc) - fields), sorted(fields - set(doc))
        raise RemoteDataError(reasons.MALFORMED, f"time answer: {'unknown' if extra else 'missing'} field "
                                                 f"{(extra or missing)[0]!r}")
    if doc["v"] != 1 or isinstance(doc["v"], bool):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, "time answer v must be 1")
    if doc["type"] != "time":
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, "time answer type must be 'time'")
    if not isinstance(doc["node"], str) or not _NODE_ID.match(doc["node"]):
        raise RemoteDataError(reasons.MALFORMED, "node has an invalid value")
    nonces = doc["nonces"]
    if not isinstance(nonces, list) or not 1 <= len(nonces) <= MAX_NONCES:
        raise RemoteDataError(reasons.MALFORMED, f"nonces must be a list of 1-{MAX_NONCES} nonces")
    for index, nonce in enumerate(nonces):
        if not isinstance(nonce, str) or not NONCE.match(nonce):
            raise RemoteDataError(reasons.MALFORMED, f"nonces[{index}] has an invalid value")
    radius = doc["radius_ms"]
    if not isinstance(radius, int) or isinstance(radius, bool) or not 0 <= radius <= MAX_RADIUS_MS:
        raise RemoteDataError(reasons.MALFORMED, f"radius_ms must be an integer 0-{MAX_RADIUS_MS}")
    try:
        time = parse_time(doc["time"])
    except ValueError as exc:
        raise RemoteDataError(reasons.MALFORMED, f"time: {exc}") from None
    return TimeAnswer(doc["node"], tuple(nonces), time, radius)


@dataclass
class NonceBook:
    """The nonces this node has issued and not yet used: nonce -> monotonic time it was sent.

    In memory only, on purpose: after a restart no earlier nonce is valid, so nothing queued while the
    node was down can set its clock."""

    keep_s: float = 60.0   # remembered a little longer than valid, so a late answer is "stale", not "unknown"
    issued: dict[str, float] = field(default_factory=dict)

    def issue(self, nonce: str, monotonic: float) -> None:
        self.issued = {n: t for n, t in self.issued.items() if monotonic - t <= self.keep_s}
        self.issued[nonce] = monotonic

    def use(self, nonce: str) -> None:
        self.issued.pop(nonce, None)

    def last_issued(self) -> float | None:
        return max(self.issued.values(), default=None)


def verify_time_answer(envelope_bytes: bytes, *, trust: TrustDocument, node_id: str, issued: dict[str, float],
                       received_monotonic: float, policy: TimePolicy = DEFAULT_TIME_POLICY) -> SignedTime | Rejected:
    """Decide one time answer; never raises for bad input. `issued`: nonce -> monotonic time sent.

    Order (first failure wins): size, envelope, payloadType; signatures (cryptographic); body; node;
    nonce (unknown, then stale); trust document and key validity at the answer's time; `time` role
    threshold; uncertainty. The caller must `use()` the returned nonce."""
    # Bad input is RemoteDataError with its reason; a bug in a check fails closed as internal_error.
    return _decide(lambda: _verify(envelope_bytes, trust, node_id, issued, received_monotonic, policy),
                   envelope_bytes)


def _verify(data, trust, node_id, issued, received, policy):
    envelope = parse_envelope(data, max_bytes=policy.max_answer_bytes)
    if envelope.payload_type != PAYLOAD_TIME:
        return reject(reasons.UNSUPPORTED_TYPE, f"{envelope.payload_type} is not a time answer")
    signers, problems = _crypto_signers(envelope, trust)
    if not signers:
        return _worst(problems)
    answer = parse_answer(envelope.payload)
    if answer.node != node_id:
        return reject(reasons.WRONG_TARGET, f"time answer for node {answer.node}")
    ours = [n for n in answer.nonces if n in issued]
    if not ours:
        return reject(reasons.TIME_NONCE_UNKNOWN, "answers no nonce this node has outstanding "
                                                  "(unsolicited, queued or replayed)")
    nonce = max(ours, key=lambda n: issued[n])   # the most recent request it answers
    sent = issued[nonce]
    rtt = received - sent
    if rtt < 0 or rtt > policy.nonce_max_age_s:
        return reject(reasons.TIME_NONCE_STALE, f"answer came {rtt:.1f} s after the request "
                                                f"(limit {policy.nonce_max_age_s:g} s)")
    at = answer.time
    if at >= trust.expires:
        return reject(reasons.TRUST_EXPIRED, f"trust version {trust.version} expired")
    valid = keys_valid_at(signers, at, problems)
    if not valid:
        return _worst(problems)
    threshold = trust.threshold("time")
    holders = sorted(k for k, key in valid.items() if "time" in key.roles)
    if len(holders) < threshold:
        telling = [p for p in problems if p[1] in trust.keys and "time" in trust.keys[p[1]].roles]
        if telling:
            return _worst(telling)
        if not holders:
            return reject(reasons.ROLE_NOT_ALLOWED, "a time answer needs role 'time'", next(iter(valid)))
        return reject(reasons.THRESHOLD_NOT_MET, f"role 'time' needs {threshold} distinct keys, got {len(holders)}",
                      holders[0])
    uncertainty = answer.radius_ms / 1000 + rtt
    if uncertainty > policy.max_uncertainty_s:
        return reject(reasons.TIME_TOO_UNCERTAIN, f"radius {answer.radius_ms} ms + round trip {rtt:.3f} s > "
                                                  f"{policy.max_uncertainty_s:g} s")
    return SignedTime(at, (sent + received) / 2, uncertainty, nonce, tuple(holders))


__all__ = ["DEFAULT_TIME_POLICY", "NonceBook", "Rejected", "SignedTime", "TimeAnswer", "TimePolicy",
           "answer_body", "parse_answer", "parse_request", "request_body", "verify_time_answer"]
