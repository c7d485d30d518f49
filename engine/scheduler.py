"""The warmup scheduler: from per-minute request probabilities to leases.

Keeping a model loaded through a minute costs that minute of memory whether or not a
request comes; leaving it unloaded costs a cold start if one does. The scheduler keeps a
minute loaded when the expected cold-start cost is larger than the expected memory cost:

    p * cold_cost > (1 - p) * memory_cost   <=>   p > memory / (memory + cold)

The single ``knob`` scales the cold-start cost: a larger knob buys fewer cold starts with
more memory time (the knob sweep of ``warmcast backtest``). A cold start costs the model's
predicted load time (seconds, from the performance predictor) at ``cold_cost_per_second``
memory-minutes per second, times the knob.

Lead time: a model that is not loaded must be asked for ``lead`` whole minutes before it
is needed, ``lead = ceil((load seconds + margin) / 60)``; a pre-warm for minute ``r`` is
therefore decided at minute ``r - 1 - lead`` at the latest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.analyzer import IdleBins
from engine.lease import Lease

PRIORITY_LEVELS = 5
"""Priorities 0 (most urgent) to 4 (least)."""


@dataclass(frozen=True, slots=True)
class Block:
    """A run of minutes to keep loaded, in idle-time offsets from the last invoked minute:
    minutes ``last + 1 + start`` to ``last + end`` inclusive."""

    start: int
    end: int
    p: float


class WarmupScheduler:
    """Cost-aware thresholds, lead times and blocks.

    >>> s = WarmupScheduler(knob=1.0, cold_cost_per_second=2.0)
    >>> round(s.threshold(load_seconds=24.5), 4)  # 1 / (1 + 2 * 24.5)
    0.02
    >>> s.lead_minutes(load_seconds=50.0), s.lead_minutes(load_seconds=0.0)
    (2, 1)
    >>> s.priority(0.9, 0.02), s.priority(0.03, 0.02)
    (0, 3)
    """

    def __init__(
        self,
        knob: float = 1.0,
        *,
        cold_cost_per_second: float = 2.0,
        margin_seconds: float = 15.0,
        max_block_minutes: int = 1440,
    ) -> None:
        if knob <= 0:
            raise ValueError("knob must be positive")
        self.knob = knob
        self.cold_cost_per_second = cold_cost_per_second
        self.margin_seconds = margin_seconds
        self.max_block_minutes = max_block_minutes

    def threshold(self, load_seconds: float, memory: float = 1.0) -> float:
        """The request probability above which a minute is worth keeping loaded."""
        cold = self.knob * self.cold_cost_per_second * max(load_seconds, 1e-3)
        return memory / (memory + cold)

    def lead_minutes(self, load_seconds: float) -> int:
        return max(1, math.ceil((max(load_seconds, 0.0) + self.margin_seconds) / 60.0))

    def priority(self, p: float, threshold: float) -> int:
        """0 for near-certain use, 4 for a marginal pre-warm."""
        if p >= 0.5:
            return 0
        if p >= 0.2:
            return 1
        if p >= 4 * threshold:
            return 2
        if p >= threshold:
            return 3
        return 4

    def blocks(
        self,
        probs: np.ndarray,
        bins: IdleBins,
        threshold: float,
        lead: int,
        max_blocks: int = 8,
        from_offset: int = 0,
    ) -> list[Block]:
        """The first ``max_blocks`` runs of idle bins whose probability is above
        ``threshold``, among the bins that end after ``from_offset``.

        Gaps shorter than ``lead`` minutes are filled (unloading and loading again would
        not be done in time).

        >>> bins = IdleBins(exact=10, horizon=40)
        >>> p = np.zeros(bins.size); p[[2, 3, 5, 9]] = 0.5
        >>> s = WarmupScheduler()
        >>> [(b.start, b.end) for b in s.blocks(p, bins, 0.1, lead=1)]
        [(2, 4), (5, 6), (9, 10)]
        >>> [(b.start, b.end) for b in s.blocks(p, bins, 0.1, lead=2)]
        [(2, 6), (9, 10)]
        """
        above = (probs > threshold).view(np.int8)
        if from_offset > 0:
            above[: bins.index(from_offset)] = 0
        edges = np.diff(above, prepend=0, append=0)
        firsts = np.flatnonzero(edges == 1).tolist()
        if not firsts:
            return []
        lasts = (np.flatnonzero(edges == -1) - 1).tolist()
        starts, ends = bins.start_list, bins.end_list
        out: list[Block] = []
        for a, b in zip(firsts, lasts, strict=True):
            k0, k1, p = starts[a], ends[b], float(probs[a])
            if out and k0 - out[-1].end < lead:
                merged = out.pop()
                k0, p = merged.start, max(merged.p, p)
            elif len(out) == max_blocks:
                break
            out.append(Block(k0, k1, p))
        return out

    def lease(
        self,
        blocks: list[Block],
        last: int,
        minute: int,
        threshold: float,
        *,
        confidence: float | None = None,
    ) -> tuple[Lease, int | None]:
        """The lease to issue at ``minute`` for a model last invoked at ``last``, and the
        minute at which to look again (the last minute of the block it issues).

        >>> s = WarmupScheduler()
        >>> s.lease([Block(0, 5, 0.6), Block(20, 22, 0.1)], last=100, minute=100,
        ...         threshold=0.05)
        (Lease(warm 101..106), 105)
        >>> s.lease([Block(0, 5, 0.6), Block(20, 22, 0.1)], last=100, minute=105,
        ...         threshold=0.05)
        (Lease(warm 121..123), 122)
        >>> s.lease([], last=100, minute=100, threshold=0.05)
        (Lease(release at 101), None)
        """
        now = minute + 1  # the first minute a lease issued now can change
        for block in blocks:
            start = last + 1 + block.start
            end = last + 1 + block.end
            if end <= now:
                continue
            start = max(start, now)
            end = min(end, start + self.max_block_minutes)
            lease = Lease(
                "warm",
                start,
                end,
                priority=self.priority(block.p, threshold),
                probability=round(block.p, 4),
                confidence=confidence,
                reason=_reason(start, end, now, block.p),
            )
            return lease, end - 1
        return Lease.release(now, reason="no request expected above the cost threshold"), None


def _reason(start: int, end: int, now: int, p: float) -> str:
    if start == now:
        return f"keep {end - start} min (p={p:.3f}/min)"
    return f"pre-warm after {start - now} idle min, for {end - start} min (p={p:.3f}/min)"
