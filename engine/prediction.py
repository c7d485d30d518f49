"""The prediction engine: P(a served model gets a request in a given minute).

One online river learner (a logistic regression) serves every model of a partition: it
learns from per-model features (the model's idle-time hazard, how long it has been idle,
its recent rates, how busy it has been, its hour of day), so what it learns on busy models
carries over to rare ones. For a model last invoked at minute ``L`` the learner gives the
probability of a request in minute ``L + 1 + k`` for every idle time ``k`` at once (a
*profile* over the idle bins); the scheduler turns that profile into leases.

Labels arrive late: a prediction made when minute ``t`` closes is about minute ``t + 1``
(or any later target minute) and is learned from when that minute has closed. The
:class:`PendingLabels` buffer holds such predictions until their horizon has passed.

The learner starts as the plain hazard estimator (probability = the model's smoothed
idle-time hazard) and learns corrections from there; until it has seen ``min_samples``
labels the policy does not trust it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from river import linear_model, metrics, optim

from engine.accuracy import Discrimination
from engine.analyzer import RATE_HALF_LIVES, Hazards, IdleBins, ModelUsage, _decay

FEATURES = (
    "hazard",
    "idle",
    "rate_10",
    "rate_60",
    "rate_360",
    "volume",
    "hour",
    "smooth",
    "regular",
)
_SCALE = 4.0  # features are logs divided by this, so that they stay near [-3, 3]
_EPS = 1e-5


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def features_one(
    usage: ModelUsage, hazards: tuple[float, float, float], target: int
) -> dict[str, float]:
    """Features of a request in minute ``target`` (known: everything before it);
    ``hazards`` are the model's sharp and smooth hazards in the idle bin of ``target``
    and its regularity (:meth:`engine.analyzer.Hazards.at`).

    >>> from engine.analyzer import IdleBins, ModelUsage
    >>> bins = IdleBins(exact=10, horizon=40)
    >>> u = ModelUsage(bins, first=0)
    >>> _ = u.record(0)
    >>> x = features_one(u, (0.5, 0.5, 0.0), target=1)
    >>> x["hazard"], x["smooth"], round(x["idle"], 3)
    (0.0, 0.0, 0.0)
    """
    sharp, smooth, regularity = hazards
    idle = max(target - usage.last - 1, 0)
    x = {"hazard": _logit(sharp) / _SCALE, "idle": math.log1p(idle) / _SCALE}
    x["smooth"] = _logit(smooth) / _SCALE
    x["regular"] = regularity * x["hazard"]
    rates = usage.rates_at(usage.last)
    for name, rate, half_life in zip(FEATURES[2:5], rates, RATE_HALF_LIVES, strict=True):
        x[name] = math.log(rate * _decay(half_life, idle) + 1e-4) / _SCALE
    x["volume"] = math.log1p(usage.minutes) / _SCALE
    x["hour"] = math.log(usage.hour_share(target))
    return x


class ProfileBasis:
    """The parts of a profile that depend only on the bin layout (computed once)."""

    def __init__(self, bins: IdleBins) -> None:
        self.bins = bins
        mids = bins.mids
        self.idle = np.log1p(mids) / _SCALE
        self.decays = [np.exp(-math.log(2.0) * mids / hl) for hl in RATE_HALF_LIVES]
        self.offsets = np.floor(mids).astype(np.int64) + 1  # target minus last invoked minute


def _logits(p: np.ndarray) -> np.ndarray:
    z = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(z / (1.0 - z))


def profile(
    usage: ModelUsage,
    hazards: Hazards,
    weights: Mapping[str, float],
    intercept: float,
    basis: ProfileBasis,
) -> np.ndarray:
    """P(request in minute ``last + 1 + k``) for ``k`` in each idle bin (bin middles).

    The vectorised twin of ``predict_one(features_one(...))``.
    """
    w_sharp = weights.get("hazard", 0.0) + hazards.regularity * weights.get("regular", 0.0)
    logit = _logits(hazards.sharp) * (w_sharp / _SCALE)
    w_smooth = weights.get("smooth", 0.0)
    if w_smooth:
        logit += _logits(hazards.smooth) * (w_smooth / _SCALE)
    logit += basis.idle * weights.get("idle", 0.0)
    rates = usage.rates_at(usage.last)
    for name, rate, decay in zip(FEATURES[2:5], rates, basis.decays, strict=True):
        w = weights.get(name, 0.0)
        if w:
            logit += np.log(rate * decay + 1e-4) * (w / _SCALE)
    logit += intercept + weights.get("volume", 0.0) * math.log1p(usage.minutes) / _SCALE
    w_hour = weights.get("hour", 0.0)
    if w_hour and usage.last - usage.first >= 1440:
        hours = ((usage.last + basis.offsets) % 1440) // 60
        share = 24.0 * (np.asarray(usage.hours)[hours] + 0.5) / (usage.minutes + 12.0)
        logit += np.log(share) * w_hour
    return 1.0 / (1.0 + np.exp(-logit))


@dataclass(slots=True)
class Pending:
    """A prediction waiting for its label."""

    target: int
    model_id: str
    x: dict[str, float]
    p: float


class PendingLabels:
    """Predictions waiting for the minute they are about to close (bounded, FIFO).

    >>> buf = PendingLabels(max_size=2)
    >>> for t in (5, 6, 7):
    ...     buf.push(Pending(t, "m", {}, 0.5))
    >>> buf.dropped, [p.target for p in buf.due(6)], len(buf)
    (1, [6], 1)
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self.dropped = 0
        self._items: deque[Pending] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Pending) -> None:
        if len(self._items) >= self.max_size:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)

    def due(self, minute: int) -> Iterator[Pending]:
        """Pop every prediction whose target minute is ``minute`` or earlier."""
        items = self._items
        while items and items[0].target <= minute:
            yield items.popleft()


@dataclass(slots=True)
class Resolved:
    """A prediction and what happened."""

    model_id: str
    p: float
    y: bool


class PredictionEngine:
    """The online learner, its delayed-label buffer and its running scores.

    >>> from engine.analyzer import UsagePatternAnalyzer
    >>> a = UsagePatternAnalyzer()
    >>> eng = PredictionEngine(a.bins)
    >>> u = a.update("m", 0)
    >>> eng.ask("m", u, a.hazards("m").at(0), target=1)  # a prediction about minute 1
    >>> [(r.model_id, r.y) for r in eng.resolve(1, {"m": 3})]  # minute 1 closed: it came
    [('m', True)]
    >>> eng.samples
    1
    """

    def __init__(
        self,
        bins: IdleBins,
        *,
        learning_rate: float = 0.05,
        l2: float = 0.0,
        averaging: float = 0.01,
        min_samples: int = 2000,
        max_pending: int = 100_000,
    ) -> None:
        self.learner = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate
        )
        self._seed()
        self.basis = ProfileBasis(bins)
        self.min_samples = min_samples
        self.pending = PendingLabels(max_pending)
        self.samples = 0
        self.positives = 0
        self.log_loss = metrics.LogLoss()
        self.brier = 0.0
        self.discrimination = Discrimination()
        self.averaging = averaging
        self._weights: dict[str, float] = self.learner.weights
        self._intercept = float(self.learner.intercept)

    def _seed(self) -> None:
        # Start as the plain hazard estimator: logit(p) = logit(hazard).
        self.learner._weights["hazard"] = _SCALE

    @property
    def trusted(self) -> bool:
        return self.samples >= self.min_samples

    @property
    def weights(self) -> dict[str, float]:
        """The weights decisions use: a running average of the learner's (its SGD steps
        are noisy; the average is what it has learned)."""
        return dict(self._weights)

    @property
    def intercept(self) -> float:
        return self._intercept

    def predict_one(self, x: Mapping[str, float]) -> float:
        w = self._weights
        return _sigmoid(self._intercept + sum(w.get(k, 0.0) * v for k, v in x.items()))

    def profile(self, usage: ModelUsage, hazards: Hazards) -> np.ndarray:
        return profile(usage, hazards, self._weights, self._intercept, self.basis)

    def ask(
        self,
        model_id: str,
        usage: ModelUsage,
        hazards: tuple[float, float, float],
        target: int,
    ) -> None:
        """Predict a request of ``model_id`` in minute ``target`` (``hazards``: its idle-time
        hazards there, see :func:`features_one`) and wait for the label."""
        x = features_one(usage, hazards, target)
        self.pending.push(Pending(target, model_id, x, self.predict_one(x)))

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restored from a checkpoint; one written before the learner's ranking was kept
        starts it empty."""
        self.__dict__.update(state)
        if "discrimination" not in state:
            self.discrimination = Discrimination()

    def resolve(self, minute: int, counts: Mapping[str, int]) -> list[Resolved]:
        """Learn from every prediction whose target minute has closed.

        ``counts`` are the requests of ``minute``; a target before ``minute`` that is
        still pending had no request (its minute closed empty).
        """
        out: list[Resolved] = []
        learner = self.learner
        for item in self.pending.due(minute):
            y = item.target == minute and counts.get(item.model_id, 0) > 0
            learner.learn_one(item.x, y)
            self.samples += 1
            self.positives += y
            self.log_loss.update(y, item.p)
            self.brier += (float(y) - item.p) ** 2
            self.discrimination.add(item.p, y)
            out.append(Resolved(item.model_id, item.p, y))
        if out:
            a = self.averaging
            new, old = learner.weights, self._weights
            self._weights = {
                k: (1.0 - a) * old.get(k, 0.0) + a * new.get(k, 0.0)
                for k in sorted(new.keys() | old.keys())
            }
            self._intercept = (1.0 - a) * self._intercept + a * float(learner.intercept)
        return out

    @property
    def brier_score(self) -> float:
        return self.brier / self.samples if self.samples else 0.0
