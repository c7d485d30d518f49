"""Operator controls and bounds on the engine: pause, release everything, tracked-model cap."""

from __future__ import annotations

import tracemalloc

from engine.core import WarmupEngine
from engine.policies import FixedKeepAlive, HybridHistogram


def test_a_paused_engine_learns_but_issues_no_warm_lease() -> None:
    engine = WarmupEngine(HybridHistogram())
    engine.paused = True
    out = [c for minute in range(0, 600, 5) for c in engine.observe("m", minute * 60.0)]
    assert out == []
    assert engine.stats.suppressed_warm > 0
    assert engine.stats.requests == 120
    engine.paused = False
    resumed = engine.observe("m", 600 * 60.0)
    assert [c.action for c in resumed] == ["warm"]


def test_release_all_lets_go_of_warm_models_once() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    for model_id in ("a", "b", "c"):
        engine.observe(model_id, 60.0)
    released = engine.release_all()
    assert sorted((c.model_id, c.action, c.start, c.end) for c in released) == [
        ("a", "release", 60.0, 60.0),
        ("b", "release", 60.0, 60.0),
        ("c", "release", 60.0, 60.0),
    ]
    assert engine.release_all() == []  # nothing warm any more
    assert WarmupEngine(FixedKeepAlive(10)).release_all() == []  # nothing seen yet


def test_a_flood_of_new_models_keeps_memory_bounded() -> None:
    engine = WarmupEngine(HybridHistogram(), max_models=1000)
    for i in range(5000):  # warm up: the engine and the policy at their cap
        engine.observe(f"model-{i}", 60.0 * (i // 100))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000, 50_000):
        engine.observe(f"model-{i}", 60.0 * (i // 100))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(engine.last_seen) == 1000
    assert len(engine.leases) <= 1000
    assert engine.stats.capped_models == 49_000
    assert grown < 2_000_000, f"memory grew by {grown} bytes under a flood of new models"


def test_recently_seen_models_survive_the_cap() -> None:
    engine = WarmupEngine(FixedKeepAlive(10), max_models=3)
    for minute, model_id in enumerate(["a", "b", "c", "a", "d"]):
        engine.observe(model_id, 60.0 * minute)
    assert list(engine.last_seen) == ["c", "a", "d"]  # b was the least recently seen
