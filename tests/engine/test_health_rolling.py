"""RollingWindow: the two-slot estimate of the last N seconds against a naive event list."""

from __future__ import annotations

import math
import random

import pytest

from engine.rolling import RollingWindow


def naive_estimate(events: list[tuple[float, float]], length: float, now: float) -> float:
    """The sliding-window counter estimate, computed from every event kept."""
    k = math.floor(now / length)
    current = sum(c for ts, c in events if math.floor(ts / length) == k)
    previous = sum(c for ts, c in events if math.floor(ts / length) == k - 1)
    return current + previous * (1 - (now / length - k))


def test_matches_the_naive_estimate_at_every_step() -> None:
    rng = random.Random(5)
    window = RollingWindow(60.0, width=1)
    events: list[tuple[float, float]] = []
    ts = 1_000_000.0
    for _ in range(400):
        ts += rng.expovariate(1 / 7)
        c = float(rng.randint(1, 5))
        assert window.add(ts, [c])
        events.append((ts, c))
        now = ts + rng.uniform(0, 90)
        expected = naive_estimate(events, 60.0, now)
        assert window.view(now).counts[0] == pytest.approx(expected, abs=1e-6)


def test_exact_at_slot_boundaries() -> None:
    window = RollingWindow(10.0, width=2)
    for ts in range(100, 130):
        window.add(float(ts), [1, 2])
    assert window.view(130.0).counts == [10.0, 20.0]  # exactly the last 10 s
    assert window.view(140.0).counts == [0.0, 0.0]


def test_late_events_land_in_their_slot_or_are_refused() -> None:
    window = RollingWindow(10.0, width=1)
    window.add(25.0, [1])
    assert window.add(15.0, [1])  # previous slot
    assert not window.add(5.0, [1])  # older than the window can hold
    assert window.view(25.0).counts == [1.5]


def test_latency_sketches_merge_with_the_slot_weights() -> None:
    window = RollingWindow(10.0, width=0)
    for i in range(10):
        window.add(5.0, latency=1.0)
        window.add(15.0, latency=0.01 * (i + 1))
    recent = window.view(19.9)  # the previous slot has almost no weight left
    assert recent.quantile(0.5) == pytest.approx(0.06, rel=0.02)
    assert window.view(15.0).quantile(0.95) == pytest.approx(1.0, rel=0.021)


def test_round_trip() -> None:
    window = RollingWindow(60.0, width=3)
    window.add(100.0, [1, 2, 3], latency=0.5)
    window.add(130.0, [1, 0, 0], latency=0.7)
    again = RollingWindow.from_list(window.to_list())
    assert again.view(150.0).counts == window.view(150.0).counts
    assert again.view(150.0).quantile(0.9) == window.view(150.0).quantile(0.9)
