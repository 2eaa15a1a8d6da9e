"""The recovery ladder for a node that lost its link, as a pure state machine (no IO, no clock).

The daemon calls `observe(now, registered, broker_connected)` on every modem poll with a monotonic
`now` in seconds, and does the action it returns:

  requery      ask the modem again / re-read status (cheap, harmless)
  cfun_reset   AT+CFUN=1,1: the modem restarts and re-enumerates on USB
  power_cycle  cut the modem's power through its relay/GPIO (only if the cabinet has one)
  reboot       reboot the Raspberry Pi

The link is "up" when the broker is connected: that is what the district needs. Nothing happens until
the link has been down for `no_link_after` seconds. Each step then gets its own interval to work before
the ladder climbs to the next; the top step repeats at its interval. When the modem is registered but
the broker is still unreachable, the fault is as likely to be the district's server as ours; the ladder
then stops at `cfun_reset` (fresh data session) so that a server outage does not reboot every node
in the province every hour.

When the link returns after at least `min_report_s`, one `link_restored` event is queued:
{"type": "link_restored", "down_s": ..., "steps": ["requery", "cfun_reset", ...]}.
"""

from __future__ import annotations

import datetime as dt

STEPS = ("requery", "cfun_reset", "power_cycle", "reboot")
DEFAULT_INTERVALS = {"requery": 60.0, "cfun_reset": 600.0, "power_cycle": 1800.0, "reboot": 3600.0}


class RecoveryLadder:
    def __init__(
        self,
        no_link_after: float = 300.0,
        step_intervals: dict[str, float] | None = None,
        *,
        has_power_cycle: bool = False,
        highest_step_when_registered: str = "cfun_reset",
        min_report_s: float = 30.0,
    ):
        intervals = dict(DEFAULT_INTERVALS)
        unknown = set(step_intervals or {}) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown ladder steps: {', '.join(sorted(unknown))}")
        intervals.update(step_intervals or {})
        if no_link_after < 0 or any(v <= 0 for v in intervals.values()):
            raise ValueError("ladder intervals must be positive")
        self.no_link_after = float(no_link_after)
        self.intervals = intervals
        self.steps = tuple(s for s in STEPS if has_power_cycle or s != "power_cycle")
        self.highest_when_registered = self.steps.index(highest_step_when_registered)
        self.min_report_s = min_report_s
        self._down_since: float | None = None
        self._taken: list[tuple[float, str]] = []
        self._events: list[dict] = []

    @property
    def link_down_since(self) -> float | None:
        return self._down_since

    def observe(self, now: float, registered: bool, broker_connected: bool) -> str | None:
        """The action to take now, or None. Call on every poll; it is safe to call often."""
        if broker_connected:
            self._link_up(now)
            return None
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < self.no_link_after:
            return None
        step = self._next_step(now, registered)
        if step is not None:
            self._taken.append((now, step))
        return step

    def take_events(self) -> list[dict]:
        events, self._events = self._events, []
        return events

    def _link_up(self, now: float) -> None:
        if self._down_since is None:
            return
        down_s = now - self._down_since
        if down_s >= self.min_report_s or self._taken:
            self._events.append(
                {"type": "link_restored", "down_s": round(down_s, 1), "steps": [s for _, s in self._taken]}
            )
        self._down_since = None
        self._taken = []

    def _next_step(self, now: float, registered: bool) -> str | None:
        top = self.highest_when_registered if registered else len(self.steps) - 1
        if not self._taken:
            return self.steps[0]
        last_at, last = self._taken[-1]
        if now - last_at < self.intervals[last]:
            return None  # the last step is still having its chance
        index = min(self.steps.index(last) + 1, top)
        return self.steps[index]


def network_time_bound(status, *, not_before: dt.datetime | None = None) -> dt.datetime | None:
    """The cellular network's time as an aware UTC datetime, or None when the modem had none.

    `status` is a ModemStatus or its to_json() dict. Times before `not_before` (default 2024-01-01)
    are an unset modem clock, not network time. This is one input to clock trust, never the only one:
    a fake base station can send any time (NITZ is not authenticated).
    """
    raw = status.get("network_time") if isinstance(status, dict) else getattr(status, "network_time", None)
    if not raw:
        return None
    try:
        when = dt.datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    floor = not_before or dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    when = when.astimezone(dt.timezone.utc)
    return when if when >= floor else None
