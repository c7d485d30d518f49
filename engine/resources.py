"""The resource manager: a memory budget and a warmup-concurrency budget.

A warm lease *holds* its served model's memory from the minute it is admitted until its
end (a pre-warm reserves its room in advance). A lease is admitted only if the memory held
stays within ``max_memory`` and, for a model that is not held yet (a load), only if fewer
than ``max_warmups_per_minute`` loads were admitted in the same minute. What is refused
waits in the :class:`~engine.queue.WarmupQueue` or is dropped (the policy decides);
``stats`` counts both. Both budgets default to unlimited (the backtest setting).

Memory is in any unit the operator likes (MB, or 1 per model for "model slots").
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from engine.lease import Lease


@dataclass(slots=True)
class ResourceStats:
    admitted: int = 0
    refused_memory: int = 0
    refused_concurrency: int = 0
    released: int = 0
    peak_memory: float = 0.0


class ResourceManager:
    """Admission control for warm leases.

    >>> rm = ResourceManager(max_memory=2.0)
    >>> rm.admit("a", Lease("warm", 11, 20), minute=10)
    True
    >>> rm.admit("b", Lease("warm", 11, 30), minute=10)
    True
    >>> rm.admit("c", Lease("warm", 11, 15), minute=10)  # no room
    False
    >>> rm.admit("c", Lease("warm", 21, 25), minute=20)  # "a" ended at minute 20
    True
    >>> rm.in_use(20), rm.stats.refused_memory
    (2.0, 1)
    """

    #: the median of the known memories, while no memory changes (checkpoints made
    #: without it restore with none)
    _median: float | None = None

    def __init__(
        self,
        max_memory: float | None = None,
        max_warmups_per_minute: int | None = None,
        default_memory: float = 1.0,
    ) -> None:
        if max_memory is not None and max_memory <= 0:
            raise ValueError("max_memory must be positive (or None for no budget)")
        if max_warmups_per_minute is not None and max_warmups_per_minute < 1:
            raise ValueError("max_warmups_per_minute must be at least 1 (or None)")
        self.max_memory = max_memory
        self.max_warmups_per_minute = max_warmups_per_minute
        self.default_memory = default_memory
        self.stats = ResourceStats()
        self._memory: dict[str, float] = {}
        self._median = None
        self._held: dict[str, tuple[int, float]] = {}  # model -> (end, memory)
        self._ends: list[tuple[int, str]] = []
        self._used = 0.0
        self._loads_minute = -1
        self._loads = 0

    @property
    def unlimited(self) -> bool:
        return self.max_memory is None and self.max_warmups_per_minute is None

    def set_memory(self, model_id: str, memory: float) -> None:
        """The memory a served model takes when loaded (from metric events)."""
        if memory > 0:
            self._memory[model_id] = memory
            self._median = None

    def memory_of(self, model_id: str) -> float:
        return self._memory.get(model_id, self.default_memory)

    def relative_memory(self, model_id: str) -> float:
        """A model's memory over the median of the known ones (1 when its own is unknown):
        what memory-weighted planning scales the cost of keeping it loaded by, so that a
        typical model is planned as without sizes.

        >>> rm = ResourceManager()
        >>> for m, mb in (("a", 100.0), ("b", 400.0), ("c", 1600.0)):
        ...     rm.set_memory(m, mb)
        >>> rm.relative_memory("a"), rm.relative_memory("b"), rm.relative_memory("zzz")
        (0.25, 1.0, 1.0)
        """
        memory = self._memory.get(model_id)
        if memory is None:
            return 1.0
        if self._median is None:
            ordered = sorted(self._memory.values())
            self._median = ordered[len(ordered) // 2]
        return memory / self._median

    def in_use(self, minute: int) -> float:
        """Memory held at ``minute`` (leases ending at or before it are let go)."""
        self._expire(minute)
        return self._used

    def _expire(self, minute: int) -> None:
        ends = self._ends
        while ends and ends[0][0] <= minute:
            end, model_id = heapq.heappop(ends)
            held = self._held.get(model_id)
            if held is not None and held[0] == end:
                del self._held[model_id]
                self._used -= held[1]
        if not self._held:
            self._used = 0.0

    def admit(self, model_id: str, lease: Lease, minute: int) -> bool:
        """Whether ``lease`` (decided at ``minute``) fits; if so it now holds its room."""
        if lease.action != "warm":
            self.release(model_id, minute)
            return True
        if self.unlimited:
            self.stats.admitted += 1
            return True
        self._expire(minute + 1)
        held = self._held.get(model_id)
        memory = self.memory_of(model_id)
        used = self._used - (held[1] if held else 0.0)
        if self.max_memory is not None and used + memory > self.max_memory + 1e-9:
            self.stats.refused_memory += 1
            return False
        if held is None and self.max_warmups_per_minute is not None:
            if self._loads_minute != minute:
                self._loads_minute, self._loads = minute, 0
            if self._loads >= self.max_warmups_per_minute:
                self.stats.refused_concurrency += 1
                return False
            self._loads += 1
        self._held[model_id] = (lease.end, memory)
        heapq.heappush(self._ends, (lease.end, model_id))
        self._used = used + memory
        self.stats.admitted += 1
        self.stats.peak_memory = max(self.stats.peak_memory, self._used)
        return True

    def release(self, model_id: str, minute: int) -> None:
        held = self._held.pop(model_id, None)
        if held is not None:
            self._used -= held[1]
            self.stats.released += 1

    def forget(self, model_id: str) -> None:
        self.release(model_id, 0)
        if self._memory.pop(model_id, None) is not None:
            self._median = None

    def known_models(self) -> int:
        """Served models whose memory is known (from metric events)."""
        return len(self._memory)
