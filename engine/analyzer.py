"""Usage patterns of served models: idle times, rates, time of day, and who follows whom.

Everything here is an online statistic with bounded memory per served model, updated on
event time and read as features by the prediction engine:

- :class:`IdleBins`: the bin layout shared by every idle-time histogram (one-minute bins
  for the first hour, then geometric bins up to two weeks, then one open bin);
- :class:`ModelUsage`: one served model: invoked minutes, idle-time histogram with its
  exposure (how many minutes each bin was at risk), exponentially weighted rates over
  several half-lives, and an hour-of-day profile;
- :class:`UsagePatternAnalyzer`: all served models of a partition, plus the pooled
  idle-time histogram that new or rarely invoked models borrow from;
- :class:`CoOnsetTracker`: which served models tend to wake up shortly after another one
  wakes up (the cross-model signal that lets a model be warmed before its first request
  after a long idle time).

Minutes are event-time minutes of the engine's grid. "Invoked minute" means a minute with
at least one request.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

RATE_HALF_LIVES = (10.0, 60.0, 360.0)
"""Half-lives (minutes) of the exponentially weighted invoked-minute rates."""


class IdleBins:
    """Bins of idle time (``idle = t2 - t1 - 1`` minutes between two invoked minutes).

    One-minute bins below ``exact`` (a day: timers and daily jobs repeat to the minute),
    then bins growing by ``growth`` up to ``horizon``, then one open bin.

    >>> bins = IdleBins(exact=4, growth=2.0, horizon=32)
    >>> bins.starts.tolist(), bins.widths.tolist()
    ([0, 1, 2, 3, 4, 8, 16, 32], [1, 1, 1, 1, 4, 8, 16, 1])
    >>> bins.index(3), bins.index(9), bins.index(1000)
    (3, 5, 7)
    """

    def __init__(self, exact: int = 1440, growth: float = 1.15, horizon: int = 20160) -> None:
        if exact < 1 or growth <= 1.0 or horizon <= exact:
            raise ValueError("need exact >= 1, growth > 1 and horizon > exact")
        starts = list(range(exact))
        edge = float(exact)
        while int(edge) < horizon:
            starts.append(int(edge))
            edge = max(edge * growth, int(edge) + 1.0)
        starts.append(horizon)
        self.exact = exact
        self.horizon = horizon
        self.starts = np.asarray(starts, dtype=np.int64)
        widths = np.diff(self.starts, append=horizon + 1)
        self.widths = widths
        self.mids = self.starts + (widths - 1) / 2.0
        self.size = len(starts)
        self.start_list: list[int] = self.starts.tolist()
        self.end_list: list[int] = (self.starts + widths).tolist()
        # coarse groups of bins (a few minutes wide near 0, growing by a third): a model's
        # own idle times smoothed over them are the prior of its one-minute bins
        edges, edge = [], 0.0
        while int(edge) < horizon:
            edges.append(self.index(int(edge)))
            edge = max(edge * 1.33, int(edge) + 1.0, 4.0 if edge < 4 else 0.0)
        self.groups = np.unique(np.asarray(edges, dtype=np.int64))
        self.group_of = np.repeat(
            np.arange(len(self.groups)), np.diff(self.groups, append=self.size)
        )
        self.group_widths = np.add.reduceat(self.widths, self.groups)

    def group_average(self, per_bin: np.ndarray) -> np.ndarray:
        """A per-minute quantity of each bin averaged over each coarse group."""
        return np.add.reduceat(per_bin * self.widths, self.groups) / self.group_widths

    def index(self, idle: int) -> int:
        """The bin that holds ``idle``."""
        if idle < self.exact:
            return max(idle, 0)
        return int(np.searchsorted(self.starts, idle, side="right")) - 1

    def exposure(self, idle: int) -> np.ndarray:
        """Minutes at risk in each bin for one idle period of ``idle`` minutes.

        The minute that ends the period is at risk too (it is the event). The open last
        bin has no width limit.

        >>> IdleBins(exact=4, growth=2.0, horizon=32).exposure(40).tolist()
        [1, 1, 1, 1, 4, 8, 16, 9]
        """
        out = np.clip(idle - self.starts + 1, 0, self.widths)
        out[-1] = max(idle - self.horizon + 1, 0)
        return out

    def total_exposure(self, counts: np.ndarray, own: np.ndarray) -> np.ndarray:
        """The summed exposure of many idle periods, from their bin counts and ``own``
        (the exposure each period had in its own bin): a period ending in bin ``i`` was
        at risk through the whole width of every bin before ``i``.

        >>> bins = IdleBins(exact=4, growth=2.0, horizon=32)
        >>> counts, own = np.zeros(bins.size), np.zeros(bins.size)
        >>> for idle in (9, 2):
        ...     j, minutes = bins.own(idle)
        ...     counts[j] += 1
        ...     own[j] += minutes
        >>> (bins.total_exposure(counts, own) == bins.exposure(9) + bins.exposure(2)).all()
        np.True_
        """
        after = np.cumsum(counts[::-1])[::-1] - counts
        return self.widths * after + own

    def own(self, idle: int) -> tuple[int, int]:
        """The bin of ``idle`` and the minutes of that bin the period was at risk."""
        j = self.index(idle)
        return j, idle - int(self.starts[j]) + 1


class ModelUsage:
    """What is known about one served model's usage (bounded memory).

    The idle-time histogram is sparse (a dict of bin -> count): most models see only a
    few distinct idle times, and it can never hold more entries than there are bins.

    ``hazard`` is the per-minute probability of a request given the idle time so far:
    events over exposure in each bin, shrunk towards a ``prior`` hazard with the weight of
    ``prior_periods`` idle periods.

    >>> bins = IdleBins(exact=10, horizon=40)
    >>> u = ModelUsage(bins, first=0)
    >>> [u.record(minute) for minute in (0, 5, 10, 15)]  # idle times completed
    [None, 4, 4, 4]
    >>> u.periods, u.minutes
    (3, 4)
    >>> h = u.hazard(prior=np.zeros(bins.size), prior_periods=0.0)
    >>> h[3:6].tolist()
    [0.0, 1.0, 0.0]
    """

    __slots__ = (
        "bins",
        "counts",
        "first",
        "hours",
        "last",
        "minutes",
        "own",
        "periods",
        "rate_minute",
        "rates",
        "requests",
    )

    def __init__(self, bins: IdleBins, first: int) -> None:
        self.bins = bins
        self.first = first
        self.last = first - 1  # no invoked minute yet
        self.minutes = 0
        self.periods = 0
        self.requests = 0
        self.counts: dict[int, int] = {}
        self.own: dict[int, int] = {}  # exposure in their own bin, for bins wider than 1
        self.rates = [0.0] * len(RATE_HALF_LIVES)
        self.rate_minute = first
        self.hours = [0.0] * 24

    def record(self, minute: int) -> int | None:
        """Count ``minute`` as invoked; returns the idle period it completes, if any."""
        if minute <= self.last:
            return None
        idle: int | None = None
        if self.minutes:
            idle = minute - self.last - 1
            j, at_risk = self.bins.own(idle)
            self.counts[j] = self.counts.get(j, 0) + 1
            if j >= self.bins.exact:
                self.own[j] = self.own.get(j, 0) + at_risk
            self.periods += 1
        self._decay_rates(minute)
        self.rates = [r + 1.0 - b for r, b in zip(self.rates, _BASES, strict=True)]
        self.hours[(minute % 1440) // 60] += 1.0
        self.last = minute
        self.minutes += 1
        return idle

    def _decay_rates(self, minute: int) -> None:
        steps = minute - self.rate_minute
        if steps > 0:
            self.rates = [r * b**steps for r, b in zip(self.rates, _BASES, strict=True)]
            self.rate_minute = minute

    def rates_at(self, minute: int) -> list[float]:
        """The invoked-minute rates (share of minutes invoked) as known at ``minute``."""
        steps = max(minute - self.rate_minute, 0)
        return [r * b**steps for r, b in zip(self.rates, _BASES, strict=True)]

    def hazards(self, prior: np.ndarray, prior_periods: float) -> Hazards:
        """Per-minute request probability in each idle bin, two ways: one-minute bins
        shrunk towards ``prior`` (sharp: timers repeat to the minute) and coarse groups of
        bins shrunk towards ``prior`` (smooth: scattered idle times borrow from their
        neighbourhood); plus how regular the model is (share of its idle periods in its
        three most common bins)."""
        bins = self.bins
        counts = np.zeros(bins.size)
        own = np.zeros(bins.size)
        regularity = 0.0
        if self.counts:
            idx = np.fromiter(self.counts.keys(), np.int64, len(self.counts))
            n = np.fromiter(self.counts.values(), np.float64, len(self.counts))
            counts[idx] = n
            exact = idx < bins.exact
            own[idx[exact]] = n[exact]
            regularity = float(np.sort(n)[-3:].sum()) / self.periods
        for j, minutes in self.own.items():
            own[j] = minutes
        exposure = bins.total_exposure(counts, own)
        pseudo = prior_periods * bins.widths
        sharp = (counts + prior * pseudo) / np.maximum(exposure + pseudo, 1e-9)
        groups = bins.groups
        g_widths = bins.group_widths
        g_prior = bins.group_average(prior)
        g_pseudo = prior_periods * g_widths
        smooth = (np.add.reduceat(counts, groups) + g_prior * g_pseudo) / np.maximum(
            np.add.reduceat(exposure, groups) + g_pseudo, 1e-9
        )
        return Hazards(sharp, smooth[bins.group_of], regularity)

    def hazards_at(
        self, idle: int, prior: np.ndarray, group_prior: np.ndarray, prior_periods: float
    ) -> tuple[float, float, float]:
        """:meth:`hazards` in the bin of ``idle`` alone, without building arrays
        (``group_prior``: ``prior`` averaged over each coarse group)."""
        bins = self.bins
        j = bins.index(idle)
        g = int(bins.group_of[j])
        a = int(bins.groups[g])
        b = int(bins.groups[g + 1]) if g + 1 < len(bins.groups) else bins.size
        starts, exact = bins.start_list, bins.exact
        n_j = later = n_g = 0
        e_g = 0.0
        width_g = float(bins.group_widths[g])
        for i, c in self.counts.items():
            if i > j:
                later += c
            elif i == j:
                n_j = c
            if i >= b:
                e_g += c * width_g
            elif i >= a:
                n_g += c
                e_g += c * (starts[i] - starts[a]) + (c if i < exact else self.own[i])
        width = int(bins.widths[j])
        own = n_j if j < exact else self.own.get(j, 0)
        pseudo = prior_periods * width
        sharp = (n_j + float(prior[j]) * pseudo) / max(width * later + own + pseudo, 1e-9)
        g_pseudo = prior_periods * width_g
        smooth = (n_g + float(group_prior[g]) * g_pseudo) / max(e_g + g_pseudo, 1e-9)
        top = sorted(self.counts.values())[-3:]
        regularity = sum(top) / self.periods if self.periods else 0.0
        return sharp, smooth, regularity

    def hazard(self, prior: np.ndarray, prior_periods: float) -> np.ndarray:
        """The one-minute-bin hazard of :meth:`hazards`."""
        return self.hazards(prior, prior_periods).sharp

    def count_at(self, idle: int) -> int:
        """Idle periods seen in the bin of ``idle``."""
        return self.counts.get(self.bins.index(idle), 0)

    def hour_share(self, minute: int) -> float:
        """How much of this model's use falls in ``minute``'s hour of day, relative to an
        even spread (1.0 = average hour); 1.0 until a full day has been seen."""
        if self.last - self.first < 1440 or self.minutes == 0:
            return 1.0
        return 24.0 * (self.hours[(minute % 1440) // 60] + 0.5) / (self.minutes + 12.0)


@dataclass(frozen=True, slots=True)
class Hazards:
    """Idle-time hazards of one model (see :meth:`ModelUsage.hazards`)."""

    sharp: np.ndarray
    smooth: np.ndarray
    regularity: float

    def at(self, j: int) -> tuple[float, float, float]:
        return float(self.sharp[j]), float(self.smooth[j]), self.regularity


def _decay(half_life: float, steps: float) -> float:
    return math.exp(-math.log(2.0) * steps / half_life)


_BASES = [_decay(hl, 1) for hl in RATE_HALF_LIVES]


class UsagePatternAnalyzer:
    """Usage statistics of every served model of a partition.

    ``update(model_id, minute)`` records an invoked minute. Completed idle periods are
    pooled across models only when a minute closes (``close_minute``), so that what one
    model sees of the others never depends on the order of events within a minute.

    >>> a = UsagePatternAnalyzer()
    >>> for minute in (0, 1, 2):
    ...     _ = a.update("m", minute)
    ...     a.close_minute(minute)
    >>> a.usage("m").minutes, a.pooled_periods
    (3, 2)
    >>> round(float(a.pooled_hazard()[0]), 3)  # both idle periods were 0 minutes long
    0.667
    """

    def __init__(self, bins: IdleBins | None = None, prior_periods: float = 2.0) -> None:
        self.bins = bins or IdleBins()
        self.prior_periods = prior_periods
        self._models: dict[str, ModelUsage] = {}
        self._pool_counts = np.zeros(self.bins.size)
        self._pool_own = np.zeros(self.bins.size)
        self._pending_idles: list[int] = []
        self._pooled: np.ndarray | None = None
        self._pooled_groups: np.ndarray | None = None
        self.pooled_periods = 0

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def model_ids(self) -> Iterable[str]:
        return self._models.keys()

    def usage(self, model_id: str) -> ModelUsage:
        return self._models[model_id]

    def get(self, model_id: str) -> ModelUsage | None:
        return self._models.get(model_id)

    def update(self, model_id: str, minute: int) -> ModelUsage:
        usage = self._models.get(model_id)
        if usage is None:
            usage = self._models[model_id] = ModelUsage(self.bins, minute)
        idle = usage.record(minute)
        if idle is not None:
            self._pending_idles.append(idle)
        return usage

    def close_minute(self, minute: int) -> None:
        """Fold the idle periods completed in ``minute`` into the pooled histogram."""
        if not self._pending_idles:
            return
        for idle in self._pending_idles:
            j, at_risk = self.bins.own(idle)
            self._pool_counts[j] += 1.0
            self._pool_own[j] += at_risk
        self.pooled_periods += len(self._pending_idles)
        self._pending_idles.clear()
        self._pooled = None
        self._pooled_groups = None

    def pooled_hazard(self) -> np.ndarray:
        """Per-minute hazard of all models' idle periods together (the prior)."""
        if self._pooled is None:
            base = 1e-3
            exposure = self.bins.total_exposure(self._pool_counts, self._pool_own)
            self._pooled = (self._pool_counts + base * self.bins.widths) / (
                exposure + self.bins.widths
            )
        return self._pooled

    def hazard(self, model_id: str) -> np.ndarray:
        return self._models[model_id].hazard(self.pooled_hazard(), self.prior_periods)

    def hazards(self, model_id: str) -> Hazards:
        return self._models[model_id].hazards(self.pooled_hazard(), self.prior_periods)

    def hazards_at(self, model_id: str, idle: int) -> tuple[float, float, float]:
        """:meth:`hazards` of ``model_id`` in the bin of ``idle`` (sharp, smooth,
        regularity)."""
        pooled = self.pooled_hazard()
        if self._pooled_groups is None:
            self._pooled_groups = self.bins.group_average(pooled)
        usage = self._models[model_id]
        return usage.hazards_at(idle, pooled, self._pooled_groups, self.prior_periods)

    def forget(self, model_id: str) -> None:
        self._models.pop(model_id, None)


class CoOnsetTracker:
    """Learns which served models wake up within ``window`` minutes after another wakes up,
    and after how many minutes.

    An *onset* is an invoked minute after at least ``min_idle`` idle minutes (or a model's
    first invoked minute). For every onset of a follower, each model with an onset in the
    ``window`` minutes before it gets one more count towards that follower, at the lag
    between the two. A leader's table of followers is cut back to its ``max_followers``
    most counted whenever it reaches twice that size, so memory per model is bounded.

    ``followers(leader)`` gives ``(follower, p, first, last)``: ``p`` is the share of the
    leader's onsets that were followed by the follower's onset within the window (shrunk
    by ``shrink`` onsets), ``first`` and ``last`` the shortest and longest lag seen.

    >>> co = CoOnsetTracker(window=3, min_idle=5, shrink=0.0)
    >>> for day in range(4):  # "b" wakes up two minutes after "a", except on day 3
    ...     t = 100 * day
    ...     co.close_minute(t, ["a"])
    ...     co.close_minute(t + 2, ["b"] if day < 3 else [])
    >>> co.followers("a")
    [('b', 0.75, 2, 2)]
    >>> co.lag_shares("a", "b")
    [0.0, 0.75, 0.0]
    """

    def __init__(
        self,
        window: int = 10,
        min_idle: int = 10,
        max_followers: int = 24,
        shrink: float = 2.0,
    ) -> None:
        self.window = window
        self.min_idle = min_idle
        self.max_followers = max_followers
        self.shrink = shrink
        self._onsets: dict[str, int] = {}
        self._follow: dict[str, dict[str, list[float]]] = {}  # counts: total, then per lag
        self._recent: deque[tuple[int, list[str]]] = deque()

    def is_onset(self, idle: int | None) -> bool:
        """Whether an invoked minute after ``idle`` idle minutes (None: first) is an onset."""
        return idle is None or idle >= self.min_idle

    def close_minute(self, minute: int, onsets: list[str]) -> None:
        """Record the onsets of a closed minute (models in a deterministic order)."""
        recent = self._recent
        while recent and recent[0][0] < minute - self.window:
            recent.popleft()
        if not onsets:
            return
        latest: dict[str, int] = {}
        for t, models in recent:
            for leader in models:
                latest[leader] = t
        for leader in sorted(latest):
            table = self._follow.setdefault(leader, {})
            lag = minute - latest[leader]
            for follower in onsets:
                if follower != leader:
                    self._count(table, follower, lag)
        for model_id in onsets:
            self._onsets[model_id] = self._onsets.get(model_id, 0) + 1
        recent.append((minute, list(onsets)))

    def _count(self, table: dict[str, list[float]], follower: str, lag: int) -> None:
        counts = table.get(follower)
        if counts is None:
            counts = table[follower] = [0.0] * (self.window + 1)
        counts[0] += 1.0
        counts[lag] += 1.0
        if len(table) >= 2 * self.max_followers:
            keep = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))[: self.max_followers]
            table.clear()
            table.update(keep)

    def followers(self, leader: str) -> list[tuple[str, float, int, int]]:
        """Followers of ``leader``: the probability that each follows an onset, and the
        shortest and longest lag (minutes) it has followed at."""
        table = self._follow.get(leader)
        if not table:
            return []
        denom = max(self._onsets.get(leader, 0), 1) + self.shrink
        out = []
        for follower, counts in sorted(table.items()):
            lags = [d for d in range(1, len(counts)) if counts[d]]
            out.append((follower, min(counts[0] / denom, 1.0), lags[0], lags[-1]))
        return out

    def lag_shares(self, leader: str, follower: str) -> list[float]:
        """Share of the leader's onsets followed exactly ``d`` minutes later, ``d`` = 1.."""
        counts = self._follow.get(leader, {}).get(follower)
        if counts is None:
            return [0.0] * self.window
        denom = max(self._onsets.get(leader, 0), 1) + self.shrink
        return [min(c / denom, 1.0) for c in counts[1:]]

    def onsets(self, model_id: str) -> int:
        return self._onsets.get(model_id, 0)

    def forget(self, model_id: str) -> None:
        self._onsets.pop(model_id, None)
        self._follow.pop(model_id, None)
        for table in self._follow.values():
            table.pop(model_id, None)
