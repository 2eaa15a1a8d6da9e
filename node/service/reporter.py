"""Everything the node reports (events, play records) enters the outbox here.

A full or failing SD card must not stop playback (docs/playback.md, "Storage faults while running"):
what cannot be stored is kept in memory (bounded, oldest events given up first), counted and shown in
the status (`unstored`), retried on every later write and health tick, and once storage works again a
`storage_recovered` event tells the district what happened: how many records and events were stored
late, how many were lost, and how many journal writes failed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque

from node.reporting.outbox import make_event

log = logging.getLogger(__name__)

STORAGE_ERRORS = (sqlite3.Error, OSError)
MAX_IN_MEMORY = 2000  # a day of a busy node's records; past it the oldest event (then record) is lost


class Reporter:
    def __init__(self, outbox, *, node_id: str, wall, kick, max_in_memory: int = MAX_IN_MEMORY):
        """wall(): epoch seconds for event stamps; kick(): something new is stored (pump, urgent heartbeat)."""
        self.outbox, self.node_id, self.wall, self.kick = outbox, node_id, wall, kick
        self.max_in_memory = max_in_memory
        self._memory: deque[tuple[str, dict]] = deque()
        self.fault: dict | None = None  # since, counts: set at the first failed write, reported on recovery
        self.write_errors = 0           # every failed outbox or journal write, ever
        self._journal_failing = False
        self.lost = 0                   # given up past the memory bound, ever (part of the status `dropped`)

    # --- writing -------------------------------------------------------------------------------------
    def event(self, type_: str, data: dict) -> None:
        self.add("event", make_event(self.node_id, type_, data, self.wall()))

    def add(self, kind: str, payload: dict) -> None:
        if self.fault is not None:
            self.retry()
        if self._memory:  # still failing: keep the order, do not try this one ahead of older ones
            self._keep(kind, payload)
        else:
            try:
                self.outbox.add(kind, payload)
            except STORAGE_ERRORS as exc:
                self.storage_error("outbox", exc)
                self._keep(kind, payload)
        self.kick()

    def storage_error(self, what: str, exc: Exception) -> None:
        """A write failed (outbox here, the journal from the recorder): count it, note when it began."""
        self.write_errors += 1
        if self.fault is None:
            log.error("storage fault (%s): %s; playing on from memory", what, exc)
            self.fault = {"since": int(self.wall()), "first": what, "detail": str(exc)[:200], "journal": 0,
                          "records": 0, "events": 0, "lost": 0}
        if what in ("journal", "state"):
            self.fault["journal"] += 1
            self._journal_failing = True

    def storage_ok(self, what: str) -> None:
        """A write succeeded: for the journal, that is how the node knows it works again."""
        if what in ("journal", "state") and self._journal_failing:
            self._journal_failing = False
            self.retry()

    def _keep(self, kind: str, payload: dict) -> None:
        self._memory.append((kind, payload))
        self.fault["records" if kind == "play" else "events"] += 1
        while len(self._memory) > self.max_in_memory:
            victim = next((x for x in self._memory if x[0] == "event"), self._memory[0])
            self._memory.remove(victim)
            self.fault["lost"] += 1
            self.lost += 1
            log.error("storage fault: %s %s lost (memory bound %d)", victim[0], victim[1].get("id"),
                      self.max_in_memory)

    def retry(self) -> bool:
        """Store what waits in memory; True when nothing waits. Called on each write and health tick."""
        while self._memory:
            kind, payload = self._memory[0]
            try:
                self.outbox.add(kind, payload)  # the same id again is a no-op: safe after a partial retry
            except STORAGE_ERRORS:
                return False
            self._memory.popleft()
        if self.fault is not None and not self._journal_failing:
            fault, self.fault = self.fault, None
            log.warning("storage works again: %s", fault)
            try:
                self.outbox.add("event", make_event(self.node_id, "storage_recovered", fault, self.wall()))
            except STORAGE_ERRORS as exc:  # failed again at once: report it next time
                self.storage_error("outbox", exc)
                self.fault.update({k: fault[k] for k in ("since", "journal", "records", "events", "lost")})
                return False
            self.kick()
        return True

    @property
    def unstored(self) -> int:
        """Events and records waiting in memory for storage (the status field `unstored`)."""
        return len(self._memory)
