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
from node.trust.envelope import PAYLOAD_COMMAND, parse_envelope
from node.trust.trustdoc import TrustDocument
from node.update.release import (
    REFUSED_FILE_MISMATCH,
    REFUSED_FILE_MISSING,
    RELEASE_ROLE,
    Release,
    parse_release_body,
    release_threshold,
    role_signers,
    verify_release,
)
from node.update.tree import ReleaseTree


def release_of_command(command_envelope: str, trust: TrustDocument) -> Release:
    """The release embedded in a stored update command, verified again (see stored_update)."""
    return stored_update(command_envelope, trust)[1]


def stored_update(command_envelope: str, trust: TrustDocument):
    """(command, release) of a stored update command, both verified again - at the command's own issue
    time: the one-shot applier has no trusted clock; the daemon checked freshness when it accepted it."""
    envelope = parse_envelope(command_envelope.encode("utf-8"))
    if envelope.payload_type != PAYLOAD_COMMAND:
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"stored {envelope.payload_type} is not a command")
    command = parse_command(envelope.payload)
    # The stored command is verified again, not trusted because it was once accepted (a state file is
    # only as safe as the SD card it is on).
    needed = release_threshold(trust)
    if len(role_signers(envelope, trust, RELEASE_ROLE, command.issued_at)) < needed:
        raise RemoteDataError(reasons.THRESHOLD_NOT_MET, f"stored update command: fewer than {needed} "
                              f"valid {RELEASE_ROLE!r} signatures")
    if command.type != "update":
        raise RemoteDataError(reasons.UNSUPPORTED_TYPE, f"stored command is {command.type}, not update")
    issued = parse_release_body(parse_envelope(command.body.release).payload).issued_at
    return command, verify_release(command.body.release, trust, issued)


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


# -- the privileged side on a node: `speaker-node update-apply` (speaker-update.service, root) --------
def apply_pending(record, *, tree, state_file, trust, staging_root: Path, restart_unit) -> "object":
    """Perform what the persisted state asks of root, saving each state before its actions.

    INSTALLING: check the staged wheels, install beside, rename `current`, enter trial, restart the unit.
    COMMITTING: rename `committed` onto the version that passed its health check.
    ROLLING_BACK: rename `current` back onto the previous version and restart the unit.
    Anything else: nothing to do (a stray trigger). Events the daemon would have emitted are queued in the
    record's outcomes (`installed`), and reported by the daemon.
    """
    from dataclasses import replace

    from node.update import state as st

    def save(new):
        state_file.save(new)
        return new

    if record.state is st.UpdateState.INSTALLING:
        release = release_of_command(record.command or "", trust)
        install_staged(release, staging_root / record.version, tree)
        record, _ = st.step(record, st.Installed())
        record = save(replace(record, outcomes=record.outcomes + (
            {"version": record.version, "previous": record.previous, "outcome": "installed", "reason": None},)))
    if record.state is st.UpdateState.SWITCHING:
        tree.point("current", record.version)
        record = save(st.step(record, st.Switched())[0])
        restart_unit()
        return record
    if record.state is st.UpdateState.COMMITTING:
        tree.point("committed", record.version)
        record, _ = st.committed(record)
        record = save(record)
        return record
    if record.state is st.UpdateState.ROLLING_BACK:
        if tree.current() != record.previous:
            tree.point("current", record.previous)
        restart_unit()
    return record


def main(argv: list[str]) -> int:
    """`speaker-node update-apply --config FILE`: run by the root-only speaker-update.service."""
    import argparse
    import subprocess
    import sys

    from node.config import DEFAULT_PATH, load_config
    from node.errors import ConfigError
    from node.update.tree import InstallError, UpdateStateFile
    from node.update.wire import release_root

    p = argparse.ArgumentParser(prog="speaker-node update-apply",
                                description="Install, switch, commit or roll back as the update state asks (root).")
    p.add_argument("--config", default=DEFAULT_PATH)
    p.add_argument("--unit", default="speaker-node.service")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
    except ConfigError as exc:
        print(f"update-apply: {exc}", file=sys.stderr)
        return 78
    root = release_root(cfg) or Path("/opt/speaker-node")
    state_dir = Path(cfg.storage.state_dir)
    state_file = UpdateStateFile(state_dir / "update.json")
    from node.trust.trustdoc import load_trust_file
    try:
        trust = _current_trust(cfg, load_trust_file)
        record = apply_pending(state_file.load(), tree=ReleaseTree(root), state_file=state_file, trust=trust,
                               staging_root=state_dir / "update-staging",
                               restart_unit=lambda: subprocess.run(["systemctl", "restart", "--no-block", a.unit],
                                                                   check=False))
    except (RemoteDataError, InstallError, OSError) as exc:
        from node.update import state as st
        record = state_file.load()
        if record.state is st.UpdateState.INSTALLING:
            reason = getattr(exc, "reason", "install_failed")
            state_file.save(st.step(record, st.Failed(reason))[0])
        print(f"update-apply: {exc}", file=sys.stderr)
        return 1
    print(f"update-apply: {record.state.value} {record.version or ''}", file=sys.stderr)
    return 0


def _current_trust(cfg, load_trust_file) -> TrustDocument:
    """The trust document in force: the provisioned file plus the accepted updates in the state store."""
    from node.adapters.store import StateStore
    from node.service.intake import TrustKeeper

    store = StateStore(Path(cfg.storage.state_dir) / "state.db")
    try:
        return TrustKeeper(Path(cfg.trust.file).read_bytes(), store).document
    finally:
        store.close()
