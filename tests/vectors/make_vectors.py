"""Generate the protocol test vectors (tests/vectors/*.json) from fixed Ed25519 seeds.

    .venv/bin/python tests/vectors/make_vectors.py          # rewrite the files
    .venv/bin/python tests/vectors/make_vectors.py --check  # exit 1 if the files on disk are stale

Ed25519 signatures are deterministic and the JSON encoding is fixed, so the output is byte-for-byte
reproducible. The tests also import this module for its fixed keys, trust document and builders.
THE SEEDS ARE PUBLIC: never use these keys outside tests.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from node.trust import keys as ed25519  # noqa: E402
from node.trust.durations import format_time  # noqa: E402
from node.trust.envelope import PAYLOAD_ACK, PAYLOAD_COMMAND, PAYLOAD_TIME, PAYLOAD_TRUST, encode_envelope, pae  # noqa: E402,E501

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
NODE_ID = "27787-03"
GROUPS = ["c27787", "d760", "p75"]
OWN_TOPIC = f"spk/node/{NODE_ID}/cmd"
GROUP_TOPIC = "spk/group/c27787/cmd"

# name -> (roles, not_before, expires); None roles = a root key; "stranger" is not in the trust document.
KEY_SPECS = {
    "root-1": (None, None, None),
    "root-2": (None, None, None),
    "bulletin": (["bulletin"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "emergency-a": (["emergency"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "emergency-b": (["emergency"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "schedule": (["config", "schedule", "time"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "live": (["live"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "collector": (["ack"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "old-bulletin": (["bulletin"], "2025-01-01T00:00:00Z", "2026-06-01T00:00:00Z"),
    "future-bulletin": (["bulletin"], "2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "revoked-bulletin": (["bulletin"], "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    "stranger": ([], None, None),
    "new-root-1": (None, None, None),
}
ROOTS = ["root-1", "root-2"]
ROOT_THRESHOLD = 2


def seed(name: str) -> bytes:
    return hashlib.sha256(b"speaker-node public test vector key: " + name.encode()).digest()


def key(name: str):
    return ed25519.from_seed(seed(name))


def keyid(name: str) -> str:
    return ed25519.keyid_of_key(key(name))


def encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign_payload(payload_type: str, payload: bytes, names: list[str]) -> bytes:
    message = pae(payload_type, payload)
    return encode_envelope(payload_type, payload, [(keyid(n), key(n).sign(message)) for n in names])


def trust_body(version: int = 3, roots: list[str] = ROOTS, root_threshold: int = ROOT_THRESHOLD,
               expires: str = "2027-12-31T00:00:00Z", revoked: list[str] = ("revoked-bulletin",),
               thresholds: dict | None = None) -> dict:
    keys = {}
    for name, (roles, not_before, key_expires) in KEY_SPECS.items():
        if roles is None or name == "stranger":
            continue
        entry = {"name": name, "public": ed25519.public_b64(key(name)), "roles": roles}
        if not_before:
            entry["not_before"] = not_before
        if key_expires:
            entry["expires"] = key_expires
        keys[keyid(name)] = entry
    return {
        "v": 1, "type": "trust", "version": version, "issued_at": "2026-01-01T00:00:00Z", "expires": expires,
        "root": {"keys": {keyid(n): {"public": ed25519.public_b64(key(n))} for n in roots},
                 "threshold": root_threshold},
        "keys": keys, "thresholds": thresholds if thresholds is not None else {"emergency": 2},
        "revoked": sorted(keyid(n) for n in revoked),
    }


def trust_envelope(body: dict | None = None, signers: list[str] = ROOTS) -> bytes:
    return sign_payload(PAYLOAD_TRUST, encode(body or trust_body()), signers)


def content(**overrides) -> dict:
    item = {"content_id": "ban-tin-sang-2611", "url": "https://district.example/audio/ban-tin-sang-2611.mp3",
            "sha256": hashlib.sha256(b"test audio").hexdigest(), "length": 482113, "duration": 120.5,
            "codec": "mp3", "volume": None, "zones": None, "title": "Bản tin sáng 26/11"}
    item.update(overrides)
    return item


def play_body(level: str = "normal", **overrides) -> dict:
    return {**content(), "level": level, "start_at": None, **overrides}


def command(kind: str, body: dict, *, cid: str, targets=(NODE_ID,), not_before: dt.datetime | None = None,
            expires: dt.datetime | None = None, **overrides) -> dict:
    not_before = not_before or NOW - dt.timedelta(minutes=10)
    expires = expires or NOW + dt.timedelta(hours=2)
    doc = {"v": 1, "type": kind, "id": cid, "issued_at": format_time(not_before),
           "not_before": format_time(not_before), "expires": format_time(expires),
           "targets": list(targets), "body": body}
    doc.update(overrides)
    return doc


def sign(doc: dict, names: list[str]) -> bytes:
    return sign_payload(PAYLOAD_COMMAND, encode(doc), names)


def schedule_body(version: int) -> dict:
    return {"version": version, "timezone": "Asia/Ho_Chi_Minh",
            "slots": [{"id": "sang", "weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "05:30", "duration": 1800,
                       "level": "normal", "volume": 80, "playlist": [content(url=None)]},
                      {"id": "chieu", "weekdays": [1, 3, 5], "start": "17:00", "duration": 3600,
                       "level": "normal", "volume": None,
                       "live": {"url": "https://radio.example/vov1", "codec": "mp3"}}],
            "once": [{"id": "hop-dan", "at": "2026-11-28T19:00:00Z", "duration": 600, "level": "priority",
                      "playlist": [content(content_id="hop-dan-2811")]}]}


def _context(**overrides) -> dict:
    ctx = {"node_id": NODE_ID, "groups": GROUPS, "topic": OWN_TOPIC, "now": format_time(NOW), "seen": [],
           "versions": {"schedule": 4, "config": 7}}
    ctx.update(overrides)
    return ctx


def _tamper_signature(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


def _swap_payload(envelope: bytes, new_payload: bytes) -> bytes:
    doc = json.loads(envelope)
    doc["payload"] = base64.b64encode(new_payload).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


# Reasons decided before the body is authenticated and parsed (docs/protocol.md section 6, "which fields
# of a rejected event are null"): the refusal's command_id is null, whatever id the bytes claim.
UNAUTHENTICATED_REASONS = {"too_large", "malformed", "unsupported_type", "unsupported_version", "limit_exceeded",
                           "live_url_refused", "unknown_key", "revoked_key", "bad_signature"}


def refusal_fields(envelope: bytes, reason: str) -> dict:
    """What a refusal names besides its reason: the signed id once authenticated, and always the digest."""
    command_id = None
    if reason not in UNAUTHENTICATED_REASONS:
        command_id = json.loads(base64.b64decode(json.loads(envelope)["payload"]))["id"]
    return {"command_id": command_id, "envelope_sha256": hashlib.sha256(envelope).hexdigest()}


def cases() -> list[tuple[str, str, bytes, dict, dict]]:
    """(file stem, description, envelope, context, expected)."""
    ok = {"decision": "accepted", "reason": None}

    def no(reason: str) -> dict:
        return {"decision": "rejected", "reason": reason}

    def ignored(reason: str) -> dict:
        return {"decision": "ignored", "reason": reason}

    n = iter(range(1, 1000))

    def cid(label: str) -> str:
        return f"vec-{next(n):03d}-{label}"[:64].ljust(16, "x")

    out = []

    def add(stem, description, envelope, expected, **ctx):
        if expected["decision"] != "accepted":
            expected = {**expected, **refusal_fields(envelope, expected["reason"])}
        out.append((stem, description, envelope, _context(**ctx), expected))

    play = command("play", play_body(), cid=cid("play-normal"))
    add("play-normal-accepted", "A normal bulletin signed by the bulletin key, for this node, on its topic.",
        sign(play, ["bulletin"]), ok)
    add("play-priority-group-accepted", "A priority bulletin for the commune group, on the group topic.",
        sign(command("play", play_body("priority"), cid=cid("play-group"), targets=["c27787"]), ["bulletin"]),
        ok, topic=GROUP_TOPIC)
    add("play-all-accepted", "A bulletin targeted at 'all'.",
        sign(command("play", play_body(), cid=cid("play-all"), targets=["all"]), ["bulletin"]), ok,
        topic="spk/group/all/cmd")
    emergency = command("play", play_body("emergency"), cid=cid("play-emergency"))
    add("emergency-two-signatures-accepted", "Emergency play signed by emergency-a and emergency-b (2 of 2).",
        sign(emergency, ["emergency-a", "emergency-b"]), ok)
    add("emergency-one-signature-rejected", "Emergency play with one emergency signature; threshold is 2.",
        sign(emergency, ["emergency-a"]), no("threshold_not_met"))
    add("emergency-same-key-twice-rejected", "The same emergency key signs twice: it counts once.",
        sign(emergency, ["emergency-a", "emergency-a"]), no("threshold_not_met"))
    add("emergency-by-bulletin-key-rejected", "A bulletin key (outside its role) signs an emergency play.",
        sign(emergency, ["bulletin"]), no("role_not_allowed"))
    add("forged-signature-rejected", "One bit of the bulletin key's signature flipped.",
        _tamper_signature(sign(play, ["bulletin"])), no("bad_signature"))
    altered = encode({**play, "targets": ["all"]})
    add("payload-swapped-rejected", "The payload was changed after signing (targets widened to 'all').",
        _swap_payload(sign(play, ["bulletin"]), altered), no("bad_signature"))
    add("unknown-key-rejected", "Signed by a key that is not in the trust document.",
        sign(command("play", play_body(), cid=cid("stranger")), ["stranger"]), no("unknown_key"))
    add("revoked-key-rejected", "Signed by a key listed in the trust document's 'revoked'.",
        sign(command("play", play_body(), cid=cid("revoked")), ["revoked-bulletin"]), no("revoked_key"))
    add("key-expired-rejected", "Signed by a bulletin key whose own validity ended 2026-06-01.",
        sign(command("play", play_body(), cid=cid("old-key")), ["old-bulletin"]), no("key_expired"))
    add("key-not-yet-valid-rejected", "Signed by a bulletin key valid only from 2027-01-01.",
        sign(command("play", play_body(), cid=cid("future-key")), ["future-bulletin"]),
        no("key_not_yet_valid"))
    add("replayed-rejected", "The same command again: its id is in the node's seen-ids store.",
        sign(play, ["bulletin"]), no("replayed"), seen=[play["id"]])
    add("expired-rejected", "Command expired one second before now.",
        sign(command("play", play_body(), cid=cid("expired"), not_before=NOW - dt.timedelta(hours=1),
                     expires=NOW - dt.timedelta(seconds=1)), ["bulletin"]), no("expired"))
    add("expires-exactly-now-rejected", "now == expires is already expired.",
        sign(command("play", play_body(), cid=cid("expires-now"), expires=NOW), ["bulletin"]), no("expired"))
    add("not-yet-valid-rejected", "not_before is 31 seconds in the future (skew is 30 s).",
        sign(command("play", play_body(), cid=cid("early"), not_before=NOW + dt.timedelta(seconds=31)),
             ["bulletin"]), no("not_yet_valid"))
    add("within-skew-accepted", "not_before is 20 seconds in the future: inside the 30 s skew.",
        sign(command("play", play_body(), cid=cid("skew"), not_before=NOW + dt.timedelta(seconds=20)),
             ["bulletin"]), ok)
    add("validity-too-long-rejected", "A play command valid for 40 days (cap 31 days).",
        sign(command("play", play_body(), cid=cid("long"), expires=NOW + dt.timedelta(days=40)),
             ["bulletin"]), no("validity_too_long"))
    other = command("play", play_body(), cid=cid("other-node"), targets=["27787-04"])
    add("wrong-target-own-topic-rejected", "Arrived on this node's own topic but targets 27787-04.",
        sign(other, ["bulletin"]), no("wrong_target"))
    add("other-group-ignored", "Arrived on a group topic and targets another commune: ignored, not reported.",
        sign(command("play", play_body(), cid=cid("other-group"), targets=["c27790"]), ["bulletin"]),
        ignored("not_for_us"), topic="spk/group/c27790/cmd")
    add("clock-untrusted-rejected", "The node has no trusted time (now is null).",
        sign(play, ["bulletin"]), no("clock_untrusted"), now=None)
    add("schedule-newer-accepted", "Schedule version 5 when 4 is in force.",
        sign(command("schedule", schedule_body(5), cid=cid("sched-5"), expires=NOW + dt.timedelta(days=30)),
             ["schedule"]), ok)
    add("schedule-rollback-rejected", "Schedule version 3 when 4 is in force.",
        sign(command("schedule", schedule_body(3), cid=cid("sched-3")), ["schedule"]), no("rollback"))
    add("schedule-duplicate-ignored", "Schedule version 4 again (already applied).",
        sign(command("schedule", schedule_body(4), cid=cid("sched-4")), ["schedule"]), ignored("duplicate"))
    add("config-accepted", "Config version 8 signed by the schedule key (which holds the config role).",
        sign(command("config", {"version": 8, "settings": {"audio.default_volume": 70, "health.heartbeat_full": 900}},
                     cid=cid("config-8")), ["schedule"]), ok)
    add("config-by-bulletin-rejected", "A bulletin key tries to change configuration.",
        sign(command("config", {"version": 8, "settings": {"audio.default_volume": 100}}, cid=cid("config-bul")),
             ["bulletin"]), no("role_not_allowed"))
    add("stop-emergency-one-signature-accepted", "Cancelling an emergency needs one emergency key.",
        sign(command("stop", {"content_id": None, "level": "emergency", "all": False}, cid=cid("stop-em")),
             ["emergency-b"]), ok)
    add("stop-all-by-bulletin-rejected", "'stop all' would cancel emergencies: a bulletin key may not.",
        sign(command("stop", {"content_id": None, "level": None, "all": True}, cid=cid("stop-all")),
             ["bulletin"]), no("role_not_allowed"))
    live_em = command("live", {"url": "https://radio.example/khan-cap", "max_duration": 1800,
                               "level": "emergency", "volume": 100, "grace": 30}, cid=cid("live-em"))
    add("live-emergency-accepted", "Emergency live relay: live key plus both emergency keys.",
        sign(live_em, ["live", "emergency-a", "emergency-b"]), ok)
    add("live-emergency-without-emergency-keys-rejected", "Emergency live relay signed by the live key only.",
        sign(live_em, ["live"]), no("role_not_allowed"))
    beacon_time = NOW + dt.timedelta(days=2)
    beacon = command("time", {"time": format_time(beacon_time)}, cid=cid("beacon"),
                     not_before=beacon_time - dt.timedelta(seconds=5),
                     expires=beacon_time + dt.timedelta(minutes=5))
    add("beacon-untrusted-clock-rejected", "A signed time beacon (retired: no nonce), no trusted clock.",
        sign(beacon, ["schedule"]), no("unsupported_type"), now=None)
    add("beacon-trusted-clock-rejected", "A signed time beacon (retired) while the clock is trusted.",
        sign(beacon, ["schedule"]), no("unsupported_type"))
    add("beacon-by-bulletin-rejected", "A time beacon signed by a key without the time role: retired first.",
        sign(beacon, ["bulletin"]), no("unsupported_type"), now=None)
    add("malformed-json-rejected", "Signed payload that is not JSON.",
        sign_payload(PAYLOAD_COMMAND, b'{"v":1,"type":"play",', ["bulletin"]), no("malformed"))
    add("wrong-field-type-rejected", "body.length is a string.",
        sign(command("play", play_body(length="482113"), cid=cid("type")), ["bulletin"]), no("malformed"))
    add("unknown-field-rejected", "An unknown top-level field.",
        sign(command("play", play_body(), cid=cid("unknown"), extra=True), ["bulletin"]), no("malformed"))
    add("unsupported-version-rejected", "Command body with v=2.",
        sign(command("play", play_body(), cid=cid("v2"), v=2), ["bulletin"]), no("unsupported_version"))
    add("unsupported-command-type-rejected", "Command type 'reboot' does not exist.",
        sign(command("reboot", {}, cid=cid("reboot")), ["bulletin"]), no("unsupported_type"))
    add("trust-payload-type-rejected", "A trust document sent where a command is expected.",
        trust_envelope(), no("unsupported_type"))
    add("too-many-signatures-rejected", "Nine signatures (the cap is 8).",
        sign(play, ["bulletin"] * 9), no("limit_exceeded"))
    add("too-many-targets-rejected", "65 targets (the cap is 64).",
        sign(command("play", play_body(), cid=cid("targets"), targets=[NODE_ID] + ["all"] * 64),
             ["bulletin"]), no("limit_exceeded"))
    add("huge-title-rejected", "A 10 000-character title (the cap is 256).",
        sign(command("play", play_body(title="A" * 10000), cid=cid("title")), ["bulletin"]),
        no("limit_exceeded"))
    add("too-large-rejected", "A 70 000-byte envelope (the cap is 65 536): not even parsed.",
        sign(command("play", play_body(title="B" * 52000), cid=cid("large")), ["bulletin"]), no("too_large"))
    live_http = command("live", {"url": "http://radio.example/khan-cap", "max_duration": 1800,
                                 "level": "normal", "grace": 30}, cid=cid("live-http"))
    add("live-plain-http-rejected", "A correctly signed live relay over plain http: live audio is https only.",
        sign(live_http, ["live"]), no("live_url_refused"))
    # After a state reset (state.db lost or rebuilt at 05:25) the seen ids are gone: a command issued
    # before it may already have played; one issued after it cannot have been seen.
    add("issued-before-reset-rejected", "Issued 05:20, before the node's state reset at 05:25 (seen ids lost).",
        sign(play, ["bulletin"]), no("issued_before_reset"), reset_epoch=format_time(NOW - dt.timedelta(minutes=5)))
    add("issued-after-reset-accepted", "Issued 05:26, after the state reset at 05:25: the district re-sent it.",
        sign(command("play", play_body(), cid=cid("after-reset"), not_before=NOW - dt.timedelta(minutes=4)),
             ["bulletin"]), ok, reset_epoch=format_time(NOW - dt.timedelta(minutes=5)))
    return out


ACK_IDS = ["01KB3Z5Q6R0000000000000000", "01KB3Z5Q6R0000000000000001"]


def ack_body(node: str = NODE_ID, ids=ACK_IDS, **overrides) -> bytes:
    return encode({"v": 1, "node": node, "ids": list(ids), **overrides})


def ack_cases() -> list[tuple[str, str, bytes, str, dict]]:
    """Record acknowledgements (docs/protocol.md 9b): (file stem, description, envelope, node, expected)."""
    no = lambda reason: {"decision": "rejected", "reason": reason}  # noqa: E731
    return [
        ("accepted", "Signed by the collector key (role ack) for this node: the node deletes both records.",
         sign_payload(PAYLOAD_ACK, ack_body(), ["collector"]), NODE_ID, {"decision": "accepted", "ids": ACK_IDS}),
        ("bulletin-key-rejected", "A valid district key without the ack role: nothing is deleted.",
         sign_payload(PAYLOAD_ACK, ack_body(), ["bulletin"]), NODE_ID, no("role_not_allowed")),
        ("stranger-rejected", "A key not in the trust document (e.g. a broker's own): nothing is deleted.",
         sign_payload(PAYLOAD_ACK, ack_body(), ["stranger"]), NODE_ID, no("unknown_key")),
        ("other-node-rejected", "A genuine acknowledgement for 27787-01 replayed to 27787-03.",
         sign_payload(PAYLOAD_ACK, ack_body(node="27787-01"), ["collector"]), NODE_ID, no("wrong_target")),
        ("bad-id-rejected", "An id outside [0-9A-Za-z_-]{8,64}.",
         sign_payload(PAYLOAD_ACK, ack_body(ids=["../../etc"]), ["collector"]), NODE_ID, no("malformed")),
        ("unknown-field-rejected", "An extra field: a new field means a new v.",
         sign_payload(PAYLOAD_ACK, ack_body(extra=1), ["collector"]), NODE_ID, no("malformed")),
    ]


NONCE_A = hashlib.sha256(b"speaker-node time vector nonce A").hexdigest()
NONCE_B = hashlib.sha256(b"speaker-node time vector nonce B").hexdigest()
NONCE_OLD = hashlib.sha256(b"speaker-node time vector nonce used before").hexdigest()
ANSWER_TIME = "2026-11-26T05:30:00.250Z"


def time_answer(node: str = NODE_ID, nonces=(NONCE_A,), time: str = ANSWER_TIME, radius_ms: int = 500,
                **overrides) -> bytes:
    doc = {"v": 1, "type": "time", "node": node, "nonces": list(nonces), "time": time, "radius_ms": radius_ms}
    doc.update(overrides)
    return encode(doc)


def time_cases() -> list[tuple[str, str, bytes, dict, dict]]:
    """Signed time answers (docs/protocol.md §7a): (stem, description, envelope, context, expected)."""

    def ctx(issued=None, received=100.4) -> dict:
        return {"node_id": NODE_ID, "issued": {NONCE_A: 100.0} if issued is None else issued,
                "received_monotonic": received}

    def no(reason: str) -> dict:
        return {"decision": "rejected", "reason": reason}

    def ok(time: str, monotonic: float, uncertainty: float, nonce: str = NONCE_A) -> dict:
        return {"decision": "accepted", "reason": None, "time": time, "monotonic": monotonic,
                "uncertainty_s": uncertainty, "nonce": nonce}

    signed = sign_payload(PAYLOAD_TIME, time_answer(), ["schedule"])
    return [
        ("answer-accepted", "The answer to the node's nonce, 0.4 s round trip, 500 ms radius: time held at the "
         "midpoint (monotonic 100.2), uncertainty radius + round trip = 0.9 s.",
         signed, ctx(), ok(ANSWER_TIME, 100.2, 0.9)),
        ("batch-answer-accepted", "One answer serving two requests; the node's newest nonce (B, sent at 100.1) "
         "is the one used.",
         sign_payload(PAYLOAD_TIME, time_answer(nonces=[NONCE_A, NONCE_B]), ["schedule"]),
         ctx(issued={NONCE_A: 99.0, NONCE_B: 100.1}), ok(ANSWER_TIME, 100.25, 0.8, NONCE_B)),
        ("unsolicited-rejected", "A validly signed answer to a nonce this node never issued.",
         signed, ctx(issued={NONCE_B: 100.0}), no("time_nonce_unknown")),
        ("replayed-after-use-rejected", "The same answer again after the node used its nonce (single use), "
         "or after a restart (nonces live in memory only), or queued on a persistent session.",
         signed, ctx(issued={}), no("time_nonce_unknown")),
        ("stale-nonce-rejected", "The answer arrives 6 s after the request (limit 5 s): it may have waited "
         "in a queue.",
         signed, ctx(received=106.0), no("time_nonce_stale")),
        ("wrong-node-rejected", "A genuine answer for another node, redirected to this one.",
         sign_payload(PAYLOAD_TIME, time_answer(node="27787-04"), ["schedule"]), ctx(), no("wrong_target")),
        ("bad-signature-rejected", "The time in the body was changed after signing.",
         _swap_payload(signed, time_answer(time="2036-11-26T05:30:00.250Z")), ctx(), no("bad_signature")),
        ("unknown-key-rejected", "Signed by a key the trust document does not list.",
         sign_payload(PAYLOAD_TIME, time_answer(), ["stranger"]), ctx(), no("unknown_key")),
        ("revoked-key-rejected", "Signed only by a revoked key.",
         sign_payload(PAYLOAD_TIME, time_answer(), ["revoked-bulletin"]), ctx(), no("revoked_key")),
        ("no-time-role-rejected", "Signed by the bulletin key, which does not hold the time role.",
         sign_payload(PAYLOAD_TIME, time_answer(), ["bulletin"]), ctx(), no("role_not_allowed")),
        ("radius-too-large-rejected", "Radius 9.7 s + round trip 0.4 s = 10.1 s > 10 s.",
         sign_payload(PAYLOAD_TIME, time_answer(radius_ms=9700), ["schedule"]), ctx(), no("time_too_uncertain")),
        ("slow-round-trip-too-uncertain-rejected", "Radius 6 s + round trip 4.5 s = 10.5 s > 10 s.",
         sign_payload(PAYLOAD_TIME, time_answer(radius_ms=6000), ["schedule"]), ctx(received=104.5),
         no("time_too_uncertain")),
        ("trust-expired-at-answer-time-rejected", "The answer's time is after the trust document expired.",
         sign_payload(PAYLOAD_TIME, time_answer(time="2028-06-01T00:00:00.000Z"), ["schedule"]), ctx(),
         no("trust_expired")),
        ("command-payload-type-rejected", "A time body inside a command envelope.",
         sign_payload(PAYLOAD_COMMAND, time_answer(), ["schedule"]), ctx(), no("unsupported_type")),
        ("unknown-field-rejected", "An extra body field.",
         sign_payload(PAYLOAD_TIME, time_answer(leap=0), ["schedule"]), ctx(), no("malformed")),
        ("bad-nonce-format-rejected", "A nonce in upper-case hex.",
         sign_payload(PAYLOAD_TIME, time_answer(nonces=[NONCE_A.upper()]), ["schedule"]),
         ctx(), no("malformed")),
        ("unsupported-version-rejected", "Body v = 2.",
         sign_payload(PAYLOAD_TIME, time_answer(v=2), ["schedule"]), ctx(), no("unsupported_version")),
    ]


def files() -> dict[str, bytes]:
    result = {}
    key_table = {}
    for name, (roles, not_before, expires) in KEY_SPECS.items():
        key_table[name] = {"seed": seed(name).hex(), "public": ed25519.public_b64(key(name)),
                           "keyid": keyid(name), "roles": roles, "not_before": not_before, "expires": expires}
    result["keys.json"] = (json.dumps(key_table, indent=2) + "\n").encode()
    result["trust.json"] = trust_envelope()
    for index, (stem, description, envelope, context, expected) in enumerate(cases(), 1):
        vector = {"description": description, "envelope": envelope.decode("ascii"),
                  "context": copy.deepcopy(context), "expected": expected}
        text = json.dumps(vector, indent=2, ensure_ascii=False) + "\n"
        result[f"{index:02d}-{stem}.json"] = text.encode()
    for stem, description, envelope, node, expected in ack_cases():
        vector = {"description": description, "envelope": envelope.decode("ascii"), "node": node,
                  "expected": expected}
        result[f"ack-{stem}.json"] = (json.dumps(vector, indent=2, ensure_ascii=False) + "\n").encode()
    for index, (stem, description, envelope, context, expected) in enumerate(time_cases(), 1):
        vector = {"description": description, "envelope": envelope.decode("ascii"), "context": context,
                  "expected": expected}
        result[f"time/T{index:02d}-{stem}.json"] = (json.dumps(vector, indent=2) + "\n").encode()
    return result


def main(argv: list[str]) -> int:
    wanted = files()
    if "--check" in argv:
        stale = [name for name, data in wanted.items()
                 if not (HERE / name).exists() or (HERE / name).read_bytes() != data]
        for name in stale:
            print(f"stale: {name}")
        return 1 if stale else 0
    for old in [*HERE.glob("[0-9][0-9]-*.json"), *HERE.glob("ack-*.json"), *HERE.glob("time/T[0-9][0-9]-*.json")]:
        if str(old.relative_to(HERE)) not in wanted:
            old.unlink()
    (HERE / "time").mkdir(exist_ok=True)
    for name, data in wanted.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(wanted)} files to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
