"""Test-only fault hook: SIGKILL this process right before or right after a chosen state write.

The one kill hook of the tests (docs/storage.md "Proving it"): tests/storage_harness.py and
tests/test_onair_kill9.py start the real daemon with SPEAKER_FAULT_KILL_AT set, so that every state
transition can be interrupted once, not only random moments. Off by default: with the variable unset
(production) `reached`/`passed` return after one truth test, and nothing else here runs.

    SPEAKER_FAULT_KILL_AT = POINT[:N][:before|after] [, ...]

POINT is a write kind - kv, seen (accepted command ids), journal, document (schedule/config), outbox,
outbox_sent, outbox_ack, cache, copy (the safe copy) - or a kind with a label, KIND.LABEL:
  journal.warming   the journal row of an item going on air (written before WARMING is entered)
  journal.sounding  the journal row written when the player is first heard (SOUNDING)
  journal.ending    the one transaction that forgets the command, clears `onair` and keeps `rec:<id>`
  journal.cleared   the removal of `rec:<id>` once the record is in the outbox
  outbox.play, outbox.event   a record's insert into the outbox
  update.STATE      the update record entering STATE (node/update/state.py) is on disk (use :after)
N (default 1): the N-th write of that point; `before` (default) or `after` it has been committed.
Examples: "journal:3" (before the third journal write), "journal.ending:after", "outbox:2,cache:1".

SPEAKER_FAULT_MARKER = PATH makes the kill happen once across restarts: the hook creates PATH just
before it kills, and does nothing while PATH exists (a supervisor that restarts the daemon with the same
environment, as the update guard does, would otherwise see it killed at the same point again).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENV = "SPEAKER_FAULT_KILL_AT"
MARKER_ENV = "SPEAKER_FAULT_MARKER"


@dataclass
class _Entry:
    kind: str
    label: str | None
    nth: int
    when: str
    count: int = 0


def _parse(spec: str) -> list[_Entry]:
    entries = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, *rest = part.split(":")
        when = rest.pop() if rest and rest[-1] in ("before", "after") else "before"
        if len(rest) > 1 or (rest and not rest[0].isdigit()):
            raise ValueError(f"{ENV}: {part!r} is not POINT[:N][:before|after]")
        kind, _, label = point.partition(".")
        entries.append(_Entry(kind, label or None, int(rest[0]) if rest else 1, when))
    return entries


def journal_point(changes: dict) -> str | None:
    """Name a journal transaction after the on-air transition it records (docs/playback.md)."""
    onair = changes.get("onair")
    records = {k: v for k, v in changes.items() if k.startswith("rec:")}
    if "onair" in changes and onair is None and any(v is not None for v in records.values()):
        return "ending"
    if any(v is None for v in records.values()):
        return "cleared"
    if onair and onair.get("state") in ("warming", "sounding"):
        return onair["state"]
    return None


_LABELS = {"journal": journal_point}
_plan = _parse(os.environ.get(ENV, ""))


def reached(kind: str, detail=None) -> None:
    """Just before a write of `kind` (detail: what the label is read from, e.g. the journal changes)."""
    if _plan:
        _count(kind, detail, "before")


def passed(kind: str, detail=None) -> None:
    """Just after a write of `kind` was committed."""
    if _plan:
        _count(kind, detail, "after")


def _count(kind: str, detail, when: str) -> None:
    label = None
    for entry in _plan:
        if entry.kind != kind or entry.when != when:
            continue
        if entry.label is not None:
            if label is None:
                label = _LABELS.get(kind, lambda d: d)(detail)
            if entry.label != label:
                continue
        entry.count += 1
        if entry.count == entry.nth:
            _kill(when, kind if entry.label is None else f"{kind}.{entry.label}", entry.count)


def _kill(when: str, point: str, count: int) -> None:
    marker = os.environ.get(MARKER_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # it happened once already
        os.write(fd, f"{os.getpid()} {when} {point}\n".encode())
        os.fsync(fd)
        os.close(fd)
    os.write(2, f"fault hook: SIGKILL {when} {point} write {count}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
