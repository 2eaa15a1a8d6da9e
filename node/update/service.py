"""UpdateService: drives node.update.state from the event loop. Workers only post events back.

Flow on the old version: a verified `update` command -> decide (pure) -> pending -> wait for a quiet
moment (nothing on air, no slot due soon) -> download the wheels (own worker, one file at a time, paused
while anything is on air so an emergency never shares the link) -> install beside (inline in
simulation, or by the root-only speaker-update.service on a node) -> switch `current` -> restart.
On the new version: trial -> health check within a deadline -> commit, or roll back and restart.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.errors import RemoteDataError, TransportError
from node.update import state as st
from node.update.apply import install_staged, release_of_command, stored_update
from node.update.release import (
    REFUSED_DOWNLOAD_FAILED,
    REFUSED_INSTALL_FAILED,
    Release,
    decide_update,
    in_rollout,
)
from node.update.tree import InstallError

log = logging.getLogger(__name__)

QUIET_POLL_S = 30.0
PRIVILEGED_POLL_S = 2.0
HEALTH_POLL_S = 1.0


def quiet_reason(*, on_air: bool, pending_items: int, next_slot_in: float | None,
                 quiet_before_slot: float) -> str | None:
    """Why an update must wait now (update_deferred data.reason), or None when it may start."""
    if on_air:
        return "on_air"
    if pending_items:
        return "items_queued"
    if next_slot_in is not None and next_slot_in < quiet_before_slot:
        return "slot_due"
    return None


@dataclass(frozen=True)
class _WorkerDone:
    """Posted by the download/install worker into the loop."""
    step: str                 # "download" or "install"
    error: str | None = None  # reason code when it failed
    detail: str = ""


class UpdateService:
    def __init__(self, *, node_id: str, running: str, architecture: str, python: str, tree, state_file,
                 staging_root: Path, downloader, loop, emit: Callable[[str, dict], None],
                 trust: Callable[[], object], quiet: Callable[[], str | None],
                 health: Callable[[], dict[str, bool]], restart: Callable[[], None],
                 request_install: Callable[[], None] | None = None, health_deadline_s: float = 300.0,
                 monotonic: Callable[[], float]):
        self.node_id, self.running = node_id, running
        self.architecture, self.python = architecture, python
        self.tree, self.state_file, self.staging_root = tree, state_file, Path(staging_root)
        self.downloader, self.loop, self.emit = downloader, loop, emit
        self.trust, self.quiet, self.health, self.restart = trust, quiet, health, restart
        # None: install inline (simulation); else ask the privileged installer and wait for the restart.
        self.request_install = request_install
        self.health_deadline_s = health_deadline_s
        self.monotonic = monotonic
        self.record = st.UpdateRecord()
        self._release: Release | None = None
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._deferred_reason: str | None = None
        self._trial_started: float | None = None
        loop.on(_WorkerDone, self._on_worker_done)

    # -- persisted transitions -------------------------------------------------------------------------
    def _apply(self, new: st.UpdateRecord, actions: list[st.Action]) -> None:
        self.state_file.save(new)          # written before it is entered (and before any action)
        self.record = new
        for action in actions:
            self._perform(action)
        self._report_outcomes()

    def _step(self, event) -> None:
        self._apply(*st.step(self.record, event))

    def _perform(self, action: st.Action) -> None:
        name = action.name
        privileged = self.request_install is not None
        if name == "emit":
            data = dict(action.data)
            self.emit(data.pop("type"), data)
        elif name == "download":
            self._start_worker("download")
        elif name in ("install", "link_committed", "link_previous") and privileged:
            # The daemon cannot write its own code: the root-only speaker-update.service does it (and
            # restarts the unit when the version changes); we watch the record for the outcome.
            self.request_install()
            self.loop.call_later(PRIVILEGED_POLL_S, self._poll_privileged)
        elif name == "install":
            self._start_worker("install")
        elif name == "switch":
            self.tree.point("current", action.data["version"])
            self._step(st.Switched())
        elif name == "restart":
            if not privileged:
                self.loop.call_later(0, self.restart)
        elif name == "link_committed":
            self.tree.point("committed", action.data["version"])
            self._apply(*st.committed(self.record))
        elif name == "link_previous":
            self.tree.point("current", action.data["version"])
        elif name == "prune":
            # Keep what runs and the version before it (a signed downgrade needs no download then).
            last = self.record.last or {}
            keep = {v for v in (self.running, self.record.previous, last.get("previous"), last.get("version"))
                    if v}
            if not privileged:
                self.tree.prune(keep=keep)
            # Staged wheels of kept versions stay: the next update downloads only what changed.
            for staged in self.staging_root.glob("*"):
                if staged.is_dir() and staged.name not in keep:
                    shutil.rmtree(staged, ignore_errors=True)
        else:
            raise st.TransitionError(f"unknown action {name}")

    def _poll_privileged(self) -> None:
        loaded = self.state_file.load()
        if loaded != self.record:
            self.record = loaded
            self._report_outcomes()
        if self.record.state in (st.UpdateState.INSTALLING, st.UpdateState.COMMITTING,
                                 st.UpdateState.ROLLING_BACK):
            self.loop.call_later(PRIVILEGED_POLL_S, self._poll_privileged)

    def _report_outcomes(self) -> None:
        outcomes = self.record.outcomes
        if not outcomes:
            return
        for outcome in outcomes:
            kind = {"committed": "update_committed", "rolled_back": "update_rolled_back",
                    "installed": "update_installed"}.get(outcome["outcome"], "update_refused")
            self.emit(kind, {"version": outcome["version"], "previous": outcome["previous"],
                             "reason": outcome["reason"]})
        new, _ = st.step(self.record, st.Reported(len(outcomes)))
        self.state_file.save(new)
        self.record = new

    # -- start and stop ---------------------------------------------------------------------------------
    def start(self) -> None:
        record = self.state_file.load()
        self.record = record
        if record.state in (st.UpdateState.PENDING, st.UpdateState.DOWNLOADING, st.UpdateState.INSTALLING):
            if not self._load_release():      # the stored command is verified again before it acts
                return
        new, actions = st.step(record, st.Starting(self.running))
        self._apply(new, actions)
        if self.record.state is st.UpdateState.TRIAL:
            self._trial_started = self.monotonic()
            self.loop.call_later(HEALTH_POLL_S, self._health_tick)
        elif self.record.state is st.UpdateState.PENDING:
            self.loop.call_later(0, self._quiet_tick)

    def stop(self) -> None:
        self._cancel.set()
        if self._worker is not None:
            self._worker.join(timeout=2.0)

    def status(self) -> dict:
        return self.record.status(self.running)

    # -- the old version: command -> pending -> download -> install -> switch ----------------------------
    def on_command(self, command, envelope: bytes) -> None:
        """A verified update command (node.trust.verifier already checked it and its release)."""
        body = command.body
        if not in_rollout(self.node_id, body.rollout_percent, body.rollout_salt or ""):
            log.info("update %s: this node is not in the %s %% rollout", command.id, body.rollout_percent)
            return
        try:
            release = release_of_command(envelope.decode("utf-8"), self.trust())
        except RemoteDataError as exc:
            self.emit("update_refused", {"version": None, "reason": exc.reason, "detail": exc.detail})
            return
        decision = decide_update(release, running=self.running, architecture=self.architecture,
                                 python=self.python, known_bad=frozenset(self.record.known_bad),
                                 updatable=self.tree.updatable())
        if not decision.install:
            self.emit("update_refused", {"version": release.version, "reason": decision.reason,
                                         "detail": decision.detail})
            return
        if self.record.state is not st.UpdateState.IDLE:
            self.emit("update_refused", {"version": release.version, "reason": "busy",
                                         "detail": f"update to {self.record.version} is {self.record.state.value}"})
            return
        self._release = release
        self._files_url = body.files_url
        self._step(st.Accepted(release.version, self.running, envelope.decode("utf-8")))
        self._quiet_tick()

    def _load_release(self) -> bool:
        """After a restart in pending/downloading/installing: the stored command is verified again."""
        try:
            command, self._release = stored_update(self.record.command or "", self.trust())
            self._files_url = command.body.files_url
            return True
        except (RemoteDataError, ValueError, AttributeError) as exc:
            reason = getattr(exc, "reason", "release_invalid")
            self._step(st.Failed(reason))
            return False

    def _quiet_tick(self) -> None:
        if self.record.state is not st.UpdateState.PENDING:
            return
        why = self.quiet()
        if why is None:
            self._deferred_reason = None
            self._step(st.Go())
            return
        if why != self._deferred_reason:       # say so once per reason, not every poll
            self._deferred_reason = why
            self.emit("update_deferred", {"version": self.record.version, "reason": why})
        self.loop.call_later(QUIET_POLL_S, self._quiet_tick)

    def _staging(self) -> Path:
        return self.staging_root / self.record.version

    def _start_worker(self, step: str) -> None:
        release, staging = self._release, self._staging()
        target = self._download if step == "download" else self._install

        def run():
            try:
                target(release, staging)
                self.loop.post(_WorkerDone(step))
            except RemoteDataError as exc:
                self.loop.post(_WorkerDone(step, exc.reason, exc.detail))
            except (TransportError, OSError) as exc:
                self.loop.post(_WorkerDone(step, REFUSED_DOWNLOAD_FAILED, str(exc)[:200]))
            except InstallError as exc:
                self.loop.post(_WorkerDone(step, REFUSED_INSTALL_FAILED, str(exc)[:200]))

        self._worker = threading.Thread(target=run, name=f"update-{step}", daemon=True)
        self._worker.start()

    def _download(self, release: Release, staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        base = self._files_url.rstrip("/") + "/"
        for f in release.files:
            final = staging / f.name
            if final.is_file() and final.stat().st_size == f.length:
                continue                   # hashed again by check_staged before install
            if self._reuse_staged(f, final):
                continue                   # an unchanged dependency: no byte over 4G for it
            self.downloader.fetch(base + f.name, staging / (f.name + ".partial"), f.sha256, f.length,
                                  cancel=self._cancel)
            (staging / (f.name + ".partial")).replace(final)

    def _reuse_staged(self, f, final: Path) -> bool:
        """The same wheel (name and SHA-256) from an earlier update's staging directory."""
        from node.content.download import hash_file

        for earlier in sorted(self.staging_root.glob(f"*/{f.name}")):
            if earlier.parent == final.parent or earlier.stat().st_size != f.length:
                continue
            if hash_file(earlier) == (f.sha256, f.length):
                tmp = final.with_name(final.name + ".partial")
                shutil.copyfile(earlier, tmp)
                tmp.replace(final)
                return True
        return False

    def _install(self, release: Release, staging: Path) -> None:
        install_staged(release, staging, self.tree)

    def _on_worker_done(self, ev: _WorkerDone) -> None:
        if ev.error:
            log.warning("update %s: %s failed: %s %s", self.record.version, ev.step, ev.error, ev.detail)
            self._step(st.Failed(ev.error))
            return
        self._step(st.Downloaded() if ev.step == "download" else st.Installed())

    # -- the new version: trial -> commit or roll back ---------------------------------------------------
    def _health_tick(self) -> None:
        if self.record.state is not st.UpdateState.TRIAL:
            return
        checks = self.health()
        if checks and all(checks.values()):
            log.info("update %s: healthy (%s), committing", self.record.version, ", ".join(checks))
            self._step(st.Healthy())
            return
        if self.monotonic() - self._trial_started >= self.health_deadline_s:
            failing = ", ".join(k for k, ok in checks.items() if not ok) or "no checks"
            self._step(st.Unhealthy(f"health check not passed within {self.health_deadline_s:.0f} s: "
                                    f"{failing}"))
            return
        self.loop.call_later(HEALTH_POLL_S, self._health_tick)
