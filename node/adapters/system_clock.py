"""Clock adapter: wall time, monotonic time and whether NTP has synchronised the system clock.

A Raspberry Pi has no RTC: at boot the wall clock may be 1970, or wherever fake-hwclock left it. The
decision whether that time can be trusted lives in node.trust.time_trust (pure); this adapter only reads.
"""

from __future__ import annotations

import datetime as dt
import os
import time


class SystemClock:
    def __init__(self, ntp_sync_file: str = "/run/systemd/timesync/synchronized"):
        # systemd-timesyncd touches this file once the kernel clock is synchronised (systemd >= 239).
        self.ntp_sync_file = ntp_sync_file

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def ntp_synchronized(self) -> bool:
        return os.path.exists(self.ntp_sync_file)


class FakeClock:
    """A settable clock for tests and simulations; `advance` moves wall and monotonic together."""

    def __init__(self, wall: dt.datetime, ntp: bool = True, monotonic: float = 1000.0):
        self._wall = wall
        self._mono = monotonic
        self.ntp = ntp
        self.history: list[tuple[str, object]] = []

    def wall(self) -> dt.datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def ntp_synchronized(self) -> bool:
        return self.ntp

    def advance(self, seconds: float) -> None:
        self._wall += dt.timedelta(seconds=seconds)
        self._mono += seconds

    def set_wall(self, wall: dt.datetime) -> None:
        self.history.append(("set_wall", wall))
        self._wall = wall
