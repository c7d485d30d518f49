"""The warmcast policy end to end on small synthetic streams and a real-trace excerpt."""

from __future__ import annotations

import csv
import gzip
import random
from itertools import pairwise
from pathlib import Path

import pytest

from engine.core import WarmupEngine
from engine.lease import Command
from engine.policies import FixedKeepAlive, HybridHistogram, Policy
from engine.warmcast import WarmcastPolicy

AZURE = (
    Path(__file__).resolve().parents[3]
    / "shared/data/azure-functions-2019/invocations_per_minute_1000fn_24h.csv.gz"
)


def drive(policy: Policy, minutes: dict[str, list[int]], end: int) -> list[Command]:
    """Feed invoked minutes (one request each) through an engine; all its commands."""
    events = sorted((t, m) for m, ts in minutes.items() for t in ts)
    engine = WarmupEngine(policy)
    out = [c for t, m in events for c in engine.observe(m, 60.0 * t + 1)]
    return out + engine.advance(60.0 * (end + 1))


def loaded(commands: list[Command], model_id: str, end: int) -> list[bool]:
    """Loaded minutes of a model per the evaluation rules (latest command wins)."""
    state = [False] * (end + 1)
    mine = [c for c in commands if c.model_id == model_id]
    for i, c in enumerate(mine):
        since = int(c.issued_at // 60) + 1
        until = int(mine[i + 1].issued_at // 60) + 1 if i + 1 < len(mine) else end + 1
        for t in range(since, min(until, end + 1)):
            state[t] = c.action == "warm" and c.start // 60 <= t < c.end // 60
    return state


def cold_and_wasted(
    commands: list[Command], minutes: dict[str, list[int]], end: int, since: int
) -> tuple[int, int]:
    cold = wasted = 0
    for model_id, ts in minutes.items():
        state, invoked = loaded(commands, model_id, end), set(ts)
        cold += sum(1 for t in invoked if t >= since and not state[t])
        wasted += sum(1 for t in range(since, end + 1) if state[t] and t not in invoked)
    return cold, wasted


def test_a_timer_is_prewarmed_for_its_runs_only() -> None:
    runs = list(range(0, 2000, 15))
    commands = drive(WarmcastPolicy(min_samples=20, sample_share=1.0), {"timer": runs}, 2000)
    state = loaded(commands, "timer", 2000)
    late = [t for t in runs if t >= 600]
    assert all(state[t] for t in late)  # every run found it loaded
    assert sum(state[600:2000]) < 2 * len(late)  # and it was not kept in between
    for c in commands:  # pre-warms were asked for a lead time ahead
        if c.issued_at >= 600 * 60 and c.start > c.issued_at + 60:
            assert c.start - c.issued_at >= 2 * 60


@pytest.mark.parametrize(("period", "jitter"), [(600, 5), (1000, 20)])
def test_the_baseline_prewarms_a_long_steady_return_and_keeps_scattered_ones(
    period: int, jitter: int
) -> None:
    # decided by the baseline throughout (the learner never trusted): a model back every
    # ten hours or so, give or take a few minutes, is pre-warmed for its returns; one
    # back after scattered long idle times keeps hybrid's four-hour keep-alive
    rng = random.Random(7)
    end = 10 * period
    steady = [0]
    while steady[-1] < end:
        steady.append(steady[-1] + period + rng.randint(-jitter, jitter))
    scattered = [0, 300, 1200, 1500, 2900, 3300, 4700, 5000, 6400, 6800, 7900]
    minutes = {"steady": steady, "scattered": scattered}
    policy = WarmcastPolicy(min_samples=10**9)
    commands = drive(policy, minutes, end)
    state = loaded(commands, "steady", end)
    seen = policy.config.long_min_periods  # returns before the pattern shows
    late = [t for t in steady[seen + 1 :] if t <= end]
    assert all(state[t] for t in late)  # every later return found it loaded
    assert sum(state[late[0] - period : end]) <= 241 * len(late)  # 4 h a return at most
    mine = [c for c in commands if c.model_id == "scattered" and c.issued_at > 3000 * 60]
    assert mine and all(c.end - c.start == 240 * 60 for c in mine)
    assert policy.stats.learner_decisions == 0


def test_the_baseline_prewarms_for_a_steady_return_after_its_own_keepalive() -> None:
    # sessions of ten requests two minutes apart, ten hours (give or take) between them:
    # hybrid keeps the model loaded through a session's pauses, and the baseline then
    # pre-warms it for the next session rather than leaving that return cold
    rng = random.Random(3)
    minutes: list[int] = []
    starts: list[int] = []
    t = 0
    while t < 9000:
        starts.append(t)
        minutes.extend(range(t, t + 20, 2))
        t += 18 + 600 + rng.randint(-5, 5)
    policy = WarmcastPolicy(min_samples=10**9)
    commands = drive(policy, {"sessions": minutes}, 9000)
    state = loaded(commands, "sessions", 9000)
    seen = policy.config.long_min_periods + 1  # sessions before the pattern shows
    assert all(state[t] for t in starts[seen:])  # later sessions start warm
    pauses = [t for t in minutes if t not in starts]
    assert all(state[t] for t in pauses)  # and stay warm through each session
    for a, b in pairwise(starts[seen:]):
        assert sum(state[a + 20 : b]) < 240  # a pre-warm, not a day-long keep-alive
    assert policy.stats.learner_decisions == 0


def test_a_follower_is_warmed_when_its_leader_wakes_up() -> None:
    rng = random.Random(5)
    leader, follower = [], []
    t = 0
    while t < 6000:
        t += rng.randint(60, 400)
        leader.append(t)
        follower.append(t + 3)
    minutes = {"leader": leader, "follower": follower}
    commands = drive(WarmcastPolicy(min_samples=20, sample_share=1.0), minutes, 6100)
    state = loaded(commands, "follower", 6100)
    late = [t for t in follower if t > 3000]
    assert sum(state[t] for t in late) >= 0.8 * len(late)
    reasons = {c.reason for c in commands if c.model_id == "follower"}
    assert any("follows" in r for r in reasons)


def test_accuracy_counts_agree_with_the_commands() -> None:
    rng = random.Random(9)
    minutes = {f"m{i}": sorted(rng.sample(range(3000), 40 + 60 * i)) for i in range(5)}
    policy = WarmcastPolicy(min_samples=100)
    commands = drive(policy, minutes, 3000)
    cold, wasted = cold_and_wasted(commands, minutes, 3000, since=0)
    acc = policy.accuracy.counts(now=3001)
    invoked = sum(len(ts) for ts in minutes.values())
    assert acc.invoked_minutes == invoked
    assert acc.cold_starts == cold
    assert acc.wasted_minutes == wasted
    assert 0.0 < acc.precision <= 1.0 and acc.recall == (invoked - cold) / invoked


def test_slow_loads_lower_the_threshold_and_move_prewarms_earlier() -> None:
    policy = WarmcastPolicy()
    fast = policy._threshold("m")
    for _ in range(20):
        policy.observe_metric("m", "load_time_seconds", 170.0)
    slow = policy._threshold("m")
    assert slow[0] < fast[0] and slow[1] > fast[1]
    policy.observe_metric("m", "memory_bytes", 8 * 2**30)
    assert policy.resources.memory_of("m") == 8192.0
    policy.observe_metric("m", "latency_p95_seconds", 0.3)  # other metrics are ignored


@pytest.mark.parametrize("size_weight", [0.0, 0.5, 1.0])
def test_sizes_move_the_plan_only_by_the_size_weight(size_weight: float) -> None:
    policy = WarmcastPolicy(size_weight=size_weight)
    for model_id, mb in (("small", 100.0), ("typical", 400.0), ("large", 1600.0)):
        policy.observe_metric(model_id, "memory_mb", mb)
    typical = policy._threshold("typical")[0]
    assert typical == WarmcastPolicy()._threshold("unsized")[0]  # the median plans as unsized
    small, large = policy._threshold("small")[0], policy._threshold("large")[0]
    if size_weight == 0:
        assert small == typical == large  # model-minutes: every loaded minute costs alike
    else:  # a larger model must be likelier to be wanted to be kept loaded
        assert small < typical < large
        assert policy.resources.relative_memory("large") ** size_weight == pytest.approx(
            4.0**size_weight
        )


def test_without_a_budget_sizes_leave_the_default_plan_as_it_was() -> None:
    rng = random.Random(5)
    minutes = {m: sorted(rng.sample(range(3000), n)) for m, n in (("a", 400), ("b", 60), ("c", 15))}

    def commands(sizes: dict[str, float], **settings: float) -> list[dict[str, object]]:
        policy = WarmcastPolicy(min_samples=200, sample_share=1.0, **settings)
        for model_id, mb in sizes.items():
            policy.observe_metric(model_id, "memory_mb", mb)
        return [c.to_dict() for c in drive(policy, minutes, 3000)]

    sizes = {"a": 64_000.0, "b": 500.0, "c": 12.0}
    plain = commands({})
    assert len(plain) > 100
    assert commands(sizes) == plain
    assert commands(sizes, size_weight=1.0) != plain  # the weight is what moves it


def test_drift_of_a_model_raises_an_alert_and_falls_back() -> None:
    before = list(range(0, 4000, 5))
    after = [t for t in range(4000, 7000) if random.Random(t).random() < 0.3]
    policy = WarmcastPolicy(min_samples=100, sample_share=1.0)
    commands = drive(policy, {"m": before + after}, 7000)
    alerts = policy.drain_alerts()
    firing = [a for a in alerts if a.firing and a.model_id == "m"]
    assert firing and firing[0].kind == "learner_drift"
    assert firing[0].minute >= 4000 and firing[0].value > firing[0].threshold
    assert policy.drain_alerts() == []  # drained
    assert policy.stats.fallback_decisions > 0
    assert commands


def test_memory_budget_holds_in_the_policy() -> None:
    rng = random.Random(2)
    minutes = {f"m{i}": sorted(rng.sample(range(2000), 300)) for i in range(6)}
    policy = WarmcastPolicy(min_samples=100, max_memory=2.0, queue_size=3)
    commands = drive(policy, minutes, 2000)
    states = [loaded(commands, m, 2000) for m in minutes]
    assert max(sum(s[t] for s in states) for t in range(2001)) <= 2
    assert policy.resources.stats.refused_memory > 0
    assert policy.resources.stats.peak_memory <= 2.0
    overflow = [a for a in policy.drain_alerts() if a.kind == "queue_overflow"]
    assert overflow and overflow[0].firing and overflow[0].threshold == 3.0
    transitions = [a.state for a in overflow]  # firing and resolved alternate
    assert all(a != b for a, b in pairwise(transitions))
    assert policy.snapshot_stats()["memory_peak"] == policy.resources.stats.peak_memory


def read_azure_excerpt(functions: int, minutes: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with gzip.open(AZURE, "rt") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols = [i for i, h in enumerate(header) if h.startswith("minute_")][:minutes]
        for n, row in enumerate(reader):
            if n >= functions:
                break
            ts = [j for j, i in enumerate(cols) if row[i] != "0"]
            if ts:
                out[row[0]] = ts
    return out


@pytest.mark.skipif(not AZURE.exists(), reason="shared trace not available")
def test_on_an_azure_excerpt_fewer_cold_starts_than_hybrid_with_less_memory() -> None:
    # 150 functions x 12 hours, scored after 4 hours: hybrid has 155 cold starts and
    # 18735 wasted minutes here; warmcast at knob 1 about 124 and 17900
    minutes = read_azure_excerpt(150, 720)
    end, since = 719, 240
    hybrid = cold_and_wasted(drive(HybridHistogram(), minutes, end), minutes, end, since)
    fixed = cold_and_wasted(drive(FixedKeepAlive(10), minutes, end), minutes, end, since)
    ours = cold_and_wasted(drive(WarmcastPolicy(knob=1.0), minutes, end), minutes, end, since)
    assert ours[0] < 0.85 * hybrid[0] and ours[1] < hybrid[1]
    assert ours[0] < 0.5 * fixed[0]
