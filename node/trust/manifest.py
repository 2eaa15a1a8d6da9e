"""A signed manifest beside an audio file (USB stick): a DSSE "play" command whose url is null.

The audio is checked while it streams through SHA-256 in 1 MiB chunks, and never read past the signed
length plus one byte, so a huge or endless file costs no more than the length the district signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

from node.trust import reasons
from node.trust.commands import DEFAULT_LIMITS, Limits, PlayBody
from node.trust.trustdoc import TrustDocument
from node.trust.verifier import Accepted, Rejected, reject, verify_command

CHUNK = 1024 * 1024


def check_audio(audio_path: str | os.PathLike, sha256: str, length: int,
                limits: Limits = DEFAULT_LIMITS, command_id: str | None = None) -> Rejected | None:
    """None when the file is exactly the signed bytes; otherwise the reason it is not."""
    path = Path(audio_path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return reject(reasons.AUDIO_LENGTH_MISMATCH, f"cannot read audio: {exc.strerror}",
                      command_id=command_id)
    if size > limits.audio_max_bytes:
        return reject(reasons.AUDIO_TOO_LARGE, f"{size} bytes, limit {limits.audio_max_bytes}",
                      command_id=command_id)
    digest = hashlib.sha256()
    read = 0
    try:
        with path.open("rb") as f:
            while read <= length:
                chunk = f.read(min(CHUNK, length + 1 - read))
                if not chunk:
                    break
                digest.update(chunk)
                read += len(chunk)
    except OSError as exc:
        return reject(reasons.AUDIO_LENGTH_MISMATCH, f"cannot read audio: {exc.strerror}",
                      command_id=command_id)
    if read != length:
        longer = "longer" if read > length else "shorter"
        return reject(reasons.AUDIO_LENGTH_MISMATCH, f"file is {longer} than the signed {length} bytes",
                      command_id=command_id)
    if digest.hexdigest() != sha256:
        return reject(reasons.AUDIO_HASH_MISMATCH,
                      f"sha256 {digest.hexdigest()[:12]}… != signed {sha256[:12]}…",
                      command_id=command_id)
    return None


def verify_audio_file(
    audio_path: str | os.PathLike,
    manifest_bytes: bytes,
    trust: TrustDocument,
    node_id: str,
    groups=(),
    at: dt.datetime | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    seen=None,
) -> Accepted | Rejected:
    """Accepted (with the play command) only if the manifest verifies for this node at `at` and the file
    is exactly the signed bytes. `at` None (untrusted clock) rejects clock_untrusted."""
    # No topic (a stick is not the broker: a target mismatch is reported) and no versions (a play command).
    decision = verify_command(manifest_bytes, trust=trust, node_id=node_id, groups=groups, now=at, seen=seen,
                              limits=limits)
    if isinstance(decision, Rejected):
        return decision
    command = decision.command
    if not isinstance(command.body, PlayBody):
        return reject(reasons.UNSUPPORTED_TYPE, f"a manifest must be a play command, not {command.type}",
                      command_id=command.id)
    if command.body.content.url is not None:
        return reject(reasons.MALFORMED, "body.url must be null in a manifest", command_id=command.id)
    content = command.body.content
    problem = check_audio(audio_path, content.sha256, content.length, limits, command.id)
    return problem or decision
