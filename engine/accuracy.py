"""Prediction accuracy of warm decisions, computed online from leases and requests.

A minute a served model was kept loaded is a positive decision; a minute with requests is
a positive outcome. Then, counted in model-minutes over every lease as it is replaced:

- **precision**: loaded minutes that got a request / loaded minutes
  (1 - precision is the share of memory time wasted);
- **recall**: invoked minutes that found the model loaded / invoked minutes
  (1 - recall is the cold-start share of invoked minutes).

The accounting follows the evaluation rules: a lease decided at minute ``t`` replaces the
previous one from minute ``t + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.lease import Lease


@dataclass(slots=True)
class AccuracyCounts:
    loaded_minutes: int = 0
    hits: int = 0
    invoked_minutes: int = 0

    @property
    def precision(self) -> float:
        return self.hits / self.loaded_minutes if self.loaded_minutes else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.invoked_minutes if self.invoked_minutes else 0.0

    @property
    def cold_starts(self) -> int:
        return self.invoked_minutes - self.hits

    @property
    def wasted_minutes(self) -> int:
        return self.loaded_minutes - self.hits


class WarmAccuracy:
    """Precision and recall of the warm decisions so far.

    >>> acc = WarmAccuracy()
    >>> acc.decide("m", Lease("warm", 1, 11), minute=0)
    >>> acc.invoked("m", 3)   # loaded: a hit
    >>> acc.invoked("m", 12)  # the lease ended at 11: a cold start
    >>> c = acc.counts(now=13)
    >>> c.loaded_minutes, c.hits, c.invoked_minutes, c.cold_starts
    (10, 1, 2, 1)
    >>> round(c.precision, 2), c.recall
    (0.1, 0.5)
    """

    def __init__(self) -> None:
        self.total = AccuracyCounts()
        # model -> (lease, the minute it applies from, the lease it replaced if that one
        # applied already when it was replaced)
        self._leases: dict[str, tuple[Lease, int, tuple[Lease, int] | None]] = {}

    def decide(self, model_id: str, lease: Lease, minute: int) -> None:
        """``lease`` was issued for ``model_id`` at ``minute``."""
        current = self._leases.get(model_id)
        before: tuple[Lease, int] | None = None
        if current is not None:
            if current[0] == lease:
                return
            self.total.loaded_minutes += _loaded(current[0], current[1], minute + 1)
            before = (current[0], current[1]) if current[1] <= minute else current[2]
        elif lease.action == "release":
            return
        self._leases[model_id] = (lease, minute + 1, before)

    def invoked(self, model_id: str, minute: int) -> None:
        """``model_id`` had requests in ``minute`` (once per invoked minute)."""
        self.total.invoked_minutes += 1
        current = self._leases.get(model_id)
        if current is None:
            return
        in_effect = (current[0], current[1]) if current[1] <= minute else current[2]
        if in_effect is not None and in_effect[0].covers(minute):
            self.total.hits += 1

    def counts(self, now: int) -> AccuracyCounts:
        """Counts including the minutes before ``now`` of the leases still running."""
        running = sum(_loaded(lease, since, now) for lease, since, _ in self._leases.values())
        t = self.total
        return AccuracyCounts(t.loaded_minutes + running, t.hits, t.invoked_minutes)

    def forget(self, model_id: str, minute: int) -> None:
        current = self._leases.pop(model_id, None)
        if current is not None:
            self.total.loaded_minutes += _loaded(current[0], current[1], minute + 1)


def _loaded(lease: Lease, since: int, until: int) -> int:
    if lease.action != "warm":
        return 0
    return max(0, min(lease.end, until) - max(lease.start, since))


#: Probability bins of :class:`Discrimination` (equal width over [0, 1]).
RANK_BINS = 100


class Discrimination:
    """How well the learner's probabilities rank minutes that got a request above minutes
    that did not: the area under the ROC curve of its resolved predictions.

    1.0: every minute that came scored higher than every one that did not; 0.5: no better
    than chance (a learner whose labels are shuffled, or that has learned nothing); below
    0.5: worse than chance. It does not depend on the base rate of requests, so a fleet of
    rarely used models, where most warm minutes are wasted by design, scores as high as a
    busy one when the learner tells them apart. Probabilities are binned in
    :data:`RANK_BINS` equal-width bins (ties within a bin count one half), so memory is
    constant and counts from several partitions add up.

    >>> d = Discrimination()
    >>> for p, y in [(0.9, True), (0.8, True), (0.3, False), (0.1, False)]:
    ...     d.add(p, y)
    >>> d.auc(min_each=1)
    1.0
    >>> d.auc(min_each=3) is None  # too few of each outcome to judge
    True
    >>> chance = Discrimination()
    >>> for p, y in [(0.5, True), (0.5, False)]:
    ...     chance.add(p, y)
    >>> chance.auc(min_each=1)
    0.5
    """

    __slots__ = ("negatives", "positives")

    def __init__(self) -> None:
        self.positives = [0] * RANK_BINS
        self.negatives = [0] * RANK_BINS

    def add(self, p: float, y: bool) -> None:
        """One prediction ``p`` of a request and whether the request came."""
        b = min(RANK_BINS - 1, max(0, int(p * RANK_BINS)))
        if y:
            self.positives[b] += 1
        else:
            self.negatives[b] += 1

    def merge(self, other: Discrimination) -> None:
        """Add ``other``'s counts (another partition's learner)."""
        for b in range(RANK_BINS):
            self.positives[b] += other.positives[b]
            self.negatives[b] += other.negatives[b]

    @property
    def samples(self) -> int:
        return sum(self.positives) + sum(self.negatives)

    def auc(self, min_each: int = 50) -> float | None:
        """The area under the ROC curve, or ``None`` before ``min_each`` predictions of
        each outcome were resolved (nothing to judge yet)."""
        pos, neg = sum(self.positives), sum(self.negatives)
        if pos < max(1, min_each) or neg < max(1, min_each):
            return None
        below = 0  # negatives in lower bins
        wins = 0.0
        for b in range(RANK_BINS):
            wins += self.positives[b] * (below + 0.5 * self.negatives[b])
            below += self.negatives[b]
        return wins / (pos * neg)
