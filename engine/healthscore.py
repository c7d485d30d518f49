"""Health checks of a worker and the overall health score.

Each check compares one observation with its threshold and says ``ok``, ``failing`` or
``not_applicable`` (the policy has no such component, or there is nothing to judge yet).
The score is the product of ``1 - weight`` over the failing checks: 1.0 when all is well,
below 0.8 as soon as one heavy check fails (stale data, low accuracy, slow decisions, a
full queue, an exhausted budget) or two light ones do.

``low_accuracy`` judges the learner's *discrimination*: the area under the ROC curve of its
probabilities that a minute gets a request (:class:`engine.accuracy.Discrimination`). It
is 0.5 for a learner no better than chance (broken features, shuffled labels) and near 1
for one that tells the minutes that will be used from those that will not. Precision and
recall of warm decisions are reported alongside but not judged: a healthy keep-alive
wastes most of its loaded minutes on rarely used models by design.

Each check also says when a failing condition counts as *clear*: its value must be back
past the threshold by the hysteresis margin, so that a value hovering at the threshold
does not flap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "failing", "not_applicable"]


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Thresholds of the checks; the defaults are the seed values of the design."""

    stale_after_seconds: float = 300.0
    min_volume_events: int = 1000
    accuracy_min: float = 0.7
    decision_latency_p95_max_seconds: float = 0.5
    budget_use_max: float = 0.99
    dead_letter_burst: int = 100
    score_min: float = 0.8
    hysteresis: float = 0.1


#: How much a failing check costs the score.
WEIGHTS: dict[str, float] = {
    "stale_data": 0.5,
    "insufficient_volume": 0.15,
    "low_accuracy": 0.25,
    "high_decision_latency": 0.25,
    "queue_overflow": 0.25,
    "budget_exhausted": 0.25,
    "drift": 0.15,
    "dead_letter_burst": 0.15,
    "metric_anomaly": 0.1,
}

CHECKS = tuple(WEIGHTS)

SEVERITY: dict[str, str] = {
    "stale_data": "warning",
    "insufficient_volume": "info",
    "low_accuracy": "warning",
    "high_decision_latency": "warning",
    "queue_overflow": "critical",
    "budget_exhausted": "warning",
    "drift": "warning",
    "dead_letter_burst": "critical",
    "metric_anomaly": "warning",
}


@dataclass(frozen=True, slots=True)
class Observations:
    """What a worker sees at one check. ``None``: the policy has no such component."""

    seconds_since_usage: float
    usage_events_in_window: float
    dead_letters_in_window: int
    precision: float | None = None
    recall: float | None = None
    discrimination: float | None = None  # the learner's ranking (AUC); judged by low_accuracy
    decision_latency_p95: float | None = None
    queue_depth: int | None = None
    queue_capacity: int | None = None
    queue_full: bool = False
    queue_overflows: int = 0  # items refused or evicted within the overflow window
    budget_use: float | None = None
    drift_firing: int | None = None
    anomalies_active: int = 0


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    value: float | None
    threshold: float | None
    summary: str
    clear: bool = True  # a failing alert may resolve (past the hysteresis margin)

    @property
    def failing(self) -> bool:
        return self.status == "failing"

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.name, "warning")


def _above(name: str, value: float, limit: float, h: float, summary: str) -> CheckResult:
    """Fails when ``value > limit``; clear again below ``limit * (1 - h)``."""
    status: Status = "failing" if value > limit else "ok"
    return CheckResult(name, status, value, limit, summary, clear=value <= limit * (1 - h))


def _below(name: str, value: float, limit: float, h: float, summary: str) -> CheckResult:
    """Fails when ``value < limit``; clear again above ``limit * (1 + h)``."""
    status: Status = "failing" if value < limit else "ok"
    return CheckResult(name, status, value, limit, summary, clear=value >= limit * (1 + h))


def _na(name: str, why: str) -> CheckResult:
    return CheckResult(name, "not_applicable", None, None, why)


def evaluate(obs: Observations, t: HealthThresholds = HealthThresholds()) -> list[CheckResult]:
    """Every check on one set of observations.

    >>> results = evaluate(Observations(400.0, 50, 0, discrimination=0.55))
    >>> [(r.name, r.status) for r in results if r.status != "ok"]  # doctest: +NORMALIZE_WHITESPACE
    [('stale_data', 'failing'), ('insufficient_volume', 'failing'), ('low_accuracy', 'failing'),
     ('high_decision_latency', 'not_applicable'), ('queue_overflow', 'not_applicable'),
     ('budget_exhausted', 'not_applicable'), ('drift', 'not_applicable')]
    """
    h = t.hysteresis
    return [
        _stale(obs, t),
        _volume(obs, t, h),
        _accuracy(obs, t, h),
        _decision_latency(obs, t, h),
        _queue(obs, h),
        _budget(obs, t, h),
        _drift(obs),
        _dead_letter_burst(obs, t),
        _metric_anomaly(obs),
    ]


def _stale(obs: Observations, t: HealthThresholds) -> CheckResult:
    return _above(
        "stale_data",
        obs.seconds_since_usage,
        t.stale_after_seconds,
        0.0,
        f"no usage events for {obs.seconds_since_usage:.0f}s",
    )


def _volume(obs: Observations, t: HealthThresholds, h: float) -> CheckResult:
    if t.min_volume_events <= 0:
        return _na("insufficient_volume", "no minimum volume set")
    return _below(
        "insufficient_volume",
        obs.usage_events_in_window,
        t.min_volume_events,
        h,
        f"{obs.usage_events_in_window:.0f} usage events in the volume window",
    )


def _accuracy(obs: Observations, t: HealthThresholds, h: float) -> CheckResult:
    if obs.discrimination is None:
        return _na("low_accuracy", "no learner, or too few resolved predictions to judge")
    return _below(
        "low_accuracy",
        obs.discrimination,
        t.accuracy_min,
        h,
        f"learner ranking (AUC) {obs.discrimination:.2f}; 0.5 is chance",
    )


def _decision_latency(obs: Observations, t: HealthThresholds, h: float) -> CheckResult:
    p95 = obs.decision_latency_p95
    if p95 is None:
        return _na("high_decision_latency", "no decisions in the window")
    return _above(
        "high_decision_latency",
        p95,
        t.decision_latency_p95_max_seconds,
        h,
        f"decision latency p95 {p95 * 1000:.0f} ms",
    )


def _budget(obs: Observations, t: HealthThresholds, h: float) -> CheckResult:
    if obs.budget_use is None:
        return _na("budget_exhausted", "the policy has no resource budget")
    return _above(
        "budget_exhausted",
        obs.budget_use,
        t.budget_use_max,
        h,
        f"{obs.budget_use:.0%} of the resource budget in use",
    )


def _drift(obs: Observations) -> CheckResult:
    if obs.drift_firing is None:
        return _na("drift", "the policy does not detect drift")
    return _above("drift", obs.drift_firing, 0, 0.0, f"{obs.drift_firing} drifting")


def _dead_letter_burst(obs: Observations, t: HealthThresholds) -> CheckResult:
    burst = obs.dead_letters_in_window
    limit = t.dead_letter_burst
    return CheckResult(
        "dead_letter_burst",
        "failing" if burst >= limit else "ok",
        float(burst),
        float(limit),
        f"{burst} dead letters in the burst window",
    )


def _metric_anomaly(obs: Observations) -> CheckResult:
    return _above(
        "metric_anomaly",
        obs.anomalies_active,
        0,
        0.0,
        f"{obs.anomalies_active} anomalous load-time or latency series",
    )


def _queue(obs: Observations, h: float) -> CheckResult:
    if obs.queue_depth is None:
        return _na("queue_overflow", "the policy has no warmup queue")
    failing = obs.queue_full or obs.queue_overflows > 0
    summary = (
        f"{obs.queue_overflows} warmups overflowed, "
        f"{obs.queue_depth} of {obs.queue_capacity or 0} queued"
    )
    return CheckResult(
        "queue_overflow",
        "failing" if failing else "ok",
        float(obs.queue_overflows),
        0.0,
        summary,
    )


def score(results: Iterable[CheckResult], weights: dict[str, float] = WEIGHTS) -> float:
    """Overall health in [0, 1]: the product of ``1 - weight`` over failing checks.

    >>> ok = CheckResult("stale_data", "ok", 1.0, 300.0, "")
    >>> stale = CheckResult("stale_data", "failing", 400.0, 300.0, "")
    >>> light = CheckResult("drift", "failing", 1.0, 0.0, "")
    >>> score([ok]), score([stale]), score([light]), round(score([light, light]), 4)
    (1.0, 0.5, 0.85, 0.7225)
    """
    value = 1.0
    for r in results:
        if r.failing:
            value *= 1.0 - weights.get(r.name, 0.1)
    return max(0.0, min(1.0, value))


def degraded(value: float, t: HealthThresholds = HealthThresholds()) -> CheckResult:
    """The ``health_degraded`` condition on a score.

    >>> degraded(0.7).status, degraded(0.85).status, degraded(0.85).clear
    ('failing', 'ok', False)
    """
    if math.isnan(value):
        return _na("health_degraded", "no score")
    return _below("health_degraded", value, t.score_min, t.hysteresis, f"health score {value:.2f}")
