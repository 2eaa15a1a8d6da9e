"""Record acknowledgements: the district's store says "these record ids are committed" (pure).

A node deletes an event or play record from its outbox only when an acknowledgement naming its id
verifies here. Acknowledgements are DSSE envelopes (payloadType `application/vnd.speaker.ack+json`)
signed by a key that holds the `ack` role in the node's trust document, so that neither a broker
(compromised, or just misconfigured) nor any other identity can make a node forget records that were
never stored: a forged acknowledgement could only cause loss, and loss of proof-of-play is exactly what
this protocol exists to prevent. The broker's ACL (only the district may publish on
`spk/node/NODE/ack`) is a first fence; the signature is the one that counts.

No nonce or expiry is needed: record ids are unique (48-bit time + 80 random bits), so a replayed
acknowledgement can only name records already deleted. Key validity times are checked when the node
has trusted time; without it a key's signature still counts (an acknowledgement moves no relay and the
key was trusted when the document was accepted), revocation always counts.

Body: {"v": 1, "node": "27787-03", "ids": ["01J...", ...]} — exactly these fields, 1..MAX_IDS ids of
[0-9A-Za-z_-]{8,64}, `node` must be the receiving node (docs/protocol.md section 9b).
"""

from __future__ import annotations

import datetime as dt
import json
import re

from node.errors import RemoteDataError
from node.trust import reasons
from node.trust.envelope import PAYLOAD_ACK, parse_envelope, strict_json
from node.trust.keys import verify
from node.trust.trustdoc import TrustDocument

ACK_ROLE = "ack"
MAX_IDS = 256
MAX_ACK_BYTES = 32 * 1024  # 256 ids of 26 characters, base64 and one signature fit in 12 kB
_ID_RE = re.compile(r"[0-9A-Za-z_-]{8,64}")


def encode_ack_body(node_id: str, ids: list[str]) -> bytes:
    """The body the district signs: compact JSON, keys sorted (any valid encoding verifies)."""
    return json.dumps({"v": 1, "node": node_id, "ids": list(ids)}, separators=(",", ":"),
                      sort_keys=True).encode()


def verify_ack(data: bytes, trust: TrustDocument, node_id: str, now: dt.datetime | None = None) -> list[str]:
    """The acknowledged record ids, or RemoteDataError with a reason code from docs/protocol.md §9."""
    envelope = parse_envelope(data, max_bytes=MAX_ACK_BYTES)
    if envelope.payload_type != PAYLOAD_ACK:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"{envelope.payload_type} is not an acknowledgement")
    message = envelope.signed_bytes()
    problem = reasons.UNKNOWN_KEY
    for signature in envelope.signatures:
        key = trust.keys.get(signature.keyid)
        if key is None:
            continue
        if signature.keyid in trust.revoked:
            problem = reasons.REVOKED_KEY
            continue
        if not verify(key.public, signature.sig, message):
            problem = reasons.BAD_SIGNATURE
            continue
        if ACK_ROLE not in key.roles:
            problem = reasons.ROLE_NOT_ALLOWED
            continue
        if now is not None and key.expires is not None and now >= key.expires:
            problem = reasons.KEY_EXPIRED
            continue
        if now is not None and key.not_before is not None and now < key.not_before:
            problem = reasons.KEY_NOT_YET_VALID
            continue
        return _parse_body(envelope.payload, node_id)
    raise RemoteDataError(problem, "no valid signature by a key with the 'ack' role")


def _parse_body(payload: bytes, node_id: str) -> list[str]:
    body = strict_json(payload, "ack")
    if not isinstance(body, dict) or set(body) != {"v", "node", "ids"}:
        raise RemoteDataError(reasons.MALFORMED, "ack must be an object with exactly v, node, ids")
    if body["v"] != 1 or isinstance(body["v"], bool):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, "ack.v must be 1")
    if body["node"] != node_id:
        raise RemoteDataError(reasons.WRONG_TARGET, f"ack.node {str(body['node'])[:32]!r} is not this node")
    ids = body["ids"]
    if not isinstance(ids, list) or not ids:
        raise RemoteDataError(reasons.MALFORMED, "ack.ids must be a non-empty list")
    if len(ids) > MAX_IDS:
        raise RemoteDataError(reasons.LIMIT_EXCEEDED, f"ack.ids: {len(ids)} > {MAX_IDS}")
    for index, value in enumerate(ids):
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise RemoteDataError(reasons.MALFORMED, f"ack.ids[{index}] has an invalid value")
    return list(dict.fromkeys(ids))
