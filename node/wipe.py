"""`speaker-node wipe`: decommission a node: erase its key, certificate, trust file, caches and records.

The technician types the node id to confirm (or passes --yes). Private keys are overwritten before
they are unlinked; on flash media that is best effort (wear levelling may keep old blocks), which is
why the district must also revoke the certificate - the message at the end says how.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from node.errors import ConfigError
from node.messages import msg

DEFAULT_CONFIG = "/etc/speaker-node/node.toml"


@dataclass(frozen=True)
class WipeTargets:
    node_id: str
    secrets: list[Path]  # overwritten, then unlinked
    files: list[Path]  # unlinked
    trees: list[Path]  # removed recursively


def targets_from_config(path: Path) -> WipeTargets:
    try:
        from node.config import load_config  # the daemon's own reader, once it exists
    except ImportError:
        load_config = None
    if load_config is not None:
        cfg = load_config(path)
        storage = cfg.storage
        state_dir = Path(storage.state_dir)
        cache_dir = Path(getattr(storage, "cache_dir", None) or state_dir / "cache")
        return WipeTargets(
            cfg.node.id,
            [Path(cfg.broker.key_file)],
            [Path(cfg.broker.cert_file), Path(cfg.trust.file)],
            [cache_dir, state_dir],
        )
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        state_dir = Path(data.get("storage", {}).get("state_dir", "/var/lib/speaker-node"))
        cache_dir = Path(data.get("storage", {}).get("cache_dir") or state_dir / "cache")
        broker, trust = data["broker"], data["trust"]
        return WipeTargets(
            data["node"]["id"],
            [Path(broker["key_file"])],
            [Path(broker["cert_file"]), Path(trust["file"])],
            [cache_dir, state_dir],
        )
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"cannot read {path}: {exc}"]) from exc
    except KeyError as exc:
        raise ConfigError([f"{path}: missing key {exc}"]) from exc


def overwrite_and_unlink(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()


def wipe(targets: WipeTargets) -> list[Path]:
    """Erase everything listed; returns what was actually there. Keeps going past one failure."""
    erased, failures = [], []
    for path in targets.secrets + targets.files:
        if not path.is_file():
            continue
        try:
            overwrite_and_unlink(path) if path in targets.secrets else path.unlink()
            erased.append(path)
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    for tree in targets.trees:
        if not tree.exists():
            continue
        # a secret may also sit in the state dir (e.g. cached keys): overwrite regular files first
        for sub in sorted(tree.rglob("*")):
            if sub.is_file() and not sub.is_symlink():
                try:
                    overwrite_and_unlink(sub)
                except OSError as exc:
                    failures.append(f"{sub}: {exc}")
        shutil.rmtree(tree, ignore_errors=True)
        erased.append(tree)
    if failures:
        raise OSError("could not erase: " + "; ".join(failures))
    return erased


def main(argv: list[str]) -> int:
    prog = "speaker-node wipe"
    parser = argparse.ArgumentParser(
        prog=prog, description="Decommission: erase keys, trust, caches, records."
    )
    parser.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    parser.add_argument("--yes", action="store_true", help="do not ask for the node id")
    parser.add_argument(
        "--stop-service", action="store_true", help="first run 'systemctl disable --now speaker-node.service'"
    )
    args = parser.parse_args(argv)
    try:
        targets = targets_from_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    if not args.yes:
        try:
            answer = input(msg("wipe_prompt", node_id=targets.node_id))
        except EOFError:
            answer = ""
        if answer.strip() != targets.node_id:
            print(msg("wipe_mismatch"), file=sys.stderr)
            return 1
    if args.stop_service:
        subprocess.run(["systemctl", "disable", "--now", "speaker-node.service"], check=False)
    try:
        erased = wipe(targets)
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for path in erased:
        print(msg("wipe_erased", path=path))
    print(msg("wipe_done", node_id=targets.node_id) if erased else msg("wipe_nothing"))
    return 0
