"""Minute grid: how event time (epoch seconds) maps to the minutes decisions are made on."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MinuteGrid:
    """Minute ``m`` covers ``[origin + 60 m, origin + 60 (m + 1))``.

    Live runs use ``origin = 0`` (epoch-aligned minutes); a backtest uses the trace's
    first request, as the evaluation definitions do.

    >>> grid = MinuteGrid(origin=30.0)
    >>> grid.minute_of(89.9), grid.minute_of(90.0)
    (0, 1)
    >>> grid.start_of(2)
    150.0
    """

    origin: float = 0.0

    def __reduce__(self) -> tuple[type[MinuteGrid], tuple[float]]:
        return MinuteGrid, (self.origin,)  # the same in the pure and the compiled engine

    def minute_of(self, ts: float) -> int:
        return math.floor((ts - self.origin) / 60.0)

    def start_of(self, minute: int) -> float:
        return self.origin + 60.0 * minute
