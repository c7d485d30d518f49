"""Metric state follows the served models usage shows: floods of unknown ids stay bounded."""

from __future__ import annotations

from engine.anomaly import MetricAnomalies
from engine.core import WarmupEngine
from engine.warmcast import WarmcastPolicy


def test_unknown_model_ids_leave_metric_state_bounded() -> None:
    policy = WarmcastPolicy()
    engine = WarmupEngine(policy, max_untracked_metric_models=100)
    engine.observe("served", 60.0)
    for _ in range(20):
        engine.observe_metric("served", "load_time_seconds", 90.0, 60.0)
    engine.observe_metric("served", "memory_mb", 2048.0, 60.0)
    dropped = []
    for i in range(50_000):
        gone = engine.observe_metric(f"unknown-{i}", "load_time_seconds", 5.0, 60.0)
        engine.observe_metric(f"unknown-{i}", "memory_bytes", 2.0**30, 60.0)
        if gone is not None:
            dropped.append(gone)
    assert len(policy.performance) <= 101 and policy.resources.known_models() <= 101
    assert policy.metric_models() <= 202
    assert engine.stats.untracked_metric_models == len(dropped) == 50_000 - 100
    assert dropped[:2] == ["unknown-0", "unknown-1"]  # the least recently measured first
    # the served model keeps what it learned
    assert policy.performance.error_of("served") is not None
    assert policy.resources.memory_of("served") == 2048.0


def test_a_model_measured_before_its_first_request_keeps_its_load_time() -> None:
    policy = WarmcastPolicy()
    engine = WarmupEngine(policy, max_untracked_metric_models=2)
    engine.observe_metric("early", "load_time_seconds", 120.0, 0.0)  # its load, then usage
    engine.observe("early", 10.0)
    for i in range(10):  # other untracked models push it out of the allowance ...
        engine.observe_metric(f"other-{i}", "load_time_seconds", 1.0, 20.0)
    assert policy.performance.error_of("early") is not None  # ... but it is tracked now
    assert len(policy.performance) == 3


def test_a_policy_without_forget_metrics_is_told_to_forget() -> None:
    class Forgetful:
        name, version = "forgetful", "forgetful/1"

        def __init__(self) -> None:
            self.forgotten: list[str] = []

        def on_request(self, model_id: str, minute: int) -> None:
            return None

        def on_minute_closed(self, minute: int, counts: object) -> list[object]:
            return []

        def next_review(self) -> None:
            return None

        def forget(self, model_id: str) -> None:
            self.forgotten.append(model_id)

    policy = Forgetful()
    engine = WarmupEngine(policy, max_untracked_metric_models=1)
    assert engine.observe_metric("a", "x", 1.0, 0.0) is None
    assert engine.observe_metric("b", "x", 1.0, 0.0) == "a"
    assert engine.observe_metric("b", "x", 1.0, 0.0) is None  # known: nothing let go
    assert policy.forgotten == ["a"]


def test_anomaly_learners_forget_every_watched_metric_of_a_model() -> None:
    watch = MetricAnomalies(("load_time", "latency"))
    for i in range(1000):
        watch.observe(f"m{i}", "load_time", 10.0, 0.0)
        watch.observe(f"m{i}", "latency", 0.1, 0.0)
    watch.forget("m3")
    assert len(watch.learners) == 1998 and ("m3", "load_time") not in watch.learners
