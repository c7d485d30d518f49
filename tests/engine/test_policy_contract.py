"""The Policy contract, checked the same way on every policy (river-style generic checks):
fresh instances decide alike, event order within a minute does not matter, leases are
well formed, forget forgets, and state survives pickling."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable

import pytest

from engine.core import WarmupEngine
from engine.lease import Command, Lease
from engine.policies import FixedKeepAlive, HybridHistogram, Policy
from engine.warmcast import WarmcastPolicy

FACTORIES: dict[str, Callable[[], Policy]] = {
    "fixed": lambda: FixedKeepAlive(10),
    "hybrid": lambda: HybridHistogram(),
    "warmcast": lambda: WarmcastPolicy(min_samples=200),
    "warmcast-budget": lambda: WarmcastPolicy(
        min_samples=200, max_memory=3.0, max_warmups_per_minute=2, queue_size=4
    ),
}


def synthetic_stream(seed: int, minutes: int = 1500) -> list[tuple[str, float, int]]:
    """A timer, a bursty model, a daily-ish one and a follower of the bursty one."""
    rng = random.Random(seed)
    events: list[tuple[str, float, int]] = []
    burst_until = -1
    for m in range(minutes):
        if m % 7 == 0:
            events.append(("timer", 60.0 * m + 1, 1))
        if burst_until < m and rng.random() < 0.01:
            burst_until = m + rng.randint(3, 15)
            events.append(("leader", 60.0 * m + 5, 2))
        elif m <= burst_until and rng.random() < 0.6:
            events.append(("leader", 60.0 * m + 5, 1))
        if m == burst_until - 1:
            events.append(("follower", 60.0 * m + 30, 1))
        if m % 480 in (100, 101, 102):
            events.append(("shift", 60.0 * m + 59, 3))
        if rng.random() < 0.002:
            events.append((f"rare{rng.randint(0, 3)}", 60.0 * m + 10, 1))
    return sorted(events, key=lambda e: e[1])


def run(policy: Policy, events: list[tuple[str, float, int]]) -> list[Command]:
    engine = WarmupEngine(policy)
    out = [c for e in events for c in engine.observe(*e)]
    return out + engine.advance(events[-1][1] + 3600)


def decisions(commands: list[Command]) -> list[tuple[str, str, float, float, float]]:
    return [(c.model_id, c.action, c.issued_at, c.start, c.end) for c in commands]


def shuffle_within_minutes(
    events: list[tuple[str, float, int]], seed: int
) -> list[tuple[str, float, int]]:
    rng = random.Random(seed)
    by_minute: dict[int, list[tuple[str, float, int]]] = {}
    for e in events:
        by_minute.setdefault(int(e[1] // 60), []).append(e)
    out: list[tuple[str, float, int]] = []
    for minute in sorted(by_minute):
        group = by_minute[minute]
        rng.shuffle(group)
        out.extend((m, 60.0 * minute + rng.random() * 59, n) for m, _, n in group)
    return out


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_fresh_instances_decide_alike(name: str) -> None:
    events = synthetic_stream(1)
    assert decisions(run(FACTORIES[name](), events)) == decisions(run(FACTORIES[name](), events))


@pytest.mark.parametrize("name", ["fixed", "hybrid", "warmcast"])
def test_order_of_events_within_a_minute_does_not_matter(name: str) -> None:
    events = synthetic_stream(2)
    a = decisions(run(FACTORIES[name](), events))
    b = decisions(run(FACTORIES[name](), shuffle_within_minutes(events, 3)))
    assert sorted(a) == sorted(b)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_leases_are_well_formed(name: str) -> None:
    policy = FACTORIES[name]()
    engine = WarmupEngine(policy)
    for model_id, ts, count in synthetic_stream(4):
        minute = engine.grid.minute_of(ts)
        for c in engine.observe(model_id, ts, count):
            issued = engine.grid.minute_of(c.issued_at)
            assert issued <= minute
            assert c.start >= c.issued_at + 60.0  # applies from the next minute on
            assert c.end >= c.start
            if c.action == "warm":
                assert c.end > c.start
            assert 0 <= c.priority <= 4
            assert c.probability is None or 0.0 <= c.probability <= 1.0
            assert c.confidence is None or 0.0 <= c.confidence <= 1.0
        due = policy.next_review()
        assert due is None or due >= engine.open_minute - 1  # type: ignore[operator]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_forget_drops_a_model_and_it_starts_afresh(name: str) -> None:
    events = synthetic_stream(5)
    policy = FACTORIES[name]()
    engine = WarmupEngine(policy)
    for e in events:
        engine.observe(*e)
    policy.forget("timer")
    policy.forget("never-seen")  # forgetting an unknown model is fine
    if isinstance(policy, WarmcastPolicy):
        assert "timer" not in policy.analyzer and "timer" not in policy._order
    if isinstance(policy, HybridHistogram):
        assert policy.windows("timer") == (0, policy.bins)
    minute = engine.open_minute + 5  # type: ignore[operator]
    lease = policy.on_request("timer", minute)
    assert lease is None or isinstance(lease, Lease)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_pickled_state_continues_exactly(name: str) -> None:
    events = synthetic_stream(6)
    half = len(events) // 2
    engine = WarmupEngine(FACTORIES[name]())
    for e in events[:half]:
        engine.observe(*e)
    copy = pickle.loads(pickle.dumps(engine))
    rest_a = [c for e in events[half:] for c in engine.observe(*e)]
    rest_b = [c for e in events[half:] for c in copy.observe(*e)]
    assert decisions(rest_a) == decisions(rest_b)
    assert rest_a == rest_b
