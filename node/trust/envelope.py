"""DSSE v1 envelopes: parse strictly, verify the exact payload bytes, never re-serialize.

https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from node.errors import RemoteDataError
from node.trust import reasons

PAYLOAD_COMMAND = "application/vnd.speaker.command+json"
PAYLOAD_TRUST = "application/vnd.speaker.trust+json"
PAYLOAD_RELEASE = "application/vnd.speaker.release+json"   # node/update/release.py
PAYLOAD_ACK = "application/vnd.speaker.ack+json"  # district store -> node: records committed (node/trust/ack.py)
PAYLOAD_TIME = "application/vnd.speaker.time+json"   # signed answers to time requests (protocol §7a)
PAYLOAD_TYPES = (PAYLOAD_COMMAND, PAYLOAD_TRUST, PAYLOAD_RELEASE, PAYLOAD_ACK, PAYLOAD_TIME)

DEFAULT_MAX_ENVELOPE_BYTES = 65536
DEFAULT_MAX_SIGNATURES = 8
MAX_KEYID_CHARS = 128


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            # Two parsers could pick different values for a repeated key: refuse the ambiguity.
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def strict_json(data: bytes | str, what: str):
    """json.loads without NaN/Infinity or repeated keys; RemoteDataError('malformed') on any problem."""
    try:
        text = data.decode() if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise RemoteDataError(reasons.MALFORMED, f"{what}: not UTF-8") from None
    except RecursionError:
        raise RemoteDataError(reasons.MALFORMED, f"{what}: nested too deeply") from None
    except ValueError as exc:
        raise RemoteDataError(reasons.MALFORMED, f"{what}: not valid JSON ({str(exc)[:80]})") from None


def b64decode(value, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows both), padding required, no stray characters."""
    if not isinstance(value, str):
        raise RemoteDataError(reasons.MALFORMED, f"{what} must be a base64 string")
    try:
        # altchars maps "-_" onto "+/" before validation, so the standard alphabet stays valid too.
        return base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise RemoteDataError(reasons.MALFORMED, f"{what} is not valid base64") from None


def parse_envelope(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
) -> Envelope:
    if not isinstance(data, (bytes, bytearray)):
        raise RemoteDataError(reasons.MALFORMED, "envelope must be bytes")
    if len(data) > max_bytes:
        raise RemoteDataError(reasons.TOO_LARGE, f"envelope is {len(data)} bytes, limit {max_bytes}")
    document = strict_json(bytes(data), "envelope")
    if not isinstance(document, dict):
        raise RemoteDataError(reasons.MALFORMED, "envelope must be a JSON object")
    unknown = sorted(set(document) - {"payloadType", "payload", "signatures"})
    if unknown:
        raise RemoteDataError(reasons.MALFORMED, f"envelope: unknown field {unknown[0]!r}")
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str):
        raise RemoteDataError(reasons.MALFORMED, "envelope.payloadType must be a string")
    payload = b64decode(document.get("payload"), "envelope.payload")
    raw_signatures = document.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise RemoteDataError(reasons.MALFORMED, "envelope.signatures must be a non-empty list")
    if len(raw_signatures) > max_signatures:
        raise RemoteDataError(
            reasons.LIMIT_EXCEEDED, f"envelope.signatures: {len(raw_signatures)} > {max_signatures}"
        )
    signatures = []
    for index, item in enumerate(raw_signatures):
        where = f"envelope.signatures[{index}]"
        if not isinstance(item, dict) or set(item) - {"keyid", "sig"}:
            raise RemoteDataError(reasons.MALFORMED, f"{where} must be an object with keyid and sig")
        keyid = item.get("keyid")
        if not isinstance(keyid, str) or not keyid or len(keyid) > MAX_KEYID_CHARS:
            raise RemoteDataError(reasons.MALFORMED, f"{where}.keyid must be a short non-empty string")
        signatures.append(Signature(keyid, b64decode(item.get("sig"), f"{where}.sig")))
    if payload_type not in PAYLOAD_TYPES:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"payloadType {payload_type[:80]!r}")
    return Envelope(payload_type, payload, tuple(signatures))


def encode_envelope(payload_type: str, payload: bytes, signatures: list[tuple[str, bytes]]) -> bytes:
    document = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}
                       for keyid, sig in signatures],
    }
    return json.dumps(document, separators=(",", ":")).encode()  # ensure_ascii: the bytes are ASCII


def sign_envelope(payload_type: str, payload: bytes, private_keys) -> bytes:
    """Sign with each Ed25519 private key in turn (order kept). Used by the district tools and tests."""
    from node.trust.keys import keyid_of_key

    message = pae(payload_type, payload)
    return encode_envelope(payload_type, payload, [(keyid_of_key(k), k.sign(message)) for k in private_keys])
