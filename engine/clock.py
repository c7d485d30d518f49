"""Clocks. Decisions run on event time; a clock is injected wherever "now" is needed."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time in epoch seconds."""

    def now(self) -> float: ...


class WallClock:
    """The machine's clock (live mode only: idle partitions, stale-data checks)."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: for tests, backtests and replays.

    >>> clock = ManualClock(100.0)
    >>> clock.advance(60)
    >>> clock.now()
    160.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def set(self, ts: float) -> None:
        self._now = float(ts)

    def advance(self, seconds: float) -> None:
        self._now += seconds
