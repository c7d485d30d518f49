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
