"""Test-only fault hook: SIGKILL this process at the Nth state write of a named kind.

The fault-injection harness (tests/storage_harness.py) sets SPEAKER_FAULT_KILL_AT="journal:3" (or a
comma list, "outbox:2,cache:1") to kill the real daemon right *before* its third journal write, so that
every state transition is interrupted once, not only random moments. Off by default: with the variable
unset `reached` is one dict lookup and returns at once. Kinds: journal, seen (accepted command ids),
document (schedule/config), kv, outbox, outbox_ack, cache.
"""

from __future__ import annotations

import os
import signal

ENV = "SPEAKER_FAULT_KILL_AT"


def _parse(spec: str) -> dict[str, int]:
    plan: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, nth = part.partition(":")
        plan[kind] = int(nth or 1)
    return plan


_plan = _parse(os.environ.get(ENV, ""))
_counts: dict[str, int] = {}


def reached(kind: str) -> None:
    """Count one write of `kind`; kill -9 ourselves when it is the planned one."""
    if not _plan or kind not in _plan:
        return
    _counts[kind] = _counts.get(kind, 0) + 1
    if _counts[kind] == _plan[kind]:
        os.write(2, f"fault hook: SIGKILL before {kind} write {_counts[kind]}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
