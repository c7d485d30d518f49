"""Health checks and the score: thresholds, not-applicable checks, hysteresis."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from engine.healthscore import (
    CHECKS,
    WEIGHTS,
    CheckResult,
    HealthThresholds,
    Observations,
    degraded,
    evaluate,
    score,
)

HEALTHY = Observations(
    seconds_since_usage=1.0,
    usage_events_in_window=5000,
    dead_letters_in_window=0,
    precision=0.9,
    recall=0.9,
    discrimination=0.9,
    decision_latency_p95=0.01,
    queue_depth=0,
    queue_capacity=100,
    budget_use=0.5,
    drift_firing=0,
)


def by_name(obs: Observations, t: HealthThresholds | None = None) -> dict[str, CheckResult]:
    return {r.name: r for r in evaluate(obs, t or HealthThresholds())}


def test_a_healthy_worker_scores_one() -> None:
    results = evaluate(HEALTHY)
    assert [r.name for r in results] == list(CHECKS)
    assert all(r.status == "ok" for r in results)
    assert score(results) == 1.0 and degraded(1.0).status == "ok"


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"seconds_since_usage": 301.0}, "stale_data"),
        ({"usage_events_in_window": 999}, "insufficient_volume"),
        ({"discrimination": 0.69}, "low_accuracy"),
        ({"discrimination": 0.5}, "low_accuracy"),
        ({"decision_latency_p95": 0.51}, "high_decision_latency"),
        ({"queue_depth": 100}, "queue_overflow"),
        ({"queue_overflows": 1}, "queue_overflow"),
        ({"queue_full": True}, "queue_overflow"),
        ({"budget_use": 1.0}, "budget_exhausted"),
        ({"drift_firing": 1}, "drift"),
        ({"dead_letters_in_window": 100}, "dead_letter_burst"),
        ({"anomalies_active": 2}, "metric_anomaly"),
    ],
)
def test_each_seed_threshold_fails_its_check(change: dict[str, Any], check: str) -> None:
    from dataclasses import replace

    obs = replace(HEALTHY, **change)
    if check == "queue_overflow" and "queue_depth" in change:
        obs = replace(obs, queue_full=True)
    failing = [r.name for r in evaluate(obs) if r.failing]
    assert failing == [check]
    expected = 1 - WEIGHTS[check]
    assert score(evaluate(obs)) == pytest.approx(expected)
    assert (degraded(score(evaluate(obs))).status == "failing") == (expected < 0.8)


def test_heavy_checks_alone_degrade_light_ones_need_company() -> None:
    heavy = [c for c, w in WEIGHTS.items() if w >= 0.2]
    light = [c for c, w in WEIGHTS.items() if w < 0.2]
    assert {"stale_data", "low_accuracy", "high_decision_latency"} <= set(heavy)
    assert all(1 - WEIGHTS[c] < 0.8 for c in heavy)
    assert all(1 - WEIGHTS[c] >= 0.8 for c in light)
    pairs = itertools.combinations(light, 2)
    assert all((1 - WEIGHTS[a]) * (1 - WEIGHTS[b]) < 0.8 for a, b in pairs)


def test_without_the_components_the_checks_do_not_apply() -> None:
    bare = Observations(
        seconds_since_usage=1.0, usage_events_in_window=5000, dead_letters_in_window=0
    )
    status = {r.name: r.status for r in evaluate(bare)}
    for check in (
        "low_accuracy",
        "high_decision_latency",
        "queue_overflow",
        "budget_exhausted",
        "drift",
    ):
        assert status[check] == "not_applicable"
    assert score(evaluate(bare)) == 1.0
    no_minimum = HealthThresholds(min_volume_events=0)
    assert by_name(bare, no_minimum)["insufficient_volume"].status == "not_applicable"


def test_hysteresis_a_failing_value_clears_only_past_the_margin() -> None:
    from dataclasses import replace

    t = HealthThresholds(decision_latency_p95_max_seconds=0.5, hysteresis=0.1)
    near = by_name(replace(HEALTHY, decision_latency_p95=0.47), t)["high_decision_latency"]
    far = by_name(replace(HEALTHY, decision_latency_p95=0.44), t)["high_decision_latency"]
    assert (near.status, near.clear) == ("ok", False)
    assert (far.status, far.clear) == ("ok", True)
    low = by_name(replace(HEALTHY, discrimination=0.74), t)["low_accuracy"]
    assert (low.status, low.clear) == ("ok", False)
    assert degraded(0.85).clear is False and degraded(0.9).clear is True
