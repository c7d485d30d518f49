"""The memory budget: exact against naive caches, never exceeded, evictions explained."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.budget import Budget
from engine.core import WarmupEngine
from engine.lease import Lease
from engine.policies import KeepLoaded
from engine.registry import make_budget, make_policy
from tools.scoring import Usage, command_tuples, memory_figures, score

Event = tuple[float, str, int]


def naive_cache(
    events: list[Event], sizes: dict[str, float], capacity: float, rule: str
) -> tuple[int, int]:
    """Cold starts and evictions of a cache that loads every requested model for the next
    minute on and keeps it until room is needed, evicting the least recently used (``lru``)
    or the lowest ``clock + frequency / size`` (``gdsf``) first: a plain per-minute loop."""
    nxt: set[str] = set()  # loaded from the next minute on
    last: dict[str, int] = {}
    freq: dict[str, int] = {}
    prio: dict[str, float] = {}
    clock = 0.0
    cold = evictions = 0
    by_minute: dict[int, list[str]] = {}
    for ts, model, _ in events:
        firsts = by_minute.setdefault(math.floor(ts / 60.0), [])
        if model not in firsts:
            firsts.append(model)
    for minute in sorted(by_minute):
        loaded_now = set(nxt)
        for model in by_minute[minute]:
            if model not in loaded_now:
                cold += 1
            last[model] = minute
            freq[model] = freq.get(model, 0) + 1 if model in nxt else 1
            prio[model] = clock + freq[model] / sizes[model]
            if model in nxt or sizes[model] > capacity:
                continue
            while sum(sizes[m] for m in nxt) + sizes[model] > capacity:
                worth = last if rule == "lru" else prio
                victim = min((worth[m], m) for m in nxt if m != model)[1]
                nxt.discard(victim)
                freq[victim] = 0
                if rule == "gdsf":
                    clock = max(clock, prio[victim])
                evictions += 1
            nxt.add(model)
    return cold, evictions


def run_engine(events: list[Event], spec: str, budget: Budget) -> tuple[list, WarmupEngine]:  # type: ignore[type-arg]
    policy = KeepLoaded(spec) if spec in ("lru", "gdsf") else make_policy(spec)
    engine = WarmupEngine(policy, budget=budget)
    out = []
    for ts, model, count in events:
        out.extend(engine.observe(model, ts, count))
    out.extend(engine.advance(events[-1][0] + 120.0))
    return out, engine


traces = st.lists(
    st.tuples(st.integers(0, 240), st.sampled_from("abcdefgh"), st.integers(1, 3)),
    min_size=1,
    max_size=150,
).map(lambda rows: sorted((60.0 * m + 7.0, model, n) for m, model, n in rows))
sizes_st = st.fixed_dictionaries({m: st.integers(1, 9).map(float) for m in "abcdefgh"})


@pytest.mark.parametrize("rule", ["lru", "gdsf"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=traces, sizes=sizes_st, capacity=st.integers(1, 30).map(float))
def test_cache_rules_equal_a_naive_cache(
    rule: str, events: list[Event], sizes: dict[str, float], capacity: float
) -> None:
    budget = make_budget(rule, capacity)
    for model, size in sizes.items():
        budget.set_size(model, size)
    commands, _ = run_engine(events, rule, budget)
    end = math.floor(events[-1][0] / 60.0)
    got = score(Usage.from_events(events, t0=0.0), commands, t0=0.0, end_minute=end)
    evicted = sum(1 for c in commands if c.reason.startswith("evicted for "))
    assert (got.cold_starts, evicted) == naive_cache(events, sizes, capacity, rule)


@pytest.mark.parametrize("spec", ["lru", "gdsf", "hybrid+lru", "fixed:5", "hybrid", "warmcast"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=traces, sizes=sizes_st, capacity=st.integers(1, 30).map(float))
def test_the_budget_is_never_exceeded(
    spec: str, events: list[Event], sizes: dict[str, float], capacity: float
) -> None:
    budget = make_budget(spec, capacity)
    for model, size in sizes.items():
        budget.set_size(model, size)
    commands, engine = run_engine(events, spec, budget)
    end = math.floor(events[-1][0] / 60.0) + 2
    usage = Usage.from_events(events, t0=0.0)
    memory = memory_figures(usage, command_tuples(commands), sizes.get, t0=0.0, end_minute=end)
    assert memory.peak_loaded_bytes <= capacity + 1e-9
    assert engine.budget is not None and engine.budget.stats.peak_bytes <= capacity + 1e-9
    for c in commands:  # every release the budget forced says so
        if c.action == "release" and "budget" in c.reason:
            assert c.reason == "no room in the memory budget"


def test_where_everything_fits_only_first_requests_are_cold() -> None:
    events = [(60.0 * m + 1, model, 1) for m in range(0, 600, 37) for model in "abc"]
    for spec in ("lru", "gdsf", "warmcast"):
        budget = make_budget(spec, 30.0)
        for model in "abc":
            budget.set_size(model, 10.0)
        commands, _ = run_engine(events, spec, budget)
        got = score(Usage.from_events(events, t0=0.0), commands, t0=0.0, end_minute=600)
        assert got.cold_starts == 3, spec


def test_value_rule_keeps_the_model_used_more_often() -> None:
    budget = Budget(1.0, rule="value")
    for model in ("often", "rare"):
        budget.set_size(model, 1.0)
    for minute in range(0, 100, 2):  # "often" every other minute
        budget.touch("often", minute)
    budget.admit("often", Lease("warm", 99, 200), 98)
    budget.touch("rare", 99)  # "rare" once: worth less than "often", no room made
    lease, evicted = budget.admit("rare", Lease("warm", 100, 110), 99)
    assert (lease, evicted) == (None, [])
    assert budget.holds("often") and not budget.holds("rare") and budget.stats.refused == 1


def test_a_pre_warm_is_checked_when_it_starts() -> None:
    budget = Budget(1.0, rule="lru", keep_idle=False)
    budget.set_size("a", 1.0)
    budget.set_size("b", 1.0)
    budget.touch("a", 0)
    assert budget.admit("a", Lease("warm", 1, 50), 0) == (Lease("warm", 1, 50), [])
    budget.touch("b", 1)
    assert budget.admit("b", Lease("warm", 10, 20), 1)[0] == Lease("warm", 10, 20)
    assert budget.next_review() == 9 and budget.used_bytes == 1.0
    released = budget.settle(9)  # b starts at 10: a, less recently used, makes room
    assert [(m, lease.action, lease.start) for m, lease in released] == [("a", "release", 10)]
    assert budget.used_bytes == 1.0 and budget.holds("b") and not budget.holds("a")


def test_a_model_larger_than_the_capacity_is_never_loaded() -> None:
    budget = make_budget("lru", 5.0)
    budget.set_size("big", 6.0)
    commands, _ = run_engine([(0.0, "big", 1), (60.0, "big", 1)], "lru", budget)
    assert [c.action for c in commands] == []
    assert budget.stats.refused == 2


def test_sizes_from_metric_events_reach_the_budget() -> None:
    engine = WarmupEngine(KeepLoaded("lru"), budget=make_budget("lru", 3 * 2**20))
    engine.observe_metric("a", "memory_mb", 2.0, 0.0)
    engine.observe_metric("b", "memory_bytes", 2.0 * 2**20, 0.0)
    engine.observe_metric("a", "load_time_seconds", 12.0, 0.0)
    assert engine.budget is not None
    assert engine.budget.size_of("a") == engine.budget.size_of("b") == 2.0 * 2**20
    first = engine.observe("a", 1.0)
    second = engine.observe("b", 2.0)  # a and b do not fit together: a goes
    assert [c.action for c in first] == ["warm"]
    assert [(c.model_id, c.action) for c in second] == [("a", "release"), ("b", "warm")]
    assert second[0].reason == "evicted for b: 2 MiB of 3 MiB held (lru)"


def test_unknown_sizes_count_as_the_median_of_the_known() -> None:
    budget = Budget(100.0)
    assert budget.unknown_size() == float(1 << 30)
    for model, size in (("a", 1.0), ("b", 4.0), ("c", 9.0)):
        budget.set_size(model, size)
    assert budget.size_of("zzz") == 4.0 and not budget.sized("zzz")


def test_a_checkpointed_budget_restores() -> None:
    import pickle

    budget = make_budget("gdsf", 10.0)
    budget.set_size("a", 3.0)
    _, engine = run_engine([(0.0, "a", 1), (61.0, "b", 2)], "gdsf", budget)
    restored = pickle.loads(pickle.dumps(engine))
    assert restored.budget is not None
    assert restored.budget.used_bytes == budget.used_bytes
    assert restored.budget.holds("a") and restored.budget.holds("b")
    assert [c.model_id for c in restored.observe("c", 125.0)] == [
        c.model_id for c in engine.observe("c", 125.0)
    ]


def naive_hybrid_lru(events: list[Event], sizes: dict[str, float], capacity: float) -> int:
    """Cold starts of the hybrid policy's leases under a budget that evicts the least
    recently used, as a per-minute loop over every model's lease: a lease starting next
    minute is admitted at once, a later one (a pre-warm) when its start comes; a model too
    large for the capacity is never loaded."""
    from engine.policies import HybridHistogram

    hybrid = HybridHistogram()
    lease: dict[str, tuple[int, int]] = {}  # the lease issued, while not evicted
    active: set[str] = set()  # counted in the budget
    last: dict[str, int] = {}
    by_minute: dict[int, list[str]] = {}
    for ts, model, _ in events:
        firsts = by_minute.setdefault(math.floor(ts / 60.0), [])
        if model not in firsts:
            firsts.append(model)
    cold = 0

    def admit(model: str, now: int) -> bool:
        if sizes[model] > capacity:
            return False
        while sum(sizes[m] for m in active) + sizes[model] > capacity:
            victim = min((last[m], m) for m in active if m != model)[1]
            active.discard(victim)
            del lease[victim]
        active.add(model)
        return True

    for minute in range(0, max(by_minute) + 2):
        now = minute + 1
        loaded_now = {m for m, (s, e) in lease.items() if s <= minute < e}
        for model in by_minute.get(minute, []):
            if model not in loaded_now:
                cold += 1
            last[model] = minute
            new = hybrid.on_request(model, minute)
            if new is None:
                continue
            active.discard(model)
            lease.pop(model, None)
            start = max(new.start, now)
            if start > now or admit(model, minute):
                lease[model] = (start, new.end)
        for model in [m for m, (s, e) in lease.items() if e <= now]:
            active.discard(model)
            del lease[model]
        for model in sorted(m for m, (s, _) in lease.items() if s == now and m not in active):
            if not admit(model, minute):
                del lease[model]
    return cold


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=traces, sizes=sizes_st, capacity=st.integers(1, 30).map(float))
def test_hybrid_lru_equals_a_naive_loop(
    events: list[Event], sizes: dict[str, float], capacity: float
) -> None:
    budget = make_budget("hybrid+lru", capacity)
    for model, size in sizes.items():
        budget.set_size(model, size)
    commands, _ = run_engine(events, "hybrid+lru", budget)
    end = math.floor(events[-1][0] / 60.0)
    got = score(Usage.from_events(events, t0=0.0), commands, t0=0.0, end_minute=end)
    assert got.cold_starts == naive_hybrid_lru(events, sizes, capacity)
