"""The node loop: one thread that owns node state. Other threads only `post` events into it.

Timers are deadlines on the monotonic clock kept in a heap; the loop waits on its queue until the
nearest deadline, so an idle node wakes only when it has something to do (CPU while idle ≈ 0).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import time
from typing import Callable

log = logging.getLogger(__name__)


class Stop:
    """Posted to end the loop (SIGTERM handler, tests)."""


class EventLoop:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._queue: "queue.Queue[object]" = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self.monotonic = monotonic
        self.running = False
        self.handlers: dict[type, Callable[[object], None]] = {}

    def post(self, event: object) -> None:
        """Thread-safe: the only thing a paho, libVLC or gpiozero callback may do."""
        self._queue.put(event)

    def on(self, event_type: type, handler: Callable[[object], None]) -> None:
        self.handlers[event_type] = handler

    def call_at(self, deadline: float, fn: Callable[[], None]) -> int:
        token = next(self._seq)
        heapq.heappush(self._timers, (deadline, token, fn))
        return token

    def call_later(self, delay: float, fn: Callable[[], None]) -> int:
        return self.call_at(self.monotonic() + delay, fn)

    def cancel(self, token: int | None) -> None:
        if token is not None:
            self._cancelled.add(token)

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._timers)[1])
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.monotonic())

    def run_once(self, max_wait: float | None = None) -> bool:
        """Run due timers, then handle at most one event. Returns False once Stop was received."""
        while True:
            timeout = self._next_timeout()
            if timeout is None or timeout > 0:
                break
            _, token, fn = heapq.heappop(self._timers)
            self._guard(fn)
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if isinstance(event, Stop):
            return False
        handler = self.handlers.get(type(event))
        if handler is None:
            log.debug("no handler for %r", event)
            return True
        self._guard(lambda: handler(event))
        return True

    def _guard(self, fn: Callable[[], None]) -> None:
        # One bad message or a bug in one handler must not take the node off the air.
        try:
            fn()
        except Exception:  # noqa: BLE001
            log.exception("handler failed")

    def run(self) -> None:
        self.running = True
        try:
            while self.run_once():
                pass
        finally:
            self.running = False

    def stop(self) -> None:
        self.post(Stop())

    def drain(self, max_events: int = 10000) -> None:
        """Handle everything already queued (tests and simulations)."""
        for _ in range(max_events):
            if self._queue.empty():
                return
            if not self.run_once(max_wait=0):
                return
