"""Token bucket for reported events: a flood of bad messages must not exhaust the SD card or the
mobile data plan. What is suppressed is counted and reported once the bucket refills."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.tokens = float(burst)
        self.last: float | None = None
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count
