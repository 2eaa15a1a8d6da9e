"""The verifier: bytes in, Accepted, TrustAccepted or Rejected out. Pure: no IO, no clock reads, never raises.

verify_message is the one entry point for everything from the broker (commands and trust updates): the
envelope is parsed once, here. verify_command is the same for commands only (USB manifests, vectors).

Order of checks (each stops at the first failure):
  size -> envelope -> signatures (crypto only) -> command parse -> targets -> clock -> trust expiry
  -> key validity -> roles/thresholds -> freshness -> validity cap -> replay -> versions.
Nothing inside the payload is looked at before at least one signature by a known key verifies.

Only the parsers' typed errors (RemoteDataError) become their reason code (`malformed`, ...). Any other
exception is a bug in a check: the message is refused with its own reason, `internal_error`, which every
test and fuzzer treats as a failure (STYLE.md point 11) - never folded into `malformed`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import traceback
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, replace

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust import reasons
from node.trust.commands import DEFAULT_LIMITS, Command, Limits, StopBody, parse_command
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_TRUST, Envelope, parse_envelope
from node.trust.trustdoc import TrustDocument, TrustedKey, trust_update_from_envelope
from node.update.release import RELEASE_ROLE, release_threshold, verify_release


@dataclass(frozen=True)
class Accepted:
    command: Command
    keyids: tuple[str, ...]
    remember_until: dt.datetime     # keep command.id in the seen-ids store at least until then
    roles: frozenset[str] = frozenset()   # every role proven by the valid signers

    decision = "accepted"

    @property
    def report(self) -> bool:
        return False


@dataclass(frozen=True)
class TrustAccepted:
    """A newer trust document, verified against the one in force (the caller persists it)."""

    document: TrustDocument
    at: dt.datetime                 # the trusted time (or the floor) it was checked at

    decision = "accepted"

    @property
    def report(self) -> bool:
        return False


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str = ""
    keyid: str | None = None
    command_id: str | None = None
    report: bool = True
    # SHA-256 (hex) of the exact bytes refused: how a district matches a refusal to what it sent, also
    # when command_id is null (nothing of an unverified body is reported as if it were authentic).
    envelope_sha256: str | None = None

    @property
    def decision(self) -> str:
        return "rejected" if self.report else "ignored"


def reject(reason: str, detail: str = "", keyid: str | None = None,
           command_id: str | None = None) -> Rejected:
    return Rejected(reason, detail, keyid, command_id, reasons.is_reported(reason))


def envelope_digest(data) -> str | None:
    """The `envelope_sha256` of a refusal: lowercase hex SHA-256 of the bytes as received."""
    return hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) else None


def required_roles(command: Command, trust: TrustDocument) -> list[tuple[str, int]]:
    """(role, threshold) pairs that must ALL be met by distinct valid signing keys."""
    level = command.level
    if command.type == "play":
        role = "emergency" if level == "emergency" else "bulletin"
        return [(role, trust.threshold(role))]
    if command.type == "stop":
        body: StopBody = command.body  # type: ignore[assignment]
        role = "emergency" if (body.all or body.level == "emergency") else "bulletin"
        # A cancel must never be harder to send than the alarm was: one signature (Hawaii 2018).
        return [(role, 1)]
    if command.type == "live":
        needs = [("live", trust.threshold("live"))]
        if level == "emergency":
            needs.append(("emergency", trust.threshold("emergency")))
        return needs
    if command.type == "update":
        # Software for the whole fleet: never fewer than two release keys, whatever the document says.
        return [(RELEASE_ROLE, release_threshold(trust))]
    role = command.type  # schedule, config, time
    return [(role, trust.threshold(role))]


def _crypto_signers(envelope: Envelope, trust: TrustDocument) -> tuple[dict[str, TrustedKey], list]:
    """Keys whose signature verifies (each keyid once), and (reason, keyid) for every other signature."""
    message = envelope.signed_bytes()
    valid: dict[str, TrustedKey] = {}
    problems = []
    for signature in envelope.signatures:
        if signature.keyid in valid:
            continue
        key = trust.keys.get(signature.keyid)
        if key is None:
            problems.append((reasons.UNKNOWN_KEY, signature.keyid))
        elif signature.keyid in trust.revoked:
            problems.append((reasons.REVOKED_KEY, signature.keyid))
        elif ed25519.verify(key.public, signature.sig, message):
            valid[signature.keyid] = key
        else:
            problems.append((reasons.BAD_SIGNATURE, signature.keyid))
    return valid, problems


# When no signature is good, name the most telling problem: a forgery beats a stale key beats a stranger.
_SIGNATURE_PRIORITY = (reasons.BAD_SIGNATURE, reasons.REVOKED_KEY, reasons.KEY_EXPIRED,
                       reasons.KEY_NOT_YET_VALID, reasons.UNKNOWN_KEY)


def _worst(problems: list, command_id: str | None = None) -> Rejected:
    reason, keyid = min(problems, key=lambda p: _SIGNATURE_PRIORITY.index(p[0]))
    return reject(reason, f"signature by key {keyid[:16]}", keyid, command_id)


def _check_targets(command: Command, node_id: str, groups, topic: str | None) -> Rejected | None:
    ours = {node_id, "all", *groups}
    if ours.intersection(command.targets):
        return None
    detail = f"targets {','.join(command.targets)[:120]}"
    own_topic = topic is None or topic.endswith(f"/node/{node_id}/cmd")
    if own_topic:
        return reject(reasons.WRONG_TARGET, detail, command_id=command.id)
    return reject(reasons.NOT_FOR_US, detail, command_id=command.id)


def keys_valid_at(signers: dict[str, TrustedKey], at: dt.datetime,
                  problems: list[tuple[str, str]]) -> dict[str, TrustedKey]:
    """The signers whose validity window holds `at`; each other one's (reason, keyid) goes to problems."""
    valid: dict[str, TrustedKey] = {}
    for keyid, key in signers.items():
        problem = _key_time_problem(key, at)
        if problem:
            problems.append((problem, keyid))
        else:
            valid[keyid] = key
    return valid


def _key_time_problem(key: TrustedKey, at: dt.datetime) -> str | None:
    if key.expires is not None and at >= key.expires:
        return reasons.KEY_EXPIRED
    if key.not_before is not None and at < key.not_before:
        return reasons.KEY_NOT_YET_VALID
    return None


def _is_seen(seen, command_id: str) -> bool:
    if seen is None:
        return False
    if callable(seen):
        return bool(seen(command_id))
    return command_id in seen


def verify_message(
    envelope_bytes: bytes,
    *,
    trust: TrustDocument,
    node_id: str,
    groups=(),
    topic: str | None = None,
    now: dt.datetime | None,
    seen: Callable[[str], bool] | Container[str] | None = None,
    versions: Mapping[str, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    floor: dt.datetime | None = None,
    reset_epoch: dt.datetime | None = None,
) -> Accepted | TrustAccepted | Rejected:
    """Decide one message from the broker: a command (see verify_command) or a trust update, which is
    checked at `now`, or at the persisted `floor` when the clock is untrusted (a root rotation must
    still reach a node whose clock is wrong; the floor can only make expiry stricter). Never raises."""
    return _decide(lambda: _verify(envelope_bytes, trust, node_id, tuple(groups), topic, now, seen,
                                   versions or {}, limits, floor, accept_trust=True, reset_epoch=reset_epoch),
                   envelope_bytes)


def verify_command(
    envelope_bytes: bytes,
    *,
    trust: TrustDocument,
    node_id: str,
    groups=(),
    topic: str | None = None,
    now: dt.datetime | None,
    seen: Callable[[str], bool] | Container[str] | None = None,
    versions: Mapping[str, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    reset_epoch: dt.datetime | None = None,
) -> Accepted | Rejected:
    """Decide one command envelope. Never raises for bad input.

    `topic` None means "not from the broker" (USB manifest): a non-matching target is then reported.
    `now` None means the clock is untrusted: every command is rejected clock_untrusted. (Signed time
    comes only as answers to the node's nonces, node.trust.timeanswer; a `time` command is retired.)
    `reset_epoch` is the trusted time at which the node lost its seen ids (node.adapters.store): a
    command issued or valid before it could have been accepted before, so it is refused
    issued_before_reset.
    """
    return _decide(lambda: _verify(envelope_bytes, trust, node_id, tuple(groups), topic, now, seen,
                                   versions or {}, limits, None, accept_trust=False, reset_epoch=reset_epoch),
                   envelope_bytes)


def _decide(verify: Callable[[], Accepted | TrustAccepted | Rejected], data=None):
    """Run one verification; a refusal is labelled with the SHA-256 of `data`, the bytes refused."""
    try:
        result = verify()
    except RemoteDataError as exc:
        result = reject(exc.reason, exc.detail, exc.context.get("keyid"), exc.context.get("command_id"))
    except Exception as exc:  # noqa: BLE001 - a bug in a check: fail closed, under its own reason
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
        result = reject(reasons.INTERNAL_ERROR, f"{type(exc).__name__} at {where}: {str(exc)[:80]}")
    if isinstance(result, Rejected):
        return replace(result, envelope_sha256=envelope_digest(data))
    return result


def _verify(data, trust, node_id, groups, topic, now, seen, versions, limits, floor, *, accept_trust,
            reset_epoch=None):
    envelope = parse_envelope(data, max_bytes=limits.max_envelope_bytes, max_signatures=limits.max_signatures)
    if envelope.payload_type == PAYLOAD_TRUST and accept_trust:
        at = now or floor
        if at is None:
            return reject(reasons.CLOCK_UNTRUSTED, "no trusted time and no time floor on this node")
        return TrustAccepted(trust_update_from_envelope(envelope, bytes(data), current_trust=trust,
                                                        now_or_floor=at), at)
    if envelope.payload_type != PAYLOAD_COMMAND:
        return reject(reasons.UNSUPPORTED_TYPE, f"{envelope.payload_type} is not a command")
    signers, problems = _crypto_signers(envelope, trust)
    if not signers:
        return _worst(problems)
    command = parse_command(envelope.payload, limits)
    cid = command.id
    if command.type == "time":
        # A beacon carries no nonce: a queued or captured one would set the clock back (protocol §7a).
        # Refused like any unknown type (command_id null, protocol §6): no role was checked yet.
        return reject(reasons.UNSUPPORTED_TYPE, "time beacons are retired: time comes as signed answers to "
                                                "the node's nonces")

    wrong = _check_targets(command, node_id, groups, topic)
    if wrong:
        return wrong

    at = now
    if now is None:
        return reject(reasons.CLOCK_UNTRUSTED, "no trusted time on this node", command_id=cid)
    if at >= trust.expires:
        return reject(reasons.TRUST_EXPIRED, f"trust version {trust.version} expired", command_id=cid)

    valid = keys_valid_at(signers, at, problems)
    if not valid:
        return _worst(problems, cid)

    for role, threshold in required_roles(command, trust):
        holders = sorted(k for k, key in valid.items() if role in key.roles)
        if len(holders) < threshold:
            # A forged, revoked or expired signature by a key that does hold the role says more.
            telling = [p for p in problems if p[1] in trust.keys and role in trust.keys[p[1]].roles]
            if telling:
                return _worst(telling, cid)
        if not holders:
            return reject(reasons.ROLE_NOT_ALLOWED, f"{command.type} needs role {role!r}",
                          next(iter(valid)), cid)
        if len(holders) < threshold:
            return reject(reasons.THRESHOLD_NOT_MET,
                          f"role {role!r} needs {threshold} distinct keys, got {len(holders)}",
                          holders[0], cid)

    skew = dt.timedelta(seconds=limits.skew_seconds)
    if at < command.not_before - skew:
        return reject(reasons.NOT_YET_VALID, f"not before {command.not_before.isoformat()}", command_id=cid)
    if at >= command.expires:
        return reject(reasons.EXPIRED, f"expired at {command.expires.isoformat()}", command_id=cid)
    cap = limits.max_validity.get(command.type)
    if cap is not None and (command.expires - command.not_before).total_seconds() > cap:
        return reject(reasons.VALIDITY_TOO_LONG, f"{command.type} may be valid for at most {cap:.0f} s",
                      command_id=cid)

    if command.type == "update":
        try:
            verify_release(command.body.release, trust, at)
        except RemoteDataError as exc:
            return reject(exc.reason, f"body.release: {exc.detail}", command_id=cid)

    if reset_epoch is not None and min(command.issued_at, command.not_before) < reset_epoch:
        return reject(reasons.ISSUED_BEFORE_RESET,
                      f"issued {command.issued_at.isoformat()} before the state reset at {reset_epoch.isoformat()}",
                      command_id=cid)
    if _is_seen(seen, cid):
        return reject(reasons.REPLAYED, f"command {cid} was already accepted", command_id=cid)
    if command.type in ("schedule", "config"):
        current = versions.get(command.type)
        if current is not None and command.version < current:
            return reject(reasons.ROLLBACK, f"{command.type} version {command.version} < {current}",
                          command_id=cid)
        if current is not None and command.version == current:
            return reject(reasons.DUPLICATE, f"{command.type} version {current} already applied",
                          command_id=cid)

    roles = frozenset().union(*(key.roles for key in valid.values()))
    return Accepted(command, tuple(sorted(valid)), command.expires + skew, roles)


def verify_stored(
    envelope_bytes: bytes,
    *,
    trust: TrustDocument,
    node_id: str,
    groups=(),
    kinds: tuple[str, ...],
    limits: Limits = DEFAULT_LIMITS,
) -> Accepted | Rejected:
    """Decide again on an envelope read back from local storage (journal, schedule, config), before it acts.

    The SD card is not a trusted channel: a row can be edited or planted while the node is off. This
    re-checks what does not depend on when the envelope arrived: the parse, that it is a command of one
    of `kinds`, the signatures against the trust document in force now (a key revoked since no longer
    counts), each key's own validity at the command's not_before, roles, thresholds and targets.
    Freshness (expiry) and replay are the caller's: a stored envelope was accepted once, by design.
    Never raises for bad input."""
    return _decide(lambda: _verify_stored(envelope_bytes, trust, node_id, tuple(groups), kinds, limits),
                   envelope_bytes)


def _verify_stored(data, trust, node_id, groups, kinds, limits):
    envelope = parse_envelope(data, max_bytes=limits.max_envelope_bytes, max_signatures=limits.max_signatures)
    if envelope.payload_type != PAYLOAD_COMMAND:
        return reject(reasons.UNSUPPORTED_TYPE, f"{envelope.payload_type} is not a command")
    signers, problems = _crypto_signers(envelope, trust)
    if not signers:
        return _worst(problems)
    command = parse_command(envelope.payload, limits)
    if command.type not in kinds:
        return reject(reasons.UNSUPPORTED_TYPE, f"a {command.type} command where only {'/'.join(kinds)} is kept",
                      command_id=command.id)
    wrong = _check_targets(command, node_id, groups, None)
    if wrong:
        return wrong
    valid: dict[str, TrustedKey] = {}
    for keyid, key in signers.items():
        problem = _key_time_problem(key, command.not_before)
        if problem:
            problems.append((problem, keyid))
        else:
            valid[keyid] = key
    if not valid:
        return _worst(problems, command.id)
    for role, threshold in required_roles(command, trust):
        holders = sorted(k for k, key in valid.items() if role in key.roles)
        if not holders:
            return reject(reasons.ROLE_NOT_ALLOWED, f"{command.type} needs role {role!r}", next(iter(valid)),
                          command.id)
        if len(holders) < threshold:
            telling = [p for p in problems if p[1] in trust.keys and role in trust.keys[p[1]].roles]
            if telling:
                return _worst(telling, command.id)
            return reject(reasons.THRESHOLD_NOT_MET,
                          f"role {role!r} needs {threshold} distinct keys, got {len(holders)}", holders[0], command.id)
    roles = frozenset().union(*(key.roles for key in valid.values()))
    skew = dt.timedelta(seconds=limits.skew_seconds)
    return Accepted(command, tuple(sorted(valid)), command.expires + skew, roles)
