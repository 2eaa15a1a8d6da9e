"""The node loop: one thread that owns node state. Other threads only `post` events into it.

Timers are deadlines on the monotonic clock kept in a heap; the loop waits on its queue until the
nearest deadline, so an idle node wakes only when it has something to do (CPU while idle ≈ 0).

An exception inside a handler or timer is a bug, and it is never only a log line (STYLE.md point 11):
the loop records it in `failures` and then either
  * re-raises it (strict: the tests, so a handler bug fails the test that caused it), or
  * posts a HandlerFailed event and carries on (production: one bug must not take a node off the air;
    the node reports it to the district as a `handler_failed` event, docs/heartbeat.md).
Strict is on when SPEAKER_NODE_STRICT_LOOP=1 (tests/conftest.py sets it, so daemons the tests start
inherit it), or when the constructor says so.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import time
import traceback
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

STRICT_ENV = "SPEAKER_NODE_STRICT_LOOP"
MAX_FAILURES_KEPT = 50


class Stop:
    """Posted to end the loop (SIGTERM handler, tests)."""


@dataclass(frozen=True)
class HandlerFailed:
    """A handler or timer raised. Posted by the loop itself (not in strict mode)."""

    handler: str     # qualified name of the function that raised
    event: str       # type name of the event it was handling, or "timer"
    error: str       # "ValueError: ..." (short)
    where: str       # innermost frame, "node/service/onair.py:123 in _judge"
    traceback: str   # the last frames, for the log


def _strict_from_environment() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _short_path(filename: str) -> str:
    marker = filename.rfind("/node/")
    return filename[marker + 1:] if marker >= 0 else os.path.basename(filename)


def _name_of(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class SignalStop:
    """A stop request a signal handler may make. threading.Event.set() takes a lock that the interrupted
    main thread may be holding inside Event.wait(): a SIGTERM landing there deadlocks. SimpleQueue.put()
    is reentrant."""

    def __init__(self) -> None:
        self._requests: "queue.SimpleQueue[None]" = queue.SimpleQueue()
        self._set = False

    def set(self, *_signal_args) -> None:
        self._requests.put(None)

    def wait(self, timeout: float) -> bool:
        """True once set (at once if it already was), False after `timeout` seconds."""
        if not self._set:
            try:
                self._requests.get(timeout=timeout)
            except queue.Empty:
                return False
            self._set = True
        return True


class EventLoop:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic, *, strict: bool | None = None):
        # SimpleQueue, not Queue: its put() is reentrant, so a signal handler may post (SIGTERM -> Stop)
        # while the main thread is inside get(). queue.Queue's put() takes the lock get() holds: a
        # SIGTERM that lands there deadlocks the daemon (seen: a node that never exited after SIGTERM).
        self._queue: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self.monotonic = monotonic
        self.running = False
        self.handlers: dict[type, Callable[[object], None]] = {}
        self.strict = _strict_from_environment() if strict is None else strict
        self.failures: list[HandlerFailed] = []   # the last MAX_FAILURES_KEPT
        self.failure_count = 0

    def post(self, event: object) -> None:
        """Thread-safe and reentrant: the only thing a paho, libVLC, gpiozero callback or a signal handler
        may do."""
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
            self._guard(fn, fn, "timer")
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
        self._guard(lambda: handler(event), handler, type(event).__name__)
        return True

    def _guard(self, fn: Callable[[], None], what, event_name: str) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised (strict) or reported
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}"
            failure = HandlerFailed(_name_of(what), event_name, f"{type(exc).__name__}: {str(exc)[:200]}",
                                    where, "".join(traceback.format_exception(exc)[-6:])[-2000:])
            self.failure_count += 1
            self.failures = (self.failures + [failure])[-MAX_FAILURES_KEPT:]
            log.error("handler %s failed on %s: %s\n%s", failure.handler, failure.event, failure.error,
                      failure.traceback)
            if self.strict:
                raise
            if event_name != HandlerFailed.__name__:  # a failing failure reporter must not loop forever
                self.post(failure)

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
