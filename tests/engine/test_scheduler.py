"""WarmupScheduler: thresholds, blocks against a naive scan, leases and review timers."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.analyzer import IdleBins
from engine.scheduler import WarmupScheduler

BINS = IdleBins(exact=20, growth=1.5, horizon=200)


def test_a_larger_knob_keeps_less_likely_minutes() -> None:
    thresholds = [WarmupScheduler(knob=k).threshold(20.0) for k in (0.25, 1, 4, 16)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert WarmupScheduler().threshold(60.0) < WarmupScheduler().threshold(5.0)  # slow loads


def naive_minutes(probs: np.ndarray, threshold: float, lead: int) -> set[int]:
    """Idle offsets kept loaded: every minute of a bin above the threshold, plus gaps
    shorter than ``lead`` between two such minutes."""
    keep = sorted(
        k
        for j in range(BINS.size)
        if probs[j] > threshold
        for k in range(int(BINS.starts[j]), int(BINS.starts[j] + BINS.widths[j]))
    )
    out = set(keep)
    for a, b in pairwise(keep):
        if 1 < b - a <= lead:
            out.update(range(a + 1, b))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=BINS.size, max_size=BINS.size),
    st.floats(0.05, 0.9),
    st.integers(1, 4),
)
def test_blocks_match_a_naive_scan(values: list[float], threshold: float, lead: int) -> None:
    probs = np.asarray(values)
    blocks = WarmupScheduler().blocks(probs, BINS, threshold, lead, max_blocks=1000)
    got = {k for b in blocks for k in range(b.start, b.end)}
    assert got == naive_minutes(probs, threshold, lead)
    for a, b in pairwise(blocks):
        assert b.start - a.end >= lead  # a pre-warm can always be asked for in time


def test_lease_walks_through_the_blocks_with_review_timers() -> None:
    probs = np.zeros(BINS.size)
    probs[[0, 1, 9]] = 0.5
    s = WarmupScheduler()
    blocks = s.blocks(probs, BINS, 0.1, lead=1)
    lease, review = s.lease(blocks, last=100, minute=100, threshold=0.1)
    assert (lease.start, lease.end, review) == (101, 103, 102)
    assert review is not None
    lease, review = s.lease(blocks, last=100, minute=review, threshold=0.1)
    assert (lease.start, lease.end, review) == (110, 111, 110)
    assert lease.start - 1 - 1 >= 102  # decided at least a lead ahead
    lease, review = s.lease(blocks, last=100, minute=110, threshold=0.1)
    assert lease.action == "release" and review is None
