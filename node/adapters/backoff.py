"""Reconnect delays: exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
And Jitter"). Full jitter spreads hundreds of nodes reconnecting after a broker restart over the whole
window instead of stampeding at the same instants; the cap keeps a node from sleeping for hours.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 120.0, rng: random.Random | None = None):
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [base/2, min(cap, base * 2**attempt)].

        The floor of base/2 (not 0) is what keeps a flapping link from ever becoming a tight loop.
        """
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(self.base / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
