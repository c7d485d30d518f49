"""Counts and latencies over the last N seconds of event time, in constant memory.

A :class:`RollingWindow` keeps two tumbling slots of the window's length, the current one
and the one before, and estimates "the last ``length`` seconds" as the current slot plus
the part of the previous slot that still overlaps the window (the sliding-window counter
estimate): exact at slot boundaries, linear in between, never more than two slots of
state whatever the traffic. Time is event time, passed in: a replay at any speed and a live
run give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.sketch import LogSketch


@dataclass(slots=True)
class WindowView:
    """A window's estimated counters and latency distribution as of some time."""

    counts: list[float]
    latency: LogSketch = field(default_factory=LogSketch)

    def quantile(self, q: float) -> float | None:
        return self.latency.quantile(q)


class RollingWindow:
    """``width`` counters and a latency sketch over the last ``length`` seconds.

    >>> w = RollingWindow(60.0, width=1)
    >>> w.add(0.0, [10])
    True
    >>> w.add(61.0, [4], latency=0.2)
    True
    >>> w.view(90.0).counts  # all of 60..90, half of the 10 counted in 0..60
    [9.0]
    >>> w.view(150.0).counts, w.view(200.0).counts
    ([2.0], [0.0])
    >>> w.add(130.0, [1]), w.add(5.0, [1])  # 5.0 is older than the previous slot now
    (True, False)
    """

    __slots__ = ("current", "index", "length", "previous", "width")

    def __init__(self, length: float, width: int) -> None:
        if length <= 0:
            raise ValueError("a window has a positive length")
        self.length = float(length)
        self.width = width
        self.index: int | None = None  # slot number of ``current``
        self.current: tuple[list[float], LogSketch] = self._empty()
        self.previous: tuple[list[float], LogSketch] = self._empty()

    def _empty(self) -> tuple[list[float], LogSketch]:  # whole counts stay ints
        return [0] * self.width, LogSketch()

    def slot_of(self, ts: float) -> int:
        return math.floor(ts / self.length)

    def _roll(self, k: int) -> None:
        if self.index is None or k <= self.index:
            if self.index is None:
                self.index = k
            return
        self.previous = self.current if k == self.index + 1 else self._empty()
        self.current = self._empty()
        self.index = k

    def add(
        self,
        ts: float,
        counts: Sequence[float] = (),
        latency: float | None = None,
        latency_weight: float = 1.0,
    ) -> bool:
        """Count ``counts`` (and one latency) at ``ts``; ``False`` if ``ts`` is too old."""
        k = self.slot_of(ts)
        self._roll(k)
        assert self.index is not None
        if k >= self.index:
            slot = self.current
        elif k == self.index - 1:
            slot = self.previous
        else:
            return False
        totals = slot[0]
        for i, c in enumerate(counts):
            totals[i] += c
        if latency is not None:
            slot[1].add(latency, latency_weight)
        return True

    def view(self, now: float) -> WindowView:
        """The estimate of the ``length`` seconds that end at ``now``."""
        return estimate(self.length, self.index, self.current, self.previous, now, self.width)

    def to_list(self) -> list[Any]:
        """Compact form: ``[length, index, current counts, sketch, previous counts, sketch]``."""
        return [
            self.length,
            self.index,
            self.current[0],
            self.current[1].to_list(),
            self.previous[0],
            self.previous[1].to_list(),
        ]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> RollingWindow:
        length, index, cur, cur_sketch, prev, prev_sketch = data
        window = cls(length, width=len(cur))
        window.index = index
        window.current = (list(cur), LogSketch.from_list(cur_sketch))
        window.previous = (list(prev), LogSketch.from_list(prev_sketch))
        return window


#: One tumbling slot: its counters and its latency sketch (``None``: no latency yet).
Slot = tuple[Sequence[float], LogSketch | None]


def estimate(
    length: float, index: int | None, current: Slot, previous: Slot, now: float, width: int
) -> WindowView:
    """The sliding-window estimate of the ``length`` seconds that end at ``now``, from the
    slot numbered ``index`` (``current``) and the one before it (``previous``).

    >>> estimate(60.0, 1, ([4], None), ([10], None), 90.0, 1).counts
    [9.0]
    """
    out = WindowView([0.0] * width)
    if index is None:
        return out
    k = math.floor(now / length)
    elapsed = min(max(now / length - index, 0.0), 1.0)
    if k <= index:
        parts = [(current, 1.0), (previous, 1.0 - elapsed)]
    elif k == index + 1:
        parts = [(current, 1.0 - min(max(now / length - k, 0.0), 1.0))]
    else:
        parts = []
    totals = out.counts
    for (counts, sketch), weight in parts:
        if weight <= 0:
            continue
        for i, c in enumerate(counts):
            totals[i] = round(totals[i] + c * weight, 6)
        if sketch is not None:
            out.latency.merge(sketch, weight)
    return out
