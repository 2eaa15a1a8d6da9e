"""Stable reason codes for every rejection the trust core can make (mirrored in docs/protocol.md).

A code never changes meaning once released: the district counts and alerts on them. `reported` says
whether the node tells the district (an event on spk/node/NODE/events) or drops the message silently:
silence is only for messages that are not ours or that we already applied.
"""

from __future__ import annotations

from typing import NamedTuple


class Reason(NamedTuple):
    code: str
    reported: bool
    meaning: str


TOO_LARGE = "too_large"
LIMIT_EXCEEDED = "limit_exceeded"
MALFORMED = "malformed"
UNSUPPORTED_TYPE = "unsupported_type"
UNSUPPORTED_VERSION = "unsupported_version"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
REVOKED_KEY = "revoked_key"
KEY_EXPIRED = "key_expired"
KEY_NOT_YET_VALID = "key_not_yet_valid"
ROLE_NOT_ALLOWED = "role_not_allowed"
THRESHOLD_NOT_MET = "threshold_not_met"
ROOT_THRESHOLD_NOT_MET = "root_threshold_not_met"
WRONG_TARGET = "wrong_target"
NOT_FOR_US = "not_for_us"
CLOCK_UNTRUSTED = "clock_untrusted"
NOT_YET_VALID = "not_yet_valid"
EXPIRED = "expired"
VALIDITY_TOO_LONG = "validity_too_long"
TRUST_EXPIRED = "trust_expired"
BEACON_TOO_OLD = "beacon_too_old"
REPLAYED = "replayed"
ROLLBACK = "rollback"
DUPLICATE = "duplicate"
AUDIO_HASH_MISMATCH = "audio_hash_mismatch"
AUDIO_LENGTH_MISMATCH = "audio_length_mismatch"
AUDIO_TOO_LARGE = "audio_too_large"
AUDIO_URL_REFUSED = "audio_url_refused"
AUDIO_TOO_MANY_REDIRECTS = "audio_too_many_redirects"
CACHE_FULL = "cache_full"
DOWNLOAD_FAILED = "download_failed"
INTERNAL_ERROR = "internal_error"
LIVE_URL_REFUSED = "live_url_refused"
ISSUED_BEFORE_RESET = "issued_before_reset"
TIME_NONCE_UNKNOWN = "time_nonce_unknown"
TIME_NONCE_STALE = "time_nonce_stale"
TIME_TOO_UNCERTAIN = "time_too_uncertain"

TABLE: tuple[Reason, ...] = (
    Reason(TOO_LARGE, True, "the envelope is bigger than the configured maximum; not parsed"),
    Reason(LIMIT_EXCEEDED, True, "a count or length cap was exceeded (signatures, targets, strings, "
                                 "playlist, audio length or duration); detail names the field"),
    Reason(MALFORMED, True, "not valid JSON, duplicate keys, a missing, unknown or wrongly typed field; "
                            "detail names the field"),
    Reason(UNSUPPORTED_TYPE, True, "unknown payloadType or command type"),
    Reason(UNSUPPORTED_VERSION, True, "the body's \"v\" is not 1"),
    Reason(BAD_SIGNATURE, True, "a signature by a known key does not verify over PAE(payloadType, payload)"),
    Reason(UNKNOWN_KEY, True, "no signature is by a key in the trust document"),
    Reason(REVOKED_KEY, True, "the only signing key(s) are listed in the trust document's \"revoked\""),
    Reason(KEY_EXPIRED, True, "the signing key's own \"expires\" has passed"),
    Reason(KEY_NOT_YET_VALID, True, "the signing key's own \"not_before\" is in the future"),
    Reason(ROLE_NOT_ALLOWED, True, "valid signatures, but no signing key holds the role the command needs"),
    Reason(THRESHOLD_NOT_MET, True, "fewer distinct valid keys with the role than the trust threshold"),
    Reason(ROOT_THRESHOLD_NOT_MET, True, "a trust document lacks enough current (or new) root signatures"),
    Reason(WRONG_TARGET, True, "arrived on this node's own topic but does not name this node or its groups"),
    Reason(NOT_FOR_US, False, "arrived on a group topic and targets other nodes: ignored"),
    Reason(CLOCK_UNTRUSTED, True, "the node has no trusted time, so no time-bound message can be accepted"),
    Reason(NOT_YET_VALID, True, "now < not_before - skew"),
    Reason(EXPIRED, True, "now >= expires (commands and trust documents)"),
    Reason(VALIDITY_TOO_LONG, True, "expires - not_before is longer than the cap for this command type"),
    Reason(TRUST_EXPIRED, True, "the node's current trust document has expired: update it"),
    Reason(BEACON_TOO_OLD, True, "retired with time beacons (protocol §7a): no longer produced"),
    Reason(REPLAYED, True, "a command id that was already accepted (same command again)"),
    Reason(ROLLBACK, True, "a schedule, config or trust version lower than the one in force"),
    Reason(DUPLICATE, False, "the same schedule/config/trust version again: already applied, ignored"),
    Reason(AUDIO_HASH_MISMATCH, True, "the audio bytes do not hash to the signed sha256"),
    Reason(AUDIO_LENGTH_MISMATCH, True, "the audio file is not the signed length"),
    Reason(AUDIO_TOO_LARGE, True, "the audio is longer (bytes or seconds) than the node accepts"),
    Reason(AUDIO_URL_REFUSED, True, "the audio URL (or a redirect) is not https, or changes scheme"),
    Reason(AUDIO_TOO_MANY_REDIRECTS, True, "more than 3 redirects while downloading audio"),
    Reason(CACHE_FULL, True, "the audio cache cannot take the file without evicting content the schedule needs"),
    Reason(DOWNLOAD_FAILED, True, "the audio could not be fetched (TLS, HTTP error, timeouts) after every retry"),
    Reason(INTERNAL_ERROR, True, "a bug in the node's verifier (an unexpected exception while checking): the "
                                 "message is refused; detail names the exception and where. Never the sender's "
                                 "fault alone: file a bug with the message"),
    Reason(LIVE_URL_REFUSED, True, "a live URL (live command or schedule slot) is not https: live audio has no "
                                   "signed hash, only the district-CA TLS session authenticates it"),
    Reason(ISSUED_BEFORE_RESET, True, "issued (or valid) before the node's last state reset, when it lost the "
                                      "ids it had accepted: it may be a replay; the district re-sends"),
    Reason(TIME_NONCE_UNKNOWN, True, "a time answer with no nonce the node waits on: unsolicited, queued, replayed"),
    Reason(TIME_NONCE_STALE, True, "a signed time answer came more than a few seconds after the request it answers"),
    Reason(TIME_TOO_UNCERTAIN, True, "a signed time answer's radius plus the round trip exceeds the node's bound"),
)

BY_CODE: dict[str, Reason] = {reason.code: reason for reason in TABLE}


def is_reported(code: str) -> bool:
    """Unknown codes are reported: silence must be a deliberate choice, never a default."""
    reason = BY_CODE.get(code)
    return True if reason is None else reason.reported
