"""Policies turn the minutes a served model is invoked in into leases.

The contract every policy keeps (the engine drives it, live and offline alike):

- ``on_request(model_id, minute)`` is called once per served model and minute, at the
  model's first request in that minute; it returns the model's new lease, or ``None`` to
  keep the current one. Only what is known up to that request may be used (other models'
  activity up to the previous minute), so that decisions do not depend on how events of
  one minute interleave.
- ``on_minute_closed(minute, counts)`` is called when event time has passed ``minute``,
  with the request counts of every model invoked in it; it returns ``(model_id, lease)``
  pairs for any model, invoked or not (pre-warming an idle model happens here).
- ``next_review()`` is the earliest minute at which the policy wants
  ``on_minute_closed`` called even if no request arrives; ``None`` when it has none.
- ``forget(model_id)`` drops what is known about an evicted model.

The fixed keep-alive and hybrid-histogram baselines follow the definitions of
docs/evaluation.md (Shahrad et al., "Serverless in the Wild", USENIX ATC 2020).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import accumulate
from typing import Any, Protocol

from engine.budget import FOREVER
from engine.lease import Lease


class Policy(Protocol):
    name: str
    version: str

    def on_request(self, model_id: str, minute: int) -> Lease | None: ...

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]: ...

    def next_review(self) -> int | None: ...

    def forget(self, model_id: str) -> None: ...


class FixedKeepAlive:
    """Keep a model loaded for ``keepalive`` minutes after each invoked minute.

    >>> FixedKeepAlive(10).on_request("m", 5)
    Lease(warm 6..16)
    """

    def __init__(self, keepalive: int = 10) -> None:
        if keepalive < 1:
            raise ValueError("keepalive must be at least 1 minute")
        self.keepalive = keepalive
        self.name = f"fixed:{keepalive}"
        self.version = f"fixed-{keepalive}/1"
        self._reason = f"keep-alive {keepalive} min"

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        return Lease("warm", minute + 1, minute + 1 + self.keepalive, reason=self._reason)

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        return None


class KeepLoaded:
    """Keep a model loaded from its first request on, until a memory budget evicts it
    (:mod:`engine.budget`; with ``lru`` or ``gdsf`` eviction, the caches of FaasCache).

    >>> KeepLoaded("lru").on_request("m", 5)
    Lease(warm 6..1099511627776)
    """

    def __init__(self, eviction: str = "lru") -> None:
        self.name = eviction
        self.version = f"{eviction}/1"

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        return Lease("warm", minute + 1, FOREVER, reason="kept until evicted")

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        return None


class IdleHistogram:
    """Idle times between invoked minutes of one served model, in one-minute bins.

    ``idle = t2 - t1 - 1``; idle times past the last bin are counted apart. The
    coefficient of variation of the bin counts is kept incrementally, and so are two
    cursors (a bin and the cumulative count up to it) from which :meth:`seek` finds a
    percentile by moving a few bins instead of summing from the first.

    >>> h = IdleHistogram(bins=4)
    >>> for idle in (0, 0, 2, 9):
    ...     h.add(idle)
    >>> list(h.counts), h.out_of_bounds, h.percentile_bin(0.5), h.seek(1, 0.99)
    ([2, 0, 1, 0], 1, 0, 2)
    """

    __slots__ = ("counts", "cursors", "in_bounds", "out_of_bounds", "sum_squares")

    def __init__(self, bins: int = 240) -> None:
        self.counts = array("I", bytes(4 * bins))  # 4 bytes a bin, not a list's 8 + an int
        self.in_bounds = 0
        self.out_of_bounds = 0
        self.sum_squares = 0
        #: bin and cumulative count up to it (inclusive) of cursor 0, then of cursor 1
        self.cursors = [0, 0, 0, 0]

    def __getstate__(self) -> dict[str, object]:
        # a dict in the pure-Python and in the compiled engine alike (checkpoints)
        return {name: getattr(self, name) for name in _HISTOGRAM_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def add(self, idle: int) -> None:
        if 0 <= idle < len(self.counts):
            c = self.counts[idle]
            self.counts[idle] = c + 1
            self.sum_squares += 2 * c + 1
            self.in_bounds += 1
            cursors = self.cursors
            if idle <= cursors[0]:
                cursors[1] += 1
            if idle <= cursors[2]:
                cursors[3] += 1
        else:
            self.out_of_bounds += 1

    @property
    def total(self) -> int:
        return self.in_bounds + self.out_of_bounds

    def coefficient_of_variation(self) -> float:
        """Population standard deviation over mean of the bin counts."""
        n = len(self.counts)
        if self.in_bounds == 0:
            return 0.0
        mean = self.in_bounds / n
        var = max(self.sum_squares / n - mean * mean, 0.0)
        return math.sqrt(var) / mean

    def percentile_bin(self, q: float) -> int:
        """The first bin whose cumulative count reaches ``q`` of the in-bounds total."""
        target = q * self.in_bounds
        for i, cum in enumerate(accumulate(self.counts)):
            if cum >= target:
                return i
        return len(self.counts) - 1

    def seek(self, cursor: int, q: float) -> int:
        """:meth:`percentile_bin` of ``q``, found by moving cursor 0 or 1 from where it
        was left (keep one cursor per percentile asked for, and the moves stay short)."""
        target = q * self.in_bounds
        counts, cursors = self.counts, self.cursors
        at = 2 * cursor
        i, cum = cursors[at], cursors[at + 1]
        while i > 0 and cum - counts[i] >= target:
            cum -= counts[i]
            i -= 1
        last = len(counts) - 1
        while cum < target and i < last:
            i += 1
            cum += counts[i]
        cursors[at], cursors[at + 1] = i, cum
        return i


_HISTOGRAM_STATE = ("counts", "cursors", "in_bounds", "out_of_bounds", "sum_squares")


class HybridHistogram:
    """The hybrid-histogram policy of Shahrad et al.: per model pre-warm and keep-alive
    windows from the 5th and 99th percentiles of its idle-time histogram.

    >>> p = HybridHistogram()
    >>> p.on_request("m", 0)  # nothing known yet: keep it four hours
    Lease(warm 1..241)
    """

    name = "hybrid"
    version = "hybrid/1"

    def __init__(
        self,
        bins: int = 240,
        cv_threshold: float = 2.0,
        oob_threshold: float = 0.5,
        head_q: float = 0.05,
        tail_q: float = 0.99,
        margin: float = 0.1,
    ) -> None:
        self.bins = bins
        self.cv_threshold = cv_threshold
        self.oob_threshold = oob_threshold
        self.head_q = head_q
        self.tail_q = tail_q
        self.margin = margin
        self._hist: dict[str, IdleHistogram] = {}
        self._last: dict[str, int] = {}

    def windows(self, model_id: str) -> tuple[int, int]:
        """``(prewarm, keepalive)`` in minutes for a model, from what is known now."""
        hist = self._hist.get(model_id)
        if (
            hist is None
            or hist.total == 0
            or hist.out_of_bounds / hist.total > self.oob_threshold
            or hist.coefficient_of_variation() < self.cv_threshold
        ):
            return 0, self.bins
        return self.windows_between(hist.seek(0, self.head_q), hist.seek(1, self.tail_q))

    def windows_between(self, head: float, tail: float) -> tuple[int, int]:
        """``(prewarm, keepalive)`` for idle times from ``head`` to ``tail`` minutes (the
        head and tail percentiles), with the margin on both sides.

        >>> HybridHistogram().windows_between(100, 120)
        (90, 43)
        """
        prewarm = math.floor(head * (1.0 - self.margin))
        keepalive = max(1, math.ceil(tail * (1.0 + self.margin)) - prewarm + 1)
        return prewarm, keepalive

    def out_of_bounds(self, model_id: str) -> int:
        """How many of the model's idle times were longer than the histogram."""
        hist = self._hist.get(model_id)
        return 0 if hist is None else hist.out_of_bounds

    def observe(self, model_id: str, minute: int) -> None:
        """Count the idle time since the model's previous invoked minute."""
        last = self._last.get(model_id)
        if last is not None and minute > last:
            hist = self._hist.get(model_id)
            if hist is None:
                hist = self._hist[model_id] = IdleHistogram(self.bins)
            hist.add(minute - last - 1)
        self._last[model_id] = minute

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        self.observe(model_id, minute)
        prewarm, keepalive = self.windows(model_id)
        return _hybrid_lease(minute, prewarm, keepalive)

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        self._hist.pop(model_id, None)
        self._last.pop(model_id, None)


@lru_cache(maxsize=4096)
def _hybrid_lease(minute: int, prewarm: int, keepalive: int) -> Lease:
    """The lease for a request in ``minute`` (leases are immutable: models that get the
    same windows in the same minute share one)."""
    if prewarm == 0:
        return Lease("warm", minute + 1, minute + 1 + keepalive, reason=_reason(0, keepalive))
    return Lease(
        "warm",
        minute + prewarm,
        minute + prewarm + keepalive + 1,
        reason=_reason(prewarm, keepalive),
    )


@lru_cache(maxsize=4096)
def _reason(prewarm: int, keepalive: int) -> str:
    """Why a hybrid lease is what it is (one string per distinct pair, shared by leases)."""
    if prewarm == 0:
        return f"keep-alive {keepalive} min"
    return f"pre-warm in {prewarm} min, keep {keepalive} min"
