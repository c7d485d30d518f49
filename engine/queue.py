"""The warmup queue: warmups that wait for room, by priority, bounded and fair.

Five priority levels, 0 (most urgent) to 4. ``pop`` serves the levels by smooth weighted
round robin (default weights 16, 8, 4, 2, 1): with every level waiting, level 0 gets 16 of
every 31 turns and level 4 still gets one, so nothing starves. A key (a served model) is
in the queue at most once: pushing it again replaces its item (and its priority). When
the queue is full, a new item evicts the newest item of a strictly less urgent level, or
is refused; either way the overflow is counted, never raised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

LEVELS = 5
DEFAULT_WEIGHTS = (16, 8, 4, 2, 1)


@dataclass(slots=True)
class QueueStats:
    pushed: int = 0
    replaced: int = 0
    popped: int = 0
    overflow: int = 0  # items refused or evicted because the queue was full
    removed: int = 0


class WarmupQueue(Generic[T]):
    """Bounded weighted-fair priority queue keyed by served model.

    >>> q = WarmupQueue(max_size=3)
    >>> for key, level in (("a", 4), ("b", 0), ("c", 4)):
    ...     _ = q.push(key, level, key.upper())
    >>> q.push("d", 1, "D")  # full: "c", the newest of the least urgent level, goes
    'c'
    >>> q.stats.overflow, len(q)
    (1, 3)
    >>> [q.pop()[0] for _ in range(3)]
    ['b', 'd', 'a']
    """

    def __init__(self, max_size: int = 10_000, weights: Sequence[int] = DEFAULT_WEIGHTS) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if len(weights) != LEVELS or any(w <= 0 for w in weights):
            raise ValueError(f"need {LEVELS} positive weights")
        self.max_size = max_size
        self.weights = tuple(weights)
        self.stats = QueueStats()
        self._levels: list[OrderedDict[str, T]] = [OrderedDict() for _ in range(LEVELS)]
        self._where: dict[str, int] = {}
        self._credit = [0] * LEVELS

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def depth(self) -> list[int]:
        """Items waiting at each level."""
        return [len(level) for level in self._levels]

    def push(self, key: str, priority: int, item: T) -> str | None:
        """Queue ``item`` for ``key``; returns the key that overflowed, if any (which may
        be ``key`` itself when the queue is full of more urgent items)."""
        level = min(max(int(priority), 0), LEVELS - 1)
        if key in self._where:
            self._levels[self._where.pop(key)].pop(key)
            self.stats.replaced += 1
        dropped: str | None = None
        if len(self._where) >= self.max_size:
            victim_level = next(
                (lv for lv in range(LEVELS - 1, level, -1) if self._levels[lv]), None
            )
            self.stats.overflow += 1
            if victim_level is None:
                return key
            dropped, _ = self._levels[victim_level].popitem(last=True)
            del self._where[dropped]
        self._levels[level][key] = item
        self._where[key] = level
        self.stats.pushed += 1
        return dropped

    def pop(self) -> tuple[str, T] | None:
        """The next item, weighted-fair across the levels that hold items."""
        waiting = [lv for lv in range(LEVELS) if self._levels[lv]]
        if not waiting:
            return None
        total = 0
        for lv in waiting:
            self._credit[lv] += self.weights[lv]
            total += self.weights[lv]
        chosen = max(waiting, key=lambda lv: (self._credit[lv], -lv))
        self._credit[chosen] -= total
        key, item = self._levels[chosen].popitem(last=False)
        del self._where[key]
        if not self._where:
            self._credit = [0] * LEVELS
        self.stats.popped += 1
        return key, item

    def remove(self, key: str) -> T | None:
        level = self._where.pop(key, None)
        if level is None:
            return None
        self.stats.removed += 1
        return self._levels[level].pop(key)
