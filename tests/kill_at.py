"""`python tests/kill_at.py run --config FILE`: the real daemon (node.daemon.main, unchanged), killed by
SIGKILL at one chosen storage transition of the on-air journal or the outbox. No hook in the product:
this wrapper replaces two methods before the daemon starts.

SPEAKER_KILL_AT = "TRANSITION:before|after", TRANSITION one of
  warming   the journal row of an item going on air (written before WARMING is entered)
  sounding  the journal row written when the player is first heard (SOUNDING)
  ending    the one transaction that forgets the command, clears `onair` and keeps `rec:<id>` (ENDING)
  record    the play record's insert into the outbox
  cleared   the removal of `rec:<id>` once the record is in the outbox
"""

from __future__ import annotations

import os
import signal
import sys

from node.adapters.store import StateStore
from node.reporting.outbox import Outbox

TRANSITION, _, WHEN = os.environ["SPEAKER_KILL_AT"].partition(":")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _journal_transition(changes: dict) -> str | None:
    onair = changes.get("onair")
    if any(k.startswith("rec:") and v is not None for k, v in changes.items()) and "onair" in changes \
            and onair is None:
        return "ending"
    if any(k.startswith("rec:") and v is None for k, v in changes.items()):
        return "cleared"
    if onair and onair.get("state") == "warming":
        return "warming"
    if onair and onair.get("state") == "sounding":
        return "sounding"  # the first one is written when the player is first heard
    return None


def _wrap(owner, name, which):
    real = getattr(owner, name)

    def write(self, *args, **kw):
        hit = which(*args) == TRANSITION
        if hit and WHEN == "before":
            _die()
        result = real(self, *args, **kw)
        if hit and WHEN == "after":
            _die()
        return result
    setattr(owner, name, write)


_wrap(StateStore, "journal_apply", _journal_transition)
_wrap(Outbox, "add", lambda kind, payload: "record" if kind == "play" else None)

if __name__ == "__main__":
    from node.daemon import main

    raise SystemExit(main(sys.argv[2:] if sys.argv[1:2] == ["run"] else sys.argv[1:]))
