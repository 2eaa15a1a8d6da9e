"""Reconnect delays: full jitter, bounded, never a tight loop."""

import random

from node.adapters.backoff import Backoff


def test_delays_grow_exponentially_within_the_cap_and_never_drop_below_half_the_base():
    b = Backoff(base=1.0, cap=60.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 60.0 for d in delays)
    assert max(delays[:3]) <= 4.0                      # early attempts stay short
    assert max(delays[10:]) > 30                        # later ones spread over the whole window


def test_full_jitter_spreads_a_fleet_reconnecting_at_once():
    # 500 nodes whose broker restarted: their 6th attempt lands anywhere in [0.5 s, 32 s].
    sixth = []
    for seed in range(500):
        b = Backoff(1.0, 120.0, rng=random.Random(seed))
        sixth.append([b.next_delay() for _ in range(6)][-1])
    buckets = [sum(1 for d in sixth if lo <= d < lo + 8) for lo in (0, 8, 16, 24)]
    assert min(buckets) > 80, buckets


def test_reset_after_a_successful_connection():
    b = Backoff(1.0, 120.0, rng=random.Random(1))
    for _ in range(10):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 1.0
