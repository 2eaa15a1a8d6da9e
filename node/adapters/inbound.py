"""The bounded queue between the broker's network thread and the node loop.

Why: paho hands every message to on_message as fast as the socket delivers it; posting each into the
loop's queue let a flood (~900 junk messages/s of 55 kB) grow the daemon by hundreds of MB, queue a
real emergency behind seconds of junk and hold up SIGTERM behind the backlog. Here the backlog is
capped in messages and bytes, and what is dropped is chosen so that a flood hurts only itself:

- Lanes by priority, given by a cheap pre-check (`triage`) on the network thread, before any signature
  is verified: 0 = claims a signature by an emergency key, 1 = the node's own command topic,
  2 = group topics. A lane is one deque per topic, so one topic cannot fill its priority level.
- The loop is served most urgent lane first, round-robin across topics of the same priority.
- When a message does not fit, the oldest message of the biggest topic of the least urgent level
  (never more urgent than the newcomer) is dropped; if everything queued is more urgent, the
  newcomer is dropped. Every drop is counted (`dropped`, reported in the status).
- An oversized message is kept as its size only (the intake reports it as too_large without the bytes).

The loop is told with one `InboundReady` event while the queue is non-empty (at most one in flight),
so the loop's own queue never holds the backlog and a Stop is handled at once.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

URGENT, OWN, GROUP = 0, 1, 2


@dataclass(frozen=True)
class InboundReady:
    """Posted to the loop: pop() has a message."""


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes       # b"" when the message was over the size cap
    size: int            # bytes as received
    retained: bool = False
    priority: int = GROUP


def default_triage(topic: str, payload: bytes) -> int:
    return OWN


class InboundQueue:
    def __init__(self, notify: Callable[[object], None], *, max_messages: int = 256, max_bytes: int = 2 << 20,
                 max_message_bytes: int = 65536, triage: Callable[[str, bytes], int] = default_triage):
        self.notify = notify
        self.max_messages, self.max_bytes, self.max_message_bytes = max_messages, max_bytes, max_message_bytes
        self.triage = triage
        self._lanes: dict[tuple[int, str], deque[Inbound]] = {}
        self._lane_bytes: dict[tuple[int, str], int] = {}
        self._turn: dict[int, deque[tuple[int, str]]] = {}  # round-robin order of topics per priority
        self._count = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.dropped = 0          # messages dropped since start (status: "inbound_dropped")
        self.dropped_bytes = 0
        self.high_water = 0       # most messages queued at once

    # --- network thread ----------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, retained: bool = False) -> bool:
        """Queue one message; False when it was the one dropped."""
        size = len(payload)
        if size > self.max_message_bytes:
            payload, priority = b"", GROUP  # only the fact and the size: the intake reports too_large
        else:
            try:
                priority = self.triage(topic, payload)
            except Exception:  # noqa: BLE001 - a triage bug must not kill the network thread
                priority = GROUP
        item = Inbound(topic, payload, size, retained, priority)
        with self._lock:
            while self._count >= self.max_messages or self._bytes + len(payload) > self.max_bytes:
                if not self._drop_one(priority):
                    self.dropped += 1
                    self.dropped_bytes += size
                    return False
            was_empty = self._count == 0
            key = (priority, topic)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
                self._lane_bytes[key] = 0
                self._turn.setdefault(priority, deque()).append(key)
            lane.append(item)
            self._lane_bytes[key] += len(payload)
            self._count += 1
            self._bytes += len(payload)
            self.high_water = max(self.high_water, self._count)
        if was_empty:
            self.notify(InboundReady())
        return True

    def _drop_one(self, newcomer: int) -> bool:
        """Drop the oldest message of the biggest topic of the least urgent level >= newcomer's."""
        levels = [p for p in self._turn if p >= newcomer and self._turn[p]]
        if not levels:
            return False
        level = max(levels)
        key = max(self._turn[level], key=lambda k: (self._lane_bytes[k], len(self._lanes[k])))
        victim = self._lanes[key].popleft()
        self._account_removed(key, victim)
        self.dropped += 1
        self.dropped_bytes += victim.size
        return True

    def _account_removed(self, key, item: Inbound) -> None:
        self._count -= 1
        self._bytes -= len(item.payload)
        self._lane_bytes[key] -= len(item.payload)
        if not self._lanes[key]:
            del self._lanes[key], self._lane_bytes[key]
            self._turn[key[0]].remove(key)

    # --- loop thread ----------------------------------------------------------------------------------
    def pop(self) -> Inbound | None:
        """The next message: most urgent level first, topics of one level in turn."""
        with self._lock:
            item = None
            for level in sorted(self._turn):
                turn = self._turn[level]
                if turn:
                    key = turn[0]
                    turn.rotate(-1)
                    item = self._lanes[key].popleft()
                    self._account_removed(key, item)
                    break
            more = self._count > 0
        if more:
            self.notify(InboundReady())
        return item

    def __len__(self) -> int:
        return self._count

    @property
    def queued_bytes(self) -> int:
        return self._bytes
