"""A clairvoyant warmup predictor for the offline backtest (never used by the worker).

Definition ("perfect" under docs/evaluation's rules). The oracle knows every request.
A model's first request ever is cold (assumption: nothing announces a new model). Each
later request minute ``m2`` after an invoked minute ``m1`` is warm only if the model is
loaded at ``m2``; the cheapest way is to stay loaded, or pre-warm ``load_minutes`` ahead,
so avoiding that cold start costs ``min(m2 - m1 - 1, load_minutes)`` wasted minutes (only
minutes at or after ``train_minutes`` count). Every gap saves exactly one cold start, so
for a wasted-memory budget, keeping the cheapest gaps first (greedy) gives the minimum
cold starts: optimal for this per-gap relaxation, which ignores cross-model memory limits.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence


def gap_costs(
    minutes: Mapping[str, Sequence[int]], *, train_minutes: int = 0, load_minutes: int | None = None
) -> tuple[int, list[int]]:
    """The forced cold starts (first scored requests ever) and each scored gap's cost."""
    forced = 0
    costs: list[int] = []
    for ms in minutes.values():
        if ms and ms[0] >= train_minutes:
            forced += 1
        for m1, m2 in itertools.pairwise(ms):
            if m2 < train_minutes:
                continue
            idle = m2 - max(m1 + 1, train_minutes)
            costs.append(idle if load_minutes is None else min(idle, load_minutes))
    return forced, sorted(costs)


def oracle_cold_starts(
    minutes: Mapping[str, Sequence[int]],
    budget: float,
    *,
    train_minutes: int = 0,
    load_minutes: int | None = None,
) -> tuple[int, int]:
    """``(cold starts, wasted minutes used)`` of the oracle within ``budget`` wasted minutes.

    >>> oracle_cold_starts({"a": [0, 2, 3, 10]}, 1)
    (2, 1)
    """
    forced, costs = gap_costs(minutes, train_minutes=train_minutes, load_minutes=load_minutes)
    used = 0
    kept = 0
    for c in costs:
        if used + c > budget:
            break
        used += c
        kept += 1
    return forced + len(costs) - kept, used
