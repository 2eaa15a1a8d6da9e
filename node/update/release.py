"""Signed releases and the decision whether this node installs one. Pure: bytes and data in, decisions out.

A release is a DSSE envelope (payloadType application/vnd.speaker.release+json) listing the wheel files
of one version with their SHA-256 and length, signed by at least two distinct keys holding the
`release` role (more if the trust document asks): one stolen key cannot push software to a fleet of
loudspeakers. The update command that points a node at a release is itself signed by the same role
(node/trust/verifier.py), so the release alone - a file anyone may copy - never starts an install.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust import reasons
from node.trust.durations import parse_time
from node.trust.envelope import PAYLOAD_RELEASE, parse_envelope, strict_json
from node.trust.trustdoc import TrustDocument

RELEASE_ROLE = "release"
MIN_RELEASE_SIGNATURES = 2      # whatever the trust document says, never fewer
MAX_FILES = 200
MAX_RELEASE_BYTES = 32768       # embedded in an update command, whose envelope is capped at 64 KiB
ARCHITECTURES = ("arm64", "armhf", "x86_64")
_VERSION = re.compile(r"^\d{1,6}(\.\d{1,6}){1,3}$")
_PYTHON = re.compile(r"^3\.\d{1,2}$")
_WHEEL = re.compile(r"^[A-Za-z0-9_.+-]{1,200}\.whl$")
_PACKAGE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Why a verified update command does not install (event update_refused, data.reason).
REFUSED_ROLLBACK = "rollback"                  # older than the running version and not a signed downgrade
REFUSED_ALREADY_RUNNING = "already_running"
REFUSED_MIN_VERSION = "min_version"            # the running version is too old to update from
REFUSED_PLATFORM = "platform"                  # no files for this architecture / Python
REFUSED_KNOWN_BAD = "known_bad"                # this version already failed its health check here
REFUSED_NOT_UPDATABLE = "not_updatable"        # this install has no releases/current layout
REFUSED_RELEASE_INVALID = "release_invalid"    # the embedded release does not verify
REFUSED_FILE_MISSING = "release_file_missing"  # a wheel the release lists is not in the staging dir
REFUSED_FILE_MISMATCH = "release_file_mismatch"  # a staged wheel is not the signed bytes
REFUSED_INSTALL_FAILED = "install_failed"      # venv or pip failed; the running version is untouched
REFUSED_DOWNLOAD_FAILED = "download_failed"


def version_key(version: str) -> tuple[int, ...]:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"not a release version: {version!r}")
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class ReleaseFile:
    name: str
    sha256: str
    length: int


@dataclass(frozen=True)
class Release:
    version: str
    min_version: str
    downgrade: bool
    package: str
    architectures: tuple[str, ...]
    pythons: tuple[str, ...]
    files: tuple[ReleaseFile, ...]
    issued_at: dt.datetime
    expires: dt.datetime
    keyids: tuple[str, ...] = ()
    envelope: bytes = b""

    @property
    def total_bytes(self) -> int:
        return sum(f.length for f in self.files)

    @property
    def digest(self) -> str:
        """Identifies exactly this signed release (the envelope bytes), for logs and the state file."""
        return hashlib.sha256(self.envelope).hexdigest()


def _fail(detail: str) -> RemoteDataError:
    return RemoteDataError(reasons.MALFORMED, f"release: {detail}")


def _fields(value, where: str, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object")
    for name in required:
        if name not in value:
            raise _fail(f"{where}.{name} is missing")
    for name in value:
        if name not in required and name not in optional:
            raise _fail(f"{where}.{str(name)[:40]} is not a known field")
    return value


def _string(value, where: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise _fail(f"{where} has an invalid value {str(value)[:40]!r}")
    return value


def parse_release_body(payload: bytes) -> Release:
    body = _fields(strict_json(payload, "release"), "release",
                   ("v", "type", "version", "min_version", "package", "architectures", "python", "files",
                    "issued_at", "expires"), ("downgrade",))
    if body["v"] != 1 or isinstance(body["v"], bool):
        raise RemoteDataError(reasons.UNSUPPORTED_VERSION, f"release v={str(body['v'])[:20]}")
    if body["type"] != "release":
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"release type {str(body['type'])[:40]!r}")
    version = _string(body["version"], "version", _VERSION)
    min_version = _string(body["min_version"], "min_version", _VERSION)
    if version_key(min_version) > version_key(version) and not body.get("downgrade", False):
        raise _fail("min_version is above version")
    downgrade = body.get("downgrade", False)
    if not isinstance(downgrade, bool):
        raise _fail("downgrade must be true or false")
    archs = body["architectures"]
    if not isinstance(archs, list) or not archs or any(a not in ARCHITECTURES for a in archs):
        raise _fail(f"architectures must be a non-empty list of {', '.join(ARCHITECTURES)}")
    pythons = body["python"]
    if not isinstance(pythons, list) or not pythons:
        raise _fail("python must be a non-empty list")
    pythons = [_string(p, f"python[{i}]", _PYTHON) for i, p in enumerate(pythons)]
    raw_files = body["files"]
    if not isinstance(raw_files, list) or not raw_files:
        raise _fail("files must be a non-empty list")
    if len(raw_files) > MAX_FILES:
        raise RemoteDataError(reasons.LIMIT_EXCEEDED, f"release.files has {len(raw_files)} items, "
                              f"limit {MAX_FILES}")
    files, names = [], set()
    for i, raw in enumerate(raw_files):
        where = f"files[{i}]"
        raw = _fields(raw, where, ("name", "sha256", "length"))
        name = _string(raw["name"], f"{where}.name", _WHEEL)
        if name in names:
            raise _fail(f"{where}.name {name!r} is listed twice")
        names.add(name)
        length = raw["length"]
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 500 * 2**20:
            raise _fail(f"{where}.length must be an integer between 1 and {500 * 2**20}")
        files.append(ReleaseFile(name, _string(raw["sha256"], f"{where}.sha256", _SHA256), length))
    issued_at, expires = (_time(body[k], k) for k in ("issued_at", "expires"))
    if expires <= issued_at:
        raise _fail("expires must be after issued_at")
    return Release(version, min_version, downgrade, _string(body["package"], "package", _PACKAGE),
                   tuple(archs), tuple(pythons), tuple(files), issued_at, expires)


def _time(value, where: str) -> dt.datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _fail(f"{where}: {exc}") from None


def release_threshold(trust: TrustDocument) -> int:
    return max(MIN_RELEASE_SIGNATURES, trust.threshold(RELEASE_ROLE))


def role_signers(envelope, trust: TrustDocument, role: str, at: dt.datetime) -> list[str]:
    """Distinct keyids with a verifying signature by a key that is known, not revoked, holds `role` and
    is valid at `at`. Duplicates count once."""
    message = envelope.signed_bytes()
    valid: list[str] = []
    for signature in envelope.signatures:
        key = trust.keys.get(signature.keyid)
        if (key is None or signature.keyid in trust.revoked or role not in key.roles
                or signature.keyid in valid):
            continue
        if key.expires is not None and at >= key.expires:
            continue
        if key.not_before is not None and at < key.not_before:
            continue
        if ed25519.verify(key.public, signature.sig, message):
            valid.append(signature.keyid)
    return valid


def verify_release(envelope_bytes: bytes, trust: TrustDocument, now: dt.datetime) -> Release:
    """Verified Release, or RemoteDataError with a reason code (signatures first, then the body)."""
    if len(envelope_bytes) > MAX_RELEASE_BYTES:
        raise RemoteDataError(reasons.TOO_LARGE, f"release is {len(envelope_bytes)} bytes, "
                              f"limit {MAX_RELEASE_BYTES}")
    envelope = parse_envelope(envelope_bytes, max_bytes=MAX_RELEASE_BYTES)
    if envelope.payload_type != PAYLOAD_RELEASE:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"{envelope.payload_type} is not a release")
    valid = role_signers(envelope, trust, RELEASE_ROLE, now)
    needed = release_threshold(trust)
    if len(valid) < needed:
        raise RemoteDataError(reasons.THRESHOLD_NOT_MET,
                              f"release needs {needed} distinct valid {RELEASE_ROLE!r} keys, got {len(valid)}")
    release = parse_release_body(envelope.payload)
    if now >= release.expires:
        raise RemoteDataError(reasons.EXPIRED, f"release {release.version} expired at "
                              f"{release.expires.isoformat()}")
    return Release(**{**release.__dict__, "keyids": tuple(sorted(valid)), "envelope": bytes(envelope_bytes)})


def in_rollout(node_id: str, percent: int | None, salt: str) -> bool:
    """Deterministic staged rollout: the same nodes are in the first 10 % today and in the first 20 %
    tomorrow (same salt), and anyone can recompute the set from the node ids."""
    if percent is None or percent >= 100:
        return True
    bucket = int.from_bytes(hashlib.sha256(f"{salt}:{node_id}".encode()).digest()[:8], "big") % 100
    return bucket < percent


@dataclass(frozen=True)
class UpdateDecision:
    install: bool
    reason: str | None = None       # REFUSED_* when install is False
    detail: str = ""


def decide_update(release: Release, *, running: str, architecture: str, python: str,
                  known_bad: frozenset[str] = frozenset(), updatable: bool = True) -> UpdateDecision:
    """Whether this node installs `release`, given what it runs. Order: the first problem wins."""
    if not updatable:
        return UpdateDecision(False, REFUSED_NOT_UPDATABLE, "no releases/current layout on this node")
    if architecture not in release.architectures or python not in release.pythons:
        return UpdateDecision(False, REFUSED_PLATFORM, f"release {release.version} has no files for "
                              f"{architecture} / Python {python}")
    new, old = version_key(release.version), version_key(running)
    if new == old:
        return UpdateDecision(False, REFUSED_ALREADY_RUNNING, f"{running} is already running")
    if new < old and not release.downgrade:
        return UpdateDecision(False, REFUSED_ROLLBACK, f"{release.version} is older than {running} "
                              "and not a signed downgrade")
    if version_key(release.min_version) > old:
        return UpdateDecision(False, REFUSED_MIN_VERSION, f"{release.version} updates only from "
                              f"{release.min_version} or later; this node runs {running}")
    if release.version in known_bad:
        return UpdateDecision(False, REFUSED_KNOWN_BAD, f"{release.version} already failed its health "
                              "check on this node")
    return UpdateDecision(True)
