"""The performance predictor: how long a served model takes to load.

Metric events (``name="load_time_seconds"``) teach it online. Each served model has an
exponentially weighted mean and variance of its load times; a model with few or no
measurements borrows from the pooled estimate of every model (shrinkage), and before any
measurement at all the configured default is used. Every prediction is scored against
the measurement that follows it (mean absolute error, overall and per model), so the
predicted-vs-actual error can be watched.

The scheduler asks for a *planning* load time: the mean plus ``spread`` standard
deviations, so that a slow load still finishes in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from river import metrics, stats

LOAD_TIME_METRIC = "load_time_seconds"


@dataclass(slots=True)
class LoadTimes:
    """Load-time statistics of one served model (bounded: a handful of numbers)."""

    mean: stats.EWMean
    var: stats.EWVar
    n: int = 0
    abs_error: float = 0.0  # exponentially weighted |predicted - actual|
    last: float | None = field(default=None)


class PerformancePredictor:
    """Online load-time predictor per served model.

    >>> pp = PerformancePredictor(default_seconds=30.0)
    >>> pp.predict_one("m")  # nothing measured yet
    30.0
    >>> for seconds in (10.0, 12.0, 11.0, 10.0, 12.0, 11.0):
    ...     pp.learn_one("m", seconds)
    >>> 10.0 < pp.predict_one("m") < 13.0
    True
    >>> pp.n_measurements
    6
    """

    def __init__(
        self,
        default_seconds: float = 20.0,
        *,
        fading: float = 0.2,
        prior_weight: float = 2.0,
        spread: float = 1.0,
        max_seconds: float = 3600.0,
    ) -> None:
        if default_seconds < 0:
            raise ValueError("default_seconds must not be negative")
        self.default_seconds = default_seconds
        self.fading = fading
        self.prior_weight = prior_weight
        self.spread = spread
        self.max_seconds = max_seconds
        self.pooled = stats.EWMean(fading_factor=0.05)
        self.n_measurements = 0
        self.mae = metrics.MAE()
        self._models: dict[str, LoadTimes] = {}

    def _pooled_mean(self) -> float:
        return self.pooled.get() if self.n_measurements else self.default_seconds

    def predict_one(self, model_id: str) -> float:
        """Planning load time of ``model_id`` in seconds."""
        lt = self._models.get(model_id)
        prior = self._pooled_mean()
        if lt is None or lt.n == 0:
            return prior
        w = lt.n / (lt.n + self.prior_weight)
        mean = w * lt.mean.get() + (1.0 - w) * prior
        std = math.sqrt(max(lt.var.get(), 0.0)) if lt.n > 1 else 0.0
        return min(mean + self.spread * std, self.max_seconds)

    def learn_one(self, model_id: str, seconds: float) -> None:
        """One measured load of ``model_id`` (seconds); invalid values are ignored."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        seconds = min(seconds, self.max_seconds)
        predicted = self.predict_one(model_id)
        self.mae.update(seconds, predicted)
        lt = self._models.get(model_id)
        if lt is None:
            lt = self._models[model_id] = LoadTimes(
                stats.EWMean(fading_factor=self.fading), stats.EWVar(fading_factor=self.fading)
            )
        error = abs(predicted - seconds)
        lt.abs_error = error if lt.n == 0 else 0.8 * lt.abs_error + 0.2 * error
        lt.mean.update(seconds)
        lt.var.update(seconds)
        lt.n += 1
        lt.last = seconds
        self.pooled.update(seconds)
        self.n_measurements += 1

    def error_of(self, model_id: str) -> float | None:
        """Recent mean absolute error of the predictions for ``model_id`` (seconds)."""
        lt = self._models.get(model_id)
        return None if lt is None or lt.n == 0 else lt.abs_error

    def forget(self, model_id: str) -> None:
        self._models.pop(model_id, None)

    def __len__(self) -> int:
        return len(self._models)
