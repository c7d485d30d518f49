"""Anomalous load times and latencies of served models, learned online.

Each (served model, metric) series has its own learner: a robust z-score of the log of the
value (distance from the running median in units of the running median absolute
deviation, both river quantile statistics), wrapped in river's
:class:`~river.anomaly.ThresholdFilter` so that a value flagged as anomalous is not learned:
a burst of slow loads stays anomalous instead of becoming the new normal.

A series is *anomalous* from an anomalous value until the next normal one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from river import anomaly, stats
from river.base import SupervisedAnomalyDetector

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


class RobustZScore(SupervisedAnomalyDetector):
    """``|log y - median| / max(1.4826 * MAD, min_scale)``, learned one value at a time.

    ``x`` is ignored (a univariate learner, like river's ``GaussianScorer``). Until
    ``warmup`` values have been learned every score is 0.

    >>> z = RobustZScore(warmup=5)
    >>> for y in (10.0, 11.0, 9.5, 10.5, 10.2, 9.8):
    ...     z.learn_one({}, y)
    >>> z.score_one({}, 10.1) < 1, z.score_one({}, 40.0) > 10
    (True, True)
    """

    def __init__(self, warmup: int = 20, min_scale: float = 0.05) -> None:
        self.warmup = warmup
        self.min_scale = min_scale
        self.median = stats.Quantile(0.5)
        self.mad = stats.Quantile(0.5)
        self.n = 0

    @staticmethod
    def _log(y: Any) -> float:
        return math.log(max(float(y), 1e-9))

    def learn_one(self, x: dict[Any, Any], y: Any) -> None:
        v = self._log(y)
        center = self.median.get()
        if center is not None:
            self.mad.update(abs(v - center))
        self.median.update(v)
        self.n += 1

    def score_one(self, x: dict[Any, Any], y: Any) -> float:
        center = self.median.get()
        if self.n < self.warmup or center is None:
            return 0.0
        scale = max(_MAD_TO_SIGMA * (self.mad.get() or 0.0), self.min_scale)
        return abs(self._log(y) - center) / scale


@dataclass(frozen=True, slots=True)
class Anomaly:
    """The latest value of a series was anomalous."""

    model_id: str
    metric: str
    value: float
    score: float
    ts: float


class MetricAnomalies:
    """One filtered learner per (served model, metric); the series anomalous right now.

    >>> watch = MetricAnomalies(warmup=10, threshold=4.0)
    >>> for i in range(20):
    ...     _ = watch.observe("llama", "load_time", 20.0 + (i % 5) * 0.3, ts=i)
    >>> watch.observe("llama", "load_time", 95.0, ts=20) > 4, sorted(watch.active)
    (True, [('llama', 'load_time')])
    >>> watch.observe("llama", "load_time", 95.0, ts=21) > 4  # not learned as normal
    True
    >>> watch.observe("llama", "load_time", 20.4, ts=22) < 4, watch.active
    (True, {})
    >>> watch.observe("llama", "memory", 1e9, ts=23) is None  # not a watched metric
    True
    """

    def __init__(
        self,
        metrics: tuple[str, ...] = ("load_time", "latency"),
        *,
        threshold: float = 4.0,
        warmup: int = 20,
        min_scale: float = 0.05,
        max_series: int = 100_000,
    ) -> None:
        self.metrics = metrics
        self.threshold = threshold
        self.warmup = warmup
        self.min_scale = min_scale
        self.max_series = max_series
        self.learners: dict[tuple[str, str], anomaly.ThresholdFilter] = {}
        self.active: dict[tuple[str, str], Anomaly] = {}
        self.flagged = 0  # anomalous values seen

    def observe(self, model_id: str, metric: str, value: float, ts: float) -> float | None:
        """Score ``value`` then learn it unless it is anomalous; ``None`` if not watched."""
        if metric not in self.metrics:
            return None
        key = (model_id, metric)
        learner = self.learners.get(key)
        if learner is None:
            if len(self.learners) >= self.max_series:
                return None
            learner = self.learners[key] = anomaly.ThresholdFilter(
                RobustZScore(self.warmup, self.min_scale),
                threshold=self.threshold,
                protect_anomaly_detector=True,
            )
        score = float(learner.score_one({}, value))
        if score >= self.threshold:
            self.active[key] = Anomaly(model_id, metric, value, score, ts)
            self.flagged += 1
        else:
            self.active.pop(key, None)
        learner.learn_one({}, value)
        return score

    def of_model(self, model_id: str) -> list[Anomaly]:
        return [a for (m, _), a in self.active.items() if m == model_id]

    def forget(self, model_id: str) -> None:
        for metric in self.metrics:  # only watched metrics have learners
            key = (model_id, metric)
            self.learners.pop(key, None)
            self.active.pop(key, None)
