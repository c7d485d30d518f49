"""Quantiles of a stream of positive values (latencies) in bounded memory.

A :class:`LogSketch` counts values in logarithmic buckets, so every quantile it returns is
within a fixed relative error of a value that was actually seen (the idea of DDSketch,
Masson et al., VLDB 2019). Sketches of the same accuracy merge by adding counts, which is
how a rolling window combines its slots; the number of buckets is capped by folding the
lowest ones together, so the upper quantiles (p95, p99) stay accurate whatever arrives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Values below this count as zero (latencies are seconds: a nanosecond is zero).
MIN_VALUE = 1e-9


class LogSketch:
    """Counts of values in buckets ``(gamma**(i-1), gamma**i]``; quantiles within ``accuracy``.

    >>> s = LogSketch()
    >>> for ms in range(1, 101):
    ...     s.add(ms / 1000)
    >>> round(s.quantile(0.5), 3), round(s.quantile(0.95), 3), s.count
    (0.051, 0.096, 100.0)
    >>> abs(s.quantile(0.95) - 0.095) / 0.095 <= s.accuracy + 1e-9
    True
    >>> other = LogSketch()
    >>> other.add(2.0, weight=100)
    >>> s.merge(other)
    >>> round(s.quantile(0.95), 1), s.count
    (2.0, 200.0)
    >>> LogSketch.from_list(s.to_list()).quantile(0.5) == s.quantile(0.5)
    True
    """

    __slots__ = ("_log_gamma", "bins", "count", "gamma", "max_bins", "offset", "zeros")

    def __init__(self, accuracy: float = 0.02, max_bins: int = 256) -> None:
        if not 0 < accuracy < 1:
            raise ValueError("accuracy is a relative error in (0, 1)")
        self.gamma = (1 + accuracy) / (1 - accuracy)
        self._log_gamma = math.log(self.gamma)
        self.max_bins = max_bins
        self.offset = 0  # bucket index of bins[0]
        self.bins: list[float] = []  # whole counts stay ints: they serialise faster
        self.zeros = 0.0
        self.count = 0.0

    @property
    def accuracy(self) -> float:
        return (self.gamma - 1) / (self.gamma + 1)

    def index(self, value: float) -> int:
        """The bucket of a positive value."""
        return math.ceil(math.log(value) / self._log_gamma)

    def add(self, value: float, weight: float = 1.0) -> None:
        """Count ``value`` (``weight`` times)."""
        if weight <= 0 or value != value:  # nothing, or NaN
            return
        self.count += weight
        if value < MIN_VALUE:
            self.zeros += weight
            return
        self._add_index(self.index(value), weight)

    def _add_index(self, i: int, weight: float) -> None:
        bins = self.bins
        if not bins:
            self.offset = i
            bins.append(weight)
            return
        if i < self.offset:
            bins[:0] = [0] * (self.offset - i)
            self.offset = i
        elif i >= self.offset + len(bins):
            bins.extend([0] * (i - self.offset - len(bins) + 1))
        bins[i - self.offset] += weight
        if len(bins) > self.max_bins:
            self._fold_lowest(len(bins) - self.max_bins)

    def _fold_lowest(self, n: int) -> None:
        folded = sum(self.bins[: n + 1])
        del self.bins[:n]
        self.bins[0] = folded
        self.offset += n

    def merge(self, other: LogSketch, weight: float = 1.0) -> None:
        """Add ``other``'s counts (scaled by ``weight``) to this sketch's."""
        if other.gamma != self.gamma:
            raise ValueError("only sketches of the same accuracy merge")
        if weight <= 0 or other.count <= 0:
            return
        self.count += other.count * weight
        self.zeros += other.zeros * weight
        for k, c in enumerate(other.bins):
            if c:
                self._add_index(other.offset + k, c * weight)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), or ``None`` when nothing was counted."""
        if self.count <= 0:
            return None
        rank = max(min(max(q, 0.0), 1.0) * self.count, 1e-9) - 1e-9  # nearest rank
        seen = self.zeros
        if seen > rank:
            return 0.0
        for k, c in enumerate(self.bins):
            seen += c
            if seen > rank:
                return 2 * self.gamma ** (self.offset + k) / (self.gamma + 1)
        return 2 * self.gamma ** (self.offset + len(self.bins) - 1) / (self.gamma + 1)

    def to_list(self) -> list[float]:
        """Compact form for a table or a topic: ``[offset, zeros, *bins]``."""
        return [self.offset, self.zeros, *self.bins]

    @classmethod
    def from_list(cls, data: Sequence[float], accuracy: float = 0.02) -> LogSketch:
        sketch = cls(accuracy)
        if data:
            sketch.offset = int(data[0])
            sketch.zeros = data[1]
            sketch.bins = list(data[2:])
            sketch.count = sketch.zeros + sum(sketch.bins)
        return sketch
