"""Pure builders for district-side signing: command bodies, trust documents, envelopes.

Used by `speaker-district send/sign-audio/init`, by the tests, and by the lead's district simulator.
Every command built here is run through the node's own parser before it is signed, so the district
cannot sign something a node would reject as malformed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import shutil
import subprocess
import wave
from pathlib import Path

from node.content.download import hash_file
from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust import reasons
from node.trust.commands import CODECS, DEFAULT_LIMITS, parse_command
from node.trust.durations import format_duration, format_time
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_TRUST
from node.trust.envelope import sign_envelope as _sign_envelope

UTC = dt.timezone.utc

DEFAULT_VALIDITY = {
    "play": dt.timedelta(days=1),
    "stop": dt.timedelta(minutes=10),
    "live": dt.timedelta(hours=2),
    "schedule": dt.timedelta(days=365),
    "config": dt.timedelta(days=365),
    "time": dt.timedelta(minutes=5),
    "update": dt.timedelta(days=7),
}

# Which workspace key names sign which command (see KEY_ROLES in workspace.py for their roles).
EMERGENCY_SIGNERS = ("emergency-a", "emergency-b")
RELEASE_SIGNERS = ("release-a", "release-b")


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def new_command_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-], 144 random bits


def encode_body(body: dict) -> bytes:
    """Deterministic UTF-8 JSON. Nodes verify these exact bytes; they never re-serialize."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def build_command(
    kind: str,
    body: dict,
    *,
    targets: list[str],
    command_id: str | None = None,
    issued_at: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    expires: dt.datetime | None = None,
    valid_for: dt.timedelta | None = None,
) -> dict:
    issued_at = issued_at or now_utc()
    not_before = not_before or issued_at
    expires = expires or not_before + (valid_for or DEFAULT_VALIDITY[kind])
    return {
        "v": 1, "type": kind, "id": command_id or new_command_id(),
        "issued_at": format_time(issued_at), "not_before": format_time(not_before),
        "expires": format_time(expires), "targets": list(targets), "body": body,
    }


def check_command(command: dict) -> bytes:
    """Encode and parse with the node's parser; raises node.errors.RemoteDataError if a node would refuse."""
    payload = encode_body(command)
    parsed = parse_command(payload)
    cap = DEFAULT_LIMITS.max_validity.get(parsed.type)
    if cap is not None and (parsed.expires - parsed.not_before).total_seconds() > cap:
        longest = format_duration(dt.timedelta(seconds=cap))
        raise RemoteDataError(reasons.VALIDITY_TOO_LONG, f"{parsed.type} may be valid for at most {longest}")
    return payload


def signer_names(command: dict) -> list[str]:
    """Names of the workspace keys that must sign this command (mirrors verifier.required_roles)."""
    kind, body = command["type"], command["body"]
    if kind == "play":
        return list(EMERGENCY_SIGNERS) if body.get("level") == "emergency" else ["bulletin"]
    if kind == "stop":
        return ["emergency-a"] if body.get("all") or body.get("level") == "emergency" else ["bulletin"]
    if kind == "live":
        return ["live", *EMERGENCY_SIGNERS] if body.get("level") == "emergency" else ["live"]
    if kind == "update":
        return list(RELEASE_SIGNERS)
    return ["schedule"]  # the schedule key holds schedule, config and time


def sign_envelope(payload_type: str, body_bytes: bytes, keys) -> bytes:
    return _sign_envelope(payload_type, body_bytes, list(keys))


def sign_command(command: dict, keys) -> bytes:
    envelope = sign_envelope(PAYLOAD_COMMAND, check_command(command), keys)
    if len(envelope) > DEFAULT_LIMITS.max_envelope_bytes:
        # A node drops such a message unread and can report only its size (protocol section 6).
        raise RemoteDataError(reasons.TOO_LARGE, f"envelope is {len(envelope)} bytes, "
                                                 f"limit {DEFAULT_LIMITS.max_envelope_bytes}")
    return envelope


# -- audio ------------------------------------------------------------------------------------------
def audio_duration(path: str | Path) -> float:
    """Seconds of audio: the WAV header via `wave`; other formats via `soxi -D` when sox is installed.

    Raises ValueError when it cannot tell (then pass --duration).
    """
    path = Path(path)
    problem = "unknown format"
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as w:
                return w.getnframes() / float(w.getframerate())
        except (wave.Error, EOFError, ZeroDivisionError) as exc:
            # Python < 3.12 `wave` refuses WAVE_FORMAT_EXTENSIBLE (what sox writes): ask soxi below.
            problem = f"not a WAV file `wave` can read ({exc})"
    soxi = shutil.which("soxi")
    if soxi:
        result = subprocess.run([soxi, "-D", str(path)], capture_output=True, text=True, timeout=30)
        try:
            seconds = float(result.stdout.strip())
        except ValueError:
            seconds = 0.0
        if result.returncode == 0 and seconds > 0:
            return seconds
    raise ValueError(f"cannot read the duration of {path.name} ({problem}); pass --duration SECONDS")


def codec_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    suffix = {"m4a": "aac", "oga": "ogg"}.get(suffix, suffix)
    if suffix not in CODECS:
        raise ValueError(f"unknown codec for {Path(path).name}; pass --codec ({', '.join(CODECS)})")
    return suffix


def content_id_for(path: str | Path, sha256: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.:-]+", "-", Path(path).stem).strip("-")[:48] or "audio"
    return f"{stem}-{sha256[:12]}"


def content_fields(path: str | Path, *, duration: float | None = None, codec: str | None = None) -> dict:
    sha256, length = hash_file(path)  # the same streaming hash the node's cache checks with
    return {"sha256": sha256, "length": length,
            "duration": round(duration if duration is not None else audio_duration(path), 3),
            "codec": codec or codec_for(path)}


# -- trust document --------------------------------------------------------------------------------
def trust_key_entry(name: str, key, roles: list[str], not_before: dt.datetime | None = None,
                    expires: dt.datetime | None = None) -> tuple[str, dict]:
    entry = {"name": name, "public": ed25519.public_b64(key), "roles": sorted(roles)}
    if not_before is not None:
        entry["not_before"] = format_time(not_before)
    if expires is not None:
        entry["expires"] = format_time(expires)
    return ed25519.keyid_of_key(key), entry


def build_trust_body(
    *, version: int, issued_at: dt.datetime, expires: dt.datetime, root_keys: list, root_threshold: int,
    keys: dict[str, dict], thresholds: dict[str, int] | None = None, revoked: list[str] | None = None,
) -> dict:
    """`root_keys`: Ed25519 keys (private or public); `keys`: keyid -> entry from trust_key_entry."""
    return {
        "v": 1, "type": "trust", "version": version,
        "issued_at": format_time(issued_at), "expires": format_time(expires),
        "root": {"keys": {ed25519.keyid_of_key(k): {"public": ed25519.public_b64(k)} for k in root_keys},
                 "threshold": root_threshold},
        "keys": keys, "thresholds": dict(thresholds or {}), "revoked": sorted(set(revoked or [])),
    }


def sign_trust(body: dict, root_private_keys) -> bytes:
    return sign_envelope(PAYLOAD_TRUST, encode_body(body), root_private_keys)
