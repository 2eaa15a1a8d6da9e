"""The software-update state machine: named states, persisted before they are entered, one resume table.

Mender's model (STYLE.md point 6). Pure: `step(record, event)` returns the next record and the actions
the caller must take, in order. The caller writes the record (atomically, fsync'd) BEFORE it performs
the actions, so a power cut at any instant leaves a state whose row in RESUME says what to do next.

    idle --accepted--> pending --go--> downloading --downloaded--> installing --installed--> switching
    switching --switched--> trial --healthy--> committing --committed--> idle (outcome committed)
    trial --unhealthy | deadline | too many starts--> rolling_back --rolled_back--> idle (outcome
    rolled_back; the version is remembered as known bad)
    pending/downloading/installing --failed--> idle (outcome failed; the running version never changed)

Who runs which state: the daemon (old version) runs pending..switching; the guard, which is always
the last *committed* version's code, counts the starts of an uncommitted version and rolls back a crash
loop; the new version runs its own health check in `trial` and commits itself.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, replace

MAX_TRIAL_STARTS = 3          # a version that starts this often without committing is rolled back


class UpdateState(str, enum.Enum):
    IDLE = "idle"
    PENDING = "pending"              # accepted, waiting for a quiet moment (nothing on air, no slot due)
    DOWNLOADING = "downloading"
    INSTALLING = "installing"        # into releases/VERSION beside the running one
    SWITCHING = "switching"          # the `current` link is being renamed onto the new version
    TRIAL = "trial"                  # the new version runs, uncommitted, until its health check passes
    COMMITTING = "committing"
    ROLLING_BACK = "rolling_back"


@dataclass(frozen=True)
class UpdateRecord:
    state: UpdateState = UpdateState.IDLE
    version: str | None = None           # the version being installed
    previous: str | None = None          # the version it replaces (the rollback target)
    command: str | None = None           # the update command envelope, verified again on resume
    starts: int = 0                      # starts of `version` while in trial
    reason: str | None = None            # why the last transition happened (for events and status)
    known_bad: tuple[str, ...] = ()      # versions that failed their health check here: never again
    outcomes: tuple[dict, ...] = ()      # finished updates not yet reported to the district
    last: dict | None = None             # the last finished update (kept for the status)

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> UpdateRecord:
        data = json.loads(text)
        data["state"] = UpdateState(data["state"])
        data["known_bad"] = tuple(data.get("known_bad", ()))
        data["outcomes"] = tuple(data.get("outcomes", ()))
        return cls(**data)

    def status(self, running: str) -> dict:
        """The `sw` member of the heartbeat: running version, the one before it, the update state."""
        previous = self.previous if self.state is not UpdateState.IDLE else (self.last or {}).get("previous")
        last = self.last or {}
        return {"ver": running, "prev": previous, "state": self.state.value,
                "target": self.version if self.state is not UpdateState.IDLE else last.get("version"),
                "result": None if self.state is not UpdateState.IDLE else last.get("outcome"),
                "reason": self.reason}


# -- events ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    version: str
    previous: str
    command: str


@dataclass(frozen=True)
class Go:                 # nothing on air, no slot due: start downloading
    pass


@dataclass(frozen=True)
class Downloaded:
    pass


@dataclass(frozen=True)
class Installed:
    pass


@dataclass(frozen=True)
class Switched:
    pass


@dataclass(frozen=True)
class Starting:
    """A process is about to run `running`. The guard (committed code, before every start) counts the
    starts of an uncommitted version; the daemon itself only resumes (counting False)."""
    running: str
    counting: bool = False


@dataclass(frozen=True)
class Healthy:
    pass


@dataclass(frozen=True)
class Unhealthy:
    reason: str


@dataclass(frozen=True)
class Failed:             # a step before the switch failed; the running version is untouched
    reason: str


@dataclass(frozen=True)
class Reported:           # the outcomes were handed to the outbox
    count: int


# -- actions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    name: str             # emit, download, install, switch, restart, link_committed, link_previous, prune
    data: dict = field(default_factory=dict)


class TransitionError(Exception):
    """An event that makes no sense in the current state: a bug in the caller, never remote data."""


def _emit(kind: str, record: UpdateRecord, **extra) -> Action:
    return Action("emit", {"type": kind, "version": record.version, "previous": record.previous, **extra})


def _finish(record: UpdateRecord, outcome: str, reason: str | None, *, bad: bool = False) -> UpdateRecord:
    done = {"version": record.version, "previous": record.previous, "outcome": outcome, "reason": reason}
    known_bad = tuple(sorted(set(record.known_bad) | {record.version})) if bad else record.known_bad
    return UpdateRecord(UpdateState.IDLE, reason=reason, known_bad=known_bad,
                        outcomes=record.outcomes + (done,), last=done)


def step(record: UpdateRecord, event) -> tuple[UpdateRecord, list[Action]]:
    s = record.state
    if isinstance(event, Reported):
        return replace(record, outcomes=record.outcomes[event.count:]), []
    if isinstance(event, Accepted):
        if s is not UpdateState.IDLE:
            raise TransitionError(f"update accepted while {s.value}")
        new = UpdateRecord(UpdateState.PENDING, event.version, event.previous, event.command,
                           known_bad=record.known_bad, outcomes=record.outcomes, last=record.last)
        return new, []
    if isinstance(event, Go) and s is UpdateState.PENDING:
        new = replace(record, state=UpdateState.DOWNLOADING)
        return new, [_emit("update_started", new), Action("download")]
    if isinstance(event, Downloaded) and s is UpdateState.DOWNLOADING:
        return replace(record, state=UpdateState.INSTALLING), [Action("install")]
    if isinstance(event, Installed) and s is UpdateState.INSTALLING:
        new = replace(record, state=UpdateState.SWITCHING)
        return new, [_emit("update_installed", new), Action("switch", {"version": record.version})]
    if isinstance(event, Switched) and s is UpdateState.SWITCHING:
        return replace(record, state=UpdateState.TRIAL, starts=0), [Action("restart")]
    if isinstance(event, Failed) and s in (UpdateState.PENDING, UpdateState.DOWNLOADING,
                                           UpdateState.INSTALLING):
        return _finish(record, "failed", event.reason), [Action("prune")]
    if isinstance(event, Starting):
        return _on_start(record, event.running, event.counting)
    if isinstance(event, Healthy) and s is UpdateState.TRIAL:
        new = replace(record, state=UpdateState.COMMITTING)
        return new, [Action("link_committed", {"version": record.version})]
    if isinstance(event, Unhealthy) and s is UpdateState.TRIAL:
        new = replace(record, state=UpdateState.ROLLING_BACK, reason=event.reason)
        return new, [Action("link_previous", {"version": record.previous}), Action("restart")]
    raise TransitionError(f"{type(event).__name__} in state {s.value}")


def committed(record: UpdateRecord) -> tuple[UpdateRecord, list[Action]]:
    """After the `committed` link points at the new version (state committing)."""
    if record.state is not UpdateState.COMMITTING:
        raise TransitionError(f"commit finished while {record.state.value}")
    return _finish(record, "committed", None), [Action("prune")]


def _on_start(record: UpdateRecord, running: str, counting: bool) -> tuple[UpdateRecord, list[Action]]:
    """The resume table: what a (re)start does in each persisted state. See RESUME for the prose."""
    s = record.state
    if s in (UpdateState.IDLE, UpdateState.PENDING):
        return record, []
    if s is UpdateState.DOWNLOADING:
        return record, [Action("download")]
    if s is UpdateState.INSTALLING:
        return record, [Action("install")]           # the installer wipes a half-made releases/VERSION
    if s is UpdateState.SWITCHING:
        if running == record.version:                 # the rename happened; the record write did not
            return replace(record, state=UpdateState.TRIAL, starts=int(counting)), []
        return record, [Action("switch", {"version": record.version})]
    if s is UpdateState.TRIAL:
        if running != record.version:                 # someone put the old version back already
            return _finish(record, "rolled_back", record.reason or "restored", bad=True), [Action("prune")]
        if not counting:
            return record, []
        starts = record.starts + 1
        if starts > MAX_TRIAL_STARTS:
            reason = f"started {record.starts} times without passing its health check"
            new = replace(record, state=UpdateState.ROLLING_BACK, starts=starts, reason=reason)
            return new, [Action("link_previous", {"version": record.previous}), Action("restart")]
        return replace(record, starts=starts), []
    if s is UpdateState.COMMITTING:
        return record, [Action("link_committed", {"version": record.version})]
    if s is UpdateState.ROLLING_BACK:
        if running == record.previous:
            return _finish(record, "rolled_back", record.reason, bad=True), [Action("prune")]
        return record, [Action("link_previous", {"version": record.previous}), Action("restart")]
    raise TransitionError(f"unknown state {s}")


# One row per persisted state: what a start (after a crash, a power cut or a planned restart) does.
RESUME = {
    UpdateState.IDLE: "nothing",
    UpdateState.PENDING: "keep waiting for a quiet moment (the command is verified again first)",
    UpdateState.DOWNLOADING: "resume the download (partial files continue; every file is hashed again)",
    UpdateState.INSTALLING: "wipe releases/VERSION if it has no .complete marker, install again",
    UpdateState.SWITCHING: "if `current` already names VERSION: trial (1st start); else rename again",
    UpdateState.TRIAL: "count this start; over MAX_TRIAL_STARTS: roll back; else run the health check",
    UpdateState.COMMITTING: "point `committed` at VERSION again (idempotent), then idle",
    UpdateState.ROLLING_BACK: "if running PREVIOUS: idle, VERSION known bad; else point `current` back",
}
