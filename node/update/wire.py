"""Building the UpdateService from the node's configuration and parts (called by node.wiring)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

from node import __version__
from node.update.guard import EXIT_RESTART, SUPERVISED_ENV, exec_supervisor
from node.update.service import UpdateService, quiet_reason
from node.update.tree import ReleaseTree, UpdateStateFile

MB = 1024 * 1024
_MACHINE_ARCH = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "armhf", "armv6l": "armhf",
                 "x86_64": "x86_64", "amd64": "x86_64"}


def release_root(cfg) -> Path | None:
    """update.root, or the tree this daemon runs from: sys.prefix is ROOT/releases/VERSION/venv."""
    if cfg.update.root:
        return Path(cfg.update.root)
    prefix = Path(sys.prefix)
    if prefix.name == "venv" and prefix.parent.parent.name == "releases":
        return prefix.parent.parent.parent
    return None


def architecture() -> str:
    return _MACHINE_ARCH.get(platform.machine(), platform.machine())


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class Restarter:
    """How the daemon gets replaced by the version `current` names: systemd restarts a daemon that exits
    75; in simulation the guard supervisor does (exec'd into on the first update)."""

    def __init__(self, cfg, tree: ReleaseTree, state_path: Path, loop, argv: list[str] | None = None):
        self.cfg, self.tree, self.state_path, self.loop = cfg, tree, state_path, loop
        self.argv = list(argv if argv is not None else sys.argv[1:])
        self.requested = False

    def __call__(self) -> None:
        self.requested = True
        self.loop.stop()

    def after_shutdown(self) -> int | None:
        """Called by the daemon once everything is stopped: the exit code, or never returns (exec)."""
        if not self.requested:
            return None
        if self.cfg.update.restart == "exec" and not os.environ.get(SUPERVISED_ENV):
            exec_supervisor(self.tree, self.state_path, self.argv, self.cfg.update.health_deadline + 60)
        return EXIT_RESTART


def build_update_service(cfg, *, loop, clock, emit, trust_keeper, onair, now_trusted, health_checks,
                         downloader_factory, request_install=None):
    root = release_root(cfg)
    tree = ReleaseTree(root if root is not None else Path(cfg.storage.state_dir) / "no-release-tree")
    state_dir = Path(cfg.storage.state_dir)
    state_path = state_dir / "update.json"
    restarter = Restarter(cfg, tree, state_path, loop)

    def quiet():
        now = now_trusted()
        next_in = None
        if now is not None and getattr(onair, "schedule", None):
            from node.playback import schedule as sched
            horizon = dt.timedelta(seconds=cfg.update.quiet_before_slot)
            upcoming = sched.expand(onair.schedule, cfg.node.timezone, now - dt.timedelta(hours=1),
                                    now + horizon)
            starts = [(o.starts_at - now).total_seconds() for o in upcoming if o.ends_at > now]
            next_in = max(0.0, min(starts)) if starts else None
        pending = len(getattr(onair.arbiter, "queued", ())) + len(getattr(onair, "held", {})) + \
            sum(len(v) for v in getattr(onair, "waiting", {}).values())
        return quiet_reason(on_air=getattr(onair, "on", None) is not None, pending_items=pending,
                            next_slot_in=next_in, quiet_before_slot=cfg.update.quiet_before_slot)

    service = UpdateService(
        node_id=cfg.node.id, running=__version__, architecture=architecture(), python=python_version(),
        tree=tree, state_file=UpdateStateFile(state_path), staging_root=state_dir / "update-staging",
        downloader=downloader_factory(100 * MB), loop=loop, emit=emit,
        trust=lambda: trust_keeper.document, quiet=quiet, health=health_checks, restart=restarter,
        request_install=request_install if cfg.update.install == "privileged" else None,
        health_deadline_s=cfg.update.health_deadline, monotonic=clock.monotonic)
    return service, restarter
