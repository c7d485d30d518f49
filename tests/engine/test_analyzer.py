"""Usage statistics against naive recomputations at every step."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.analyzer import (
    RATE_HALF_LIVES,
    CoOnsetTracker,
    IdleBins,
    ModelUsage,
    UsagePatternAnalyzer,
)

BINS = IdleBins(exact=30, growth=1.5, horizon=600)


def naive_hazards(
    idles: list[int], bins: IdleBins, prior: np.ndarray, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sharp (per bin) and smooth (per coarse group, spread back on its bins) hazards."""
    counts = np.zeros(bins.size)
    exposure = np.zeros(bins.size)
    for idle in idles:
        counts[bins.index(idle)] += 1
        for j in range(bins.size):
            lo, hi = int(bins.starts[j]), int(bins.starts[j] + bins.widths[j])
            if j == bins.size - 1:
                hi = idle + 1  # the open bin
            exposure[j] += max(0, min(idle + 1, hi) - lo)  # minutes lo..idle inside the bin
    pseudo = weight * bins.widths
    sharp = (counts + prior * pseudo) / np.maximum(exposure + pseudo, 1e-9)
    smooth = np.zeros(bins.size)
    edges = [*bins.groups.tolist(), bins.size]
    for a, b in pairwise(edges):
        width = bins.widths[a:b].sum()
        g_prior = (prior[a:b] * bins.widths[a:b]).sum() / width
        g = (counts[a:b].sum() + g_prior * weight * width) / (exposure[a:b].sum() + weight * width)
        smooth[a:b] = g
    return sharp, smooth


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 900), min_size=1, max_size=40))
def test_hazard_matches_a_recount_after_every_idle_period(gaps: list[int]) -> None:
    usage = ModelUsage(BINS, first=0)
    prior = np.linspace(0.01, 0.2, BINS.size)
    minute, idles = 0, []
    usage.record(minute)
    for gap in gaps:
        minute += gap + 1
        assert usage.record(minute) == gap
        idles.append(gap)
        sharp, smooth = naive_hazards(idles, BINS, prior, 1.5)
        got = usage.hazards(prior, 1.5)
        assert np.allclose(got.sharp, sharp) and np.allclose(got.smooth, smooth)
        for idle in {0, gap, gap + 3, 700}:
            j = BINS.index(idle)
            one = usage.hazards_at(idle, prior, BINS.group_average(prior), 1.5)
            assert np.allclose(one[:2], (sharp[j], smooth[j]))
        assert 0.0 < got.regularity <= 1.0


def test_bins_cover_every_idle_time_once() -> None:
    for idle in range(0, 700):
        j = BINS.index(idle)
        assert BINS.starts[j] <= idle
        assert idle < BINS.starts[j] + BINS.widths[j] or j == BINS.size - 1


def test_rates_match_an_exponentially_weighted_recomputation() -> None:
    rng = random.Random(3)
    usage = ModelUsage(BINS, first=0)
    invoked: list[int] = []
    for minute in range(0, 3000):
        if rng.random() < 0.05:
            usage.record(minute)
            invoked.append(minute)
        if minute % 97 == 0:
            for got, half_life in zip(usage.rates_at(minute), RATE_HALF_LIVES, strict=True):
                a = 0.5 ** (1 / half_life)
                expected = sum((1 - a) * a ** (minute - t) for t in invoked)
                assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)


def test_pooled_hazard_waits_for_the_minute_to_close() -> None:
    a = UsagePatternAnalyzer(BINS)
    a.update("x", 0)
    a.close_minute(0)
    before = a.pooled_hazard().copy()
    a.update("x", 3)  # idle 2, completed in minute 3
    assert np.array_equal(a.pooled_hazard(), before)
    a.close_minute(3)
    assert a.pooled_periods == 1
    assert a.pooled_hazard()[2] > before[2]


def naive_followers(
    onsets: list[tuple[int, str]], leader: str, window: int, shrink: float
) -> dict[str, tuple[float, list[float]]]:
    n = sum(1 for _, m in onsets if m == leader)
    counts: dict[str, list[int]] = {}
    for t, follower in onsets:
        if follower == leader:
            continue
        times = [s for s, m in onsets if m == leader and t - window <= s < t]
        if times:
            c = counts.setdefault(follower, [0] * (window + 1))
            c[0] += 1
            c[t - max(times)] += 1  # the lag from its latest onset
    denom = max(n, 1) + shrink
    return {f: (min(c[0] / denom, 1.0), [x / denom for x in c[1:]]) for f, c in counts.items()}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from("abcde")),
        max_size=60,
        unique_by=lambda e: e,
    )
)
def test_co_onsets_match_a_naive_count(raw: list[tuple[int, str]]) -> None:
    tracker = CoOnsetTracker(window=5, min_idle=0, max_followers=10, shrink=1.0)
    onsets = sorted(raw)
    by_minute: dict[int, list[str]] = {}
    for t, m in onsets:
        by_minute.setdefault(t, []).append(m)
    for t in sorted(by_minute):
        tracker.close_minute(t, sorted(by_minute[t]))
    for leader in "abcde":
        expected = naive_followers(onsets, leader, 5, 1.0)
        got = {f: (p, first, last) for f, p, first, last in tracker.followers(leader)}
        assert got.keys() == expected.keys()
        for k, (p, lags) in expected.items():
            assert math.isclose(got[k][0], p)
            seen = [d for d, share in enumerate(lags, 1) if share > 0]
            assert got[k][1:] == (seen[0], seen[-1])
            shares = tracker.lag_shares(leader, k)
            assert all(math.isclose(a, b) for a, b in zip(shares, lags, strict=True))


def test_co_onset_tables_stay_bounded() -> None:
    tracker = CoOnsetTracker(window=2, min_idle=0, max_followers=4)
    for t in range(0, 4000, 2):
        tracker.close_minute(t, ["leader"])
        tracker.close_minute(t + 1, [f"f{t % 97}"])
    assert len(tracker.followers("leader")) < 8
