"""The trust document: which keys may sign what, signed by k-of-n root keys, rotated TUF-style.

The first document comes from provisioning (trusted on first use: it only has to be self-consistent and
signed by its own root). Every later one must be signed by a threshold of the root the node already
trusts AND, when the root changes, by a threshold of the new root, and carry a strictly higher version.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust import reasons
from node.trust.durations import parse_time
from node.trust.envelope import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    PAYLOAD_TRUST,
    Envelope,
    b64decode,
    parse_envelope,
    strict_json,
)

MAX_KEYS = 64
MAX_NAME_CHARS = 64
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KEYID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    name: str
    public: bytes
    roles: frozenset[str]
    not_before: dt.datetime | None = None
    expires: dt.datetime | None = None


@dataclass(frozen=True)
class TrustDocument:
    version: int
    issued_at: dt.datetime
    expires: dt.datetime
    root_keys: Mapping[str, bytes]
    root_threshold: int
    keys: Mapping[str, TrustedKey]
    thresholds: Mapping[str, int]
    revoked: frozenset[str]
    payload: bytes = field(repr=False)
    envelope: bytes = field(repr=False)

    def threshold(self, role: str) -> int:
        return self.thresholds.get(role, 1)

    def key_named(self, name: str) -> TrustedKey | None:
        return next((key for key in self.keys.values() if key.name == name), None)


def _fail(detail: str) -> RemoteDataError:
    return RemoteDataError(reasons.MALFORMED, f"trust: {detail}")


def _object(value, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(f"{where}.{missing[0]} is missing")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        raise _fail(f"{where}: unknown field {unknown[0]!r}")
    return value


def _int(value, where: str) -> int:
    """Versions and thresholds: 1 .. 2**53 (what every JSON parser reads exactly)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > 2**53:
        raise _fail(f"{where} must be an integer >= 1")
    return value


def _time(value, where: str, optional: bool = False) -> dt.datetime | None:
    if value is None and optional:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _fail(f"{where}: {exc}") from None


def _public(value, keyid, where: str) -> bytes:
    if not isinstance(keyid, str) or not _KEYID.match(keyid):
        raise _fail(f"{where}: keyid must be 64 lower-case hex characters")
    public = b64decode(value, f"trust: {where}.public")
    if len(public) != ed25519.PUBLIC_KEY_BYTES:
        raise _fail(f"{where}.public must be a 32-byte Ed25519 key")
    if ed25519.keyid_of(public) != keyid:
        raise _fail(f"{where}: keyid is not the SHA-256 of the public key")
    return public


def parse_trust_body(payload: bytes, envelope_bytes: bytes = b"") -> TrustDocument:
    body = strict_json(payload, "trust payload")
    body = _object(body, "trust", {"v", "type", "version", "issued_at", "expires", "root", "keys"},
                   {"thresholds", "revoked"})
    if body["type"] != "trust":
        raise _fail("type must be 'trust'")
    if body["v"] != 1 or isinstance(body["v"], bool):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, f"trust v={body['v']!r}")
    root = _object(body["root"], "root", {"keys", "threshold"})
    if not isinstance(root["keys"], dict) or not 1 <= len(root["keys"]) <= MAX_KEYS:
        raise _fail(f"root.keys must be an object of 1..{MAX_KEYS} keys")
    root_keys = {}
    for keyid, entry in root["keys"].items():
        entry = _object(entry, f"root.keys[{keyid[:16]}]", {"public"})
        root_keys[keyid] = _public(entry["public"], keyid, f"root.keys[{keyid[:16]}]")
    root_threshold = _int(root["threshold"], "root.threshold")
    if root_threshold > len(root_keys):
        raise _fail("root.threshold is larger than the number of root keys")
    if not isinstance(body["keys"], dict) or len(body["keys"]) > MAX_KEYS:
        raise _fail(f"keys must be an object of at most {MAX_KEYS} keys")
    trusted = {}
    for keyid, entry in body["keys"].items():
        where = f"keys[{keyid[:16]}]"
        entry = _object(entry, where, {"name", "public", "roles"}, {"not_before", "expires"})
        if not isinstance(entry["name"], str) or not 0 < len(entry["name"]) <= MAX_NAME_CHARS:
            raise _fail(f"{where}.name must be a short string")
        roles = entry["roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) and _ROLE_NAME.match(r) for r in roles):
            raise _fail(f"{where}.roles must be a list of role names")
        # Unknown role names are allowed (a newer district may add roles); they grant nothing here.
        trusted[keyid] = TrustedKey(
            keyid, entry["name"], _public(entry["public"], keyid, where), frozenset(roles),
            _time(entry.get("not_before"), f"{where}.not_before", True),
            _time(entry.get("expires"), f"{where}.expires", True),
        )
    thresholds_raw = body.get("thresholds", {})
    if not isinstance(thresholds_raw, dict):
        raise _fail("thresholds must be an object")
    thresholds = {}
    for role, value in thresholds_raw.items():
        thresholds[role] = _int(value, f"thresholds.{role}")
        holders = sum(1 for key in trusted.values() if role in key.roles)
        if thresholds[role] > holders:
            # An unreachable threshold would silently disable a role (emergency!) on every node.
            raise _fail(f"thresholds.{role}={thresholds[role]} but only {holders} key(s) hold that role")
    revoked = body.get("revoked", [])
    if not isinstance(revoked, list) or not all(isinstance(k, str) and _KEYID.match(k) for k in revoked):
        raise _fail("revoked must be a list of keyids")
    issued_at = _time(body["issued_at"], "issued_at")
    expires = _time(body["expires"], "expires")
    if expires <= issued_at:
        raise _fail("expires must be after issued_at")
    return TrustDocument(
        version=_int(body["version"], "version"), issued_at=issued_at, expires=expires,
        root_keys=MappingProxyType(root_keys), root_threshold=root_threshold,
        keys=MappingProxyType(trusted), thresholds=MappingProxyType(thresholds),
        revoked=frozenset(revoked), payload=payload, envelope=envelope_bytes,
    )


def root_signers(envelope: Envelope, root_keys: Mapping[str, bytes], revoked=frozenset()) -> set[str]:
    """Distinct root keyids whose signature verifies (a keyid repeated counts once)."""
    message = envelope.signed_bytes()
    valid = set()
    for signature in envelope.signatures:
        public = root_keys.get(signature.keyid)
        if public is None or signature.keyid in revoked or signature.keyid in valid:
            continue
        if ed25519.verify(public, signature.sig, message):
            valid.add(signature.keyid)
    return valid


def _parse_trust_envelope(data: bytes) -> Envelope:
    envelope = parse_envelope(data, max_bytes=DEFAULT_MAX_ENVELOPE_BYTES * 4, max_signatures=MAX_KEYS)
    if envelope.payload_type != PAYLOAD_TRUST:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"expected {PAYLOAD_TRUST}")
    return envelope


def load_trust_file(path_or_bytes: str | os.PathLike | bytes) -> TrustDocument:
    """The provisioned (or last accepted, persisted) trust document: must satisfy its own root.

    No expiry check here (there is no trusted time at boot); verify_command reports trust_expired.
    """
    data = bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else Path(
        path_or_bytes).read_bytes()
    envelope = _parse_trust_envelope(data)
    document = parse_trust_body(envelope.payload, data)
    signers = root_signers(envelope, document.root_keys)
    if len(signers) < document.root_threshold:
        raise RemoteDataError(reasons.ROOT_THRESHOLD_NOT_MET,
                              f"{len(signers)} of {document.root_threshold} root signatures")
    return document


def verify_trust_update(
    envelope_bytes: bytes, *, current_trust: TrustDocument, now_or_floor: dt.datetime
) -> TrustDocument:
    """Return the new trust document, or raise RemoteDataError with a reason code.

    `now_or_floor` is the trusted time, or the persisted time floor when the clock is untrusted: a root
    rotation must still reach a node whose clock is wrong, and the floor can only make expiry stricter.
    """
    return trust_update_from_envelope(_parse_trust_envelope(envelope_bytes), bytes(envelope_bytes),
                                      current_trust=current_trust, now_or_floor=now_or_floor)


def trust_update_from_envelope(
    envelope: Envelope, envelope_bytes: bytes, *, current_trust: TrustDocument, now_or_floor: dt.datetime
) -> TrustDocument:
    """verify_trust_update for an envelope already parsed (by the verifier's one envelope parse) whose
    payloadType is PAYLOAD_TRUST: both callers check it (a body of another kind fails "type must be 'trust'")."""
    signers = root_signers(envelope, current_trust.root_keys, current_trust.revoked)
    if len(signers) < current_trust.root_threshold:
        raise RemoteDataError(reasons.ROOT_THRESHOLD_NOT_MET,
                              f"{len(signers)} of {current_trust.root_threshold} current root signatures")
    if envelope.payload == current_trust.payload:
        raise RemoteDataError(reasons.DUPLICATE, f"trust version {current_trust.version} again")
    document = parse_trust_body(envelope.payload, envelope_bytes)
    if document.version <= current_trust.version:
        raise RemoteDataError(reasons.ROLLBACK,
                              f"trust version {document.version} <= current {current_trust.version}")
    root_changed = (dict(document.root_keys) != dict(current_trust.root_keys)
                    or document.root_threshold != current_trust.root_threshold)
    if root_changed:
        new_signers = root_signers(envelope, document.root_keys)
        if len(new_signers) < document.root_threshold:
            raise RemoteDataError(reasons.ROOT_THRESHOLD_NOT_MET,
                                  f"{len(new_signers)} of {document.root_threshold} new root signatures")
    if now_or_floor >= document.expires:
        raise RemoteDataError(reasons.EXPIRED, f"trust version {document.version} expired")
    return document
