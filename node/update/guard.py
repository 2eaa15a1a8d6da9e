"""`speaker-node update-guard`: runs before every start of the daemon, as the last *committed* version.

A new version that crashes at start never runs its own rollback code, so the decision is taken by code
that is known to work: systemd runs `ROOT/committed/venv/bin/speaker-node update-guard` as
ExecStartPre, which counts the starts of an uncommitted `current` and points `current` back at the
committed version after MAX_TRIAL_STARTS. In simulation (no systemd) `--supervise -- ARGS` makes the
guard the supervisor too: it starts `current` with ARGS, restarts it when it asks for a restart
(exit 75) or crashes during a trial, and kills a trial that hangs past its deadline.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.update import state as st
from node.update.tree import ReleaseTree, UpdateStateFile

log = logging.getLogger("speaker-node.update-guard")

EXIT_RESTART = 75            # EX_TEMPFAIL: "start me again" (systemd Restart=always does; so does the guard)
SUPERVISED_ENV = "SPEAKER_UPDATE_SUPERVISED"


def before_start(tree: ReleaseTree, state_file: UpdateStateFile) -> str | None:
    """Count this start and roll back a crash loop; returns the version that will now run."""
    about_to_run = tree.current()
    if about_to_run is None:
        return None
    record = state_file.load()
    new, actions = st.step(record, st.Starting(about_to_run, counting=True))
    if new != record:
        state_file.save(new)
    for action in actions:
        if action.name == "link_previous" and action.data.get("version"):
            log.warning("update-guard: %s: %s; pointing current back at %s", new.version, new.reason,
                        action.data["version"])
            tree.point("current", action.data["version"])
    return tree.current()


def supervise(tree: ReleaseTree, state_file: UpdateStateFile, args: list[str], *,
              trial_deadline_s: float, poll_s: float = 0.5, max_restarts: int = 20) -> int:
    stopping = False
    child: subprocess.Popen | None = None

    def forward(signum, frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    env = {**os.environ, SUPERVISED_ENV: "1"}
    try:
        for _ in range(max_restarts):
            before_start(tree, state_file)
            child = subprocess.Popen([str(tree.executable("current")), *args], env=env)
            started = time.monotonic()
            while child.poll() is None:
                time.sleep(poll_s)
                record = state_file.load()
                if (record.state is st.UpdateState.TRIAL and not stopping
                        and time.monotonic() - started > trial_deadline_s):
                    _roll_back_hung(tree, state_file, record, child, trial_deadline_s)
            rc = child.returncode
            if stopping:
                return 0 if rc in (0, -signal.SIGTERM) else rc
            state = state_file.load().state
            if rc == EXIT_RESTART or (rc != 0 and state in (st.UpdateState.TRIAL, st.UpdateState.ROLLING_BACK,
                                                            st.UpdateState.SWITCHING)):
                continue
            return rc
        log.error("update-guard: %d restarts in a row; giving up", max_restarts)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _roll_back_hung(tree, state_file, record, child, deadline_s: float) -> None:
    """A version that neither commits nor crashes in time is as bad as one that crashes: roll it back now
    rather than waiting out MAX_TRIAL_STARTS more hangs."""
    log.warning("update-guard: the trial version hangs past %.0f s: killing it, rolling back", deadline_s)
    child.kill()
    child.wait()
    new, actions = st.step(record, st.Unhealthy(f"hung: no commit within {deadline_s:.0f} s of its start"))
    state_file.save(new)
    for action in actions:
        if action.name == "link_previous" and action.data.get("version"):
            tree.point("current", action.data["version"])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-node update-guard",
                                description="Before a start: count it and roll back an update that keeps failing.")
    p.add_argument("--root", required=True, help="the release tree (releases/, current, committed)")
    p.add_argument("--state", required=True, help="the update state file (STATE_DIR/update.json)")
    p.add_argument("--supervise", action="store_true", help="simulation: also start and restart the daemon")
    p.add_argument("--trial-deadline", type=float, default=360.0)
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the daemon's arguments (with --supervise)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    tree, state_file = ReleaseTree(a.root), UpdateStateFile(a.state)
    if not a.supervise:
        before_start(tree, state_file)
        return 0
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    return supervise(tree, state_file, args, trial_deadline_s=a.trial_deadline)


def exec_supervisor(tree: ReleaseTree, state_path: Path, daemon_args: list[str], trial_deadline_s: float):
    """Simulation restart: replace this process by the committed version's guard supervising `current`."""
    exe = str(tree.executable("committed"))
    os.execv(exe, [exe, "update-guard", "--root", str(tree.root), "--state", str(state_path), "--supervise",
                   "--trial-deadline", str(trial_deadline_s), "--", *daemon_args])
