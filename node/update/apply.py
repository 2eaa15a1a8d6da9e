"""Installing a downloaded release: the same code whether the daemon does it (simulation) or the root-only
`speaker-update.service` does it on a node (`speaker-node update-apply`, started by a path unit), so the
network-facing daemon never needs write access to its own code.

Everything on disk is checked again before it is installed: the release's signatures against the
node's trust document and every staged wheel against its signed SHA-256 and length.
"""

from __future__ import annotations

from pathlib import Path

from node.content.download import hash_file
from node.errors import RemoteDataError
from node.trust import reasons
from node.trust.commands import parse_command
from node.trust.envelope import parse_envelope
from node.trust.trustdoc import TrustDocument
from node.update.release import (
    REFUSED_FILE_MISMATCH,
    REFUSED_FILE_MISSING,
    Release,
    parse_release_body,
    verify_release,
)
from node.update.tree import ReleaseTree


def release_of_command(command_envelope: str, trust: TrustDocument) -> Release:
    """The release embedded in a stored update command, verified again - at its own issue time: the
    one-shot applier has no trusted clock; the daemon checked freshness when it accepted the command."""
    command = parse_command(parse_envelope(command_envelope.encode("utf-8")).payload)
    if command.type != "update":
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"stored command is {command.type}, not update")
    issued = parse_release_body(parse_envelope(command.body.release).payload).issued_at
    return verify_release(command.body.release, trust, issued)


def check_staged(release: Release, staging: Path) -> None:
    for f in release.files:
        path = staging / f.name
        if not path.is_file():
            raise RemoteDataError(REFUSED_FILE_MISSING, f"{f.name} is not staged")
        sha256, length = hash_file(path)
        if length != f.length or sha256 != f.sha256:
            raise RemoteDataError(REFUSED_FILE_MISMATCH, f"{f.name}: {length} bytes, sha256 {sha256[:12]}")


def install_staged(release: Release, staging: Path, tree: ReleaseTree) -> None:
    check_staged(release, staging)
    tree.install(release.version, staging, release.package)
