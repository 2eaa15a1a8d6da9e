"""Clock adapter: wall time, monotonic time, whether NTP synchronised the system clock, and the RTC.

A Raspberry Pi has no RTC (a Pi 5 or a DS3231 board does): at boot the wall clock may be 1970, or
wherever fake-hwclock left it. Whether any of these readings can be trusted is decided in
node.trust.time_trust (pure); this adapter only reads. Every host file it reads is named by the caller
(node.toml [clock]), so a simulated node and the tests never read the host's NTP state.
"""

from __future__ import annotations

import datetime as dt
import os
import time

UTC = dt.timezone.utc


class SystemClock:
    def __init__(self, ntp_sync_file: str = "", rtc_file: str = "", wall_offset: float = 0.0):
        # systemd-timesyncd touches ntp_sync_file once the kernel clock is synchronised (systemd >= 239);
        # "" means "never synchronised". rtc_file: /sys/class/rtc/rtc0/since_epoch (the kernel's RTC driver).
        self.ntp_sync_file = ntp_sync_file
        self.rtc_file = rtc_file
        self.wall_offset = wall_offset   # simulation only: a node whose clock is wrong

    @classmethod
    def from_config(cls, clock_cfg) -> "SystemClock":
        return cls(clock_cfg.ntp_sync_file, getattr(clock_cfg, "rtc_file", ""), getattr(clock_cfg, "wall_offset", 0.0))

    def wall(self) -> dt.datetime:
        return dt.datetime.now(UTC) + dt.timedelta(seconds=self.wall_offset)

    def monotonic(self) -> float:
        return time.monotonic()

    def ntp_synchronized(self) -> bool:
        return bool(self.ntp_sync_file) and os.path.exists(self.ntp_sync_file)

    def rtc(self) -> dt.datetime | None:
        """The hardware clock, or None when there is none (or it reads nonsense)."""
        if not self.rtc_file:
            return None
        try:
            with open(self.rtc_file, encoding="ascii") as f:
                seconds = int(f.read().strip())
            return dt.datetime.fromtimestamp(seconds, UTC)
        except (OSError, ValueError, OverflowError):
            return None


class FakeClock:
    """A settable clock for tests and simulations; `advance` moves wall and monotonic together."""

    def __init__(self, wall: dt.datetime, ntp: bool = True, monotonic: float = 1000.0,
                 rtc: dt.datetime | None = None):
        self._wall = wall
        self._mono = monotonic
        self.ntp = ntp
        self.rtc_time = rtc
        self.history: list[tuple[str, object]] = []

    def wall(self) -> dt.datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def ntp_synchronized(self) -> bool:
        return self.ntp

    def rtc(self) -> dt.datetime | None:
        return self.rtc_time

    def advance(self, seconds: float) -> None:
        self._wall += dt.timedelta(seconds=seconds)
        self._mono += seconds
        if self.rtc_time is not None:
            self.rtc_time += dt.timedelta(seconds=seconds)

    def set_wall(self, wall: dt.datetime) -> None:
        self.history.append(("set_wall", wall))
        self._wall = wall
