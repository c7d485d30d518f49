"""A hard memory budget: the models loaded by lease never take more than ``capacity`` bytes.

The engine passes every lease its policy decides through :meth:`Budget.admit`, and calls
:meth:`Budget.settle` after each minute it closes. A lease decided at minute ``i`` rules
from minute ``i + 1`` (docs/evaluation.md), so the budget checks the loaded set of minute
``i + 1``: a warm lease that does not fit takes the room of loaded models worth less, each
let go by a ``release`` lease whose reason says so (an eviction), or, if no such room can
be made, it is refused. A lease that starts later (a pre-warm) is checked when its start
comes (:meth:`next_review` asks the engine to close the minute before it).

What a model is worth, per byte, is the rule's (``rule``):

- ``lru``: the minute of its last request (least recently used goes first);
- ``gdsf``: the greedy-dual priority of FaasCache (Fuerst and Sharma, ASPLOS 2021):
  ``clock + frequency * cost / size``, where ``frequency`` counts the minutes it was
  requested in since it was last loaded, ``cost`` is its load time (1 when unknown) and
  ``clock`` rises to the priority of each model evicted;
- ``value``: expected cold-start cost avoided per byte held,
  ``cost * requested / (size * idle)``: its rate of use (the minutes it was requested in,
  ``requested``, over the minutes it has been idle since the last, ``idle``, at least 1)
  times what a cold start of it costs, per byte. Chosen on a suite of traces (both
  development traces and seven synthetic families, at 10, 25 and 50 % of the fleet's size)
  over the mean gap between requests, the expected wait read from the model's recent gaps,
  and the policy's own per-minute request probabilities, which say when to keep a model
  rather than which of two to keep.

With ``lru`` and ``gdsf`` a model just requested is always admitted (the others make
room), as in a cache; with ``value`` only models worth less make room for it.

``keep_idle`` (a cache's way): while there is room a model once loaded stays loaded, the
policy's releases and lease ends notwithstanding, until the budget needs its room; the
policy's warm leases still load models ahead of their requests. Under a budget memory
that is free costs nothing, so this is what ``lru``, ``gdsf`` and ``value`` do by default.

Sizes are bytes, from metric events (``memory_bytes``, ``memory_mb``) or offline from a
sizes file; a model of unknown size counts as the median of the known sizes (as
:data:`DEFAULT_SIZE_BYTES` while none is known).

>>> b = Budget(2.0, rule="lru")
>>> for m in ("a", "b", "c"):
...     b.set_size(m, 1.0)
>>> b.touch("a", 0); b.admit("a", Lease("warm", 1, 11), 0)
(Lease(warm 1..1099511627776), [])
>>> b.touch("b", 1); b.admit("b", Lease("warm", 2, 12), 1)[1]
[]
>>> b.touch("c", 2); lease, evicted = b.admit("c", Lease("warm", 3, 13), 2)
>>> [(m, v.action, v.start, v.reason) for m, v in evicted]
[('a', 'release', 3, 'evicted for c: 2 B of 2 B held (lru)')]
>>> b.used_bytes, b.stats.evictions
(2.0, 1)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, fields

from engine.lease import Lease

#: The end of a lease kept until the budget needs its room (minutes: about two million years).
FOREVER = 1 << 40
#: The size of a model while no size is known at all (1 GiB).
DEFAULT_SIZE_BYTES = float(1 << 30)
RULES = ("lru", "gdsf", "value")
#: Metric events that give a model's size, and the bytes of their unit.
SIZE_METRICS = {"memory_bytes": 1.0, "memory_mb": float(1 << 20)}


@dataclass(slots=True)
class BudgetStats:
    """Counts a budget keeps (exported by the worker, reported by the backtest)."""

    admitted: int = 0
    evictions: int = 0
    refused: int = 0
    peak_bytes: float = 0.0

    def __reduce__(self) -> tuple[type[BudgetStats], tuple[object, ...]]:
        return BudgetStats, tuple(getattr(self, f.name) for f in fields(self))


class _Held:
    """A warm lease the budget let through: ``[start, end)``, ``size`` bytes."""

    __slots__ = ("active", "end", "size", "start")

    def __init__(self, start: int, end: int, size: float) -> None:
        self.start = start
        self.end = end
        self.size = size
        self.active = False  # counted in the used bytes


class _Usage:
    """What the rules know of one model's requests."""

    __slots__ = ("frequency", "last", "priority", "requested")

    def __init__(self, minute: int) -> None:
        self.last = minute
        self.requested = 1  # minutes it was requested in (value)
        self.frequency = 0  # requested minutes since it was last loaded (gdsf)
        self.priority = 0.0  # gdsf


class Budget:
    """At most ``capacity`` bytes loaded by lease at any minute (see the module docstring)."""

    def __init__(
        self,
        capacity: float,
        *,
        rule: str = "value",
        keep_idle: bool = True,
        default_size: float | None = None,
        counts_models: bool = False,
    ) -> None:
        if not capacity > 0:
            raise ValueError("capacity must be positive")
        if rule not in RULES:
            raise ValueError(f"unknown budget rule {rule!r}: use one of {', '.join(RULES)}")
        self.capacity = float(capacity)
        self.rule = rule
        self.keep_idle = keep_idle
        self.counts_models = counts_models  # every model is size 1: sizes are not taken
        self.default_size = 1.0 if counts_models else default_size
        self.stats = BudgetStats()
        self.used_bytes = 0.0  # held leases active at the minute being decided
        self._sizes: dict[str, float] = {}
        self._costs: dict[str, float] = {}
        self._held: dict[str, _Held] = {}
        self._usage: dict[str, _Usage] = {}
        self._starts: list[tuple[int, str]] = []  # pending leases by start (lazy)
        self._ends: list[tuple[int, str]] = []  # active leases by end (lazy)
        self._clock = 0.0  # gdsf
        self._median: float | None = None

    # -- sizes and costs -----------------------------------------------------------------

    def set_size(self, model_id: str, size: float) -> None:
        """The bytes ``model_id`` takes when loaded (a non-positive size is ignored, and
        every size when the budget counts models)."""
        if not size > 0 or self.counts_models:
            return
        self._sizes[model_id] = float(size)
        self._median = None
        held = self._held.get(model_id)
        if held is not None:
            if held.active:
                self.used_bytes += size - held.size
            held.size = float(size)

    def set_cost(self, model_id: str, load_seconds: float) -> None:
        """How long ``model_id`` takes to load: the cost of one of its cold starts."""
        if load_seconds > 0:
            self._costs[model_id] = float(load_seconds)

    def size_of(self, model_id: str) -> float:
        size = self._sizes.get(model_id)
        return size if size is not None else self.unknown_size()

    def unknown_size(self) -> float:
        """The size a model of unknown size counts as."""
        if self.default_size is not None:
            return self.default_size
        if not self._sizes:
            return DEFAULT_SIZE_BYTES
        if self._median is None:
            ordered = sorted(self._sizes.values())
            self._median = ordered[len(ordered) // 2]
        return self._median

    def sized(self, model_id: str) -> bool:
        return model_id in self._sizes

    # -- requests ------------------------------------------------------------------------

    def touch(self, model_id: str, minute: int) -> None:
        """A request of ``model_id`` in ``minute`` (its first in that minute)."""
        usage = self._usage.get(model_id)
        if usage is None:
            usage = self._usage[model_id] = _Usage(minute)
        elif minute > usage.last:
            usage.last = minute
            usage.requested += 1
        held = self._held.get(model_id)
        usage.frequency = usage.frequency + 1 if held is not None else 1
        usage.priority = self._clock + usage.frequency * self._cost(model_id) / self.size_of(
            model_id
        )

    def _cost(self, model_id: str) -> float:
        return self._costs.get(model_id, 1.0)

    def value(self, model_id: str, minute: int) -> float:
        """What keeping ``model_id`` loaded at ``minute`` is worth under the rule (higher
        stays)."""
        usage = self._usage.get(model_id)
        if self.rule == "lru":
            return float(usage.last) if usage is not None else float(minute)
        if self.rule == "gdsf":
            if usage is None:
                return self._clock + self._cost(model_id) / self.size_of(model_id)
            return usage.priority
        if usage is None:
            return self._cost(model_id) / self.size_of(model_id)
        idle = max(float(minute - usage.last), 1.0)
        return self._cost(model_id) * usage.requested / (self.size_of(model_id) * idle)

    # -- leases --------------------------------------------------------------------------

    def admit(
        self, model_id: str, lease: Lease | None, minute: int
    ) -> tuple[Lease | None, list[tuple[str, Lease]]]:
        """The lease to issue for ``model_id`` at ``minute`` instead of ``lease`` (``None``:
        none; ``lease`` ``None`` means the model was just requested and its policy kept its
        lease), and the releases of the models evicted to make room."""
        now = minute + 1
        self._expire(now)
        held = self._held.get(model_id)
        if lease is None or lease.action == "release":
            if self.keep_idle and (lease is None or held is not None):
                if held is not None and held.start <= now:
                    return None, []  # loaded and kept
                if lease is not None:
                    return None, []
                lease = Lease("warm", now, FOREVER, reason="requested")
            else:
                if held is not None:
                    self._drop(model_id, held)
                return lease, []
        start = max(lease.start, now)
        end = lease.end
        if self.keep_idle:
            if held is not None and held.start <= now:
                return None, []  # loaded until evicted already
            end = FOREVER
            reason = f"{lease.reason}; kept while memory allows" if lease.reason else lease.reason
        else:
            reason = lease.reason
        if end <= start:
            return lease, []
        if held is not None:
            self._drop(model_id, held)
        size = self.size_of(model_id)
        entry = _Held(start, end, size)
        evicted: list[tuple[str, Lease]] = []
        if start > now:  # a pre-warm: checked when its start comes
            self._held[model_id] = entry
            heapq.heappush(self._starts, (start, model_id))
        elif not self._make_room(model_id, size, minute, evicted, self.rule != "value"):
            self.stats.refused += 1
            return (Lease.release(now, "no room in the memory budget") if held else None), evicted
        else:
            self._held[model_id] = entry
            self._activate(model_id, entry)
        self.stats.admitted += 1
        if start == lease.start and end == lease.end:
            return lease, evicted
        out = Lease(
            "warm",
            start,
            end,
            priority=lease.priority,
            probability=lease.probability,
            confidence=lease.confidence,
            reason=reason,
        )
        return out, evicted

    def settle(self, minute: int) -> list[tuple[str, Lease]]:
        """After the leases decided at ``minute``: start the pre-warms due at
        ``minute + 1`` that fit, and the releases of those that do not or of the models
        they evict."""
        now = minute + 1
        self._expire(now)
        out: list[tuple[str, Lease]] = []
        starts = self._starts
        while starts and starts[0][0] <= now:
            start, model_id = heapq.heappop(starts)
            entry = self._held.get(model_id)
            if entry is None or entry.active or entry.start != start:
                continue
            if entry.end <= now:
                del self._held[model_id]
                continue
            if self._make_room(model_id, entry.size, minute, out, self.rule != "value"):
                self._activate(model_id, entry)
            else:
                del self._held[model_id]
                self.stats.refused += 1
                out.append((model_id, Lease.release(now, "no room in the memory budget")))
        if self.used_bytes > self.capacity + 1e-9:  # sizes grew, or the capacity shrank
            self._make_room("", 0.0, minute, out, True)
        if self.used_bytes > self.stats.peak_bytes:
            self.stats.peak_bytes = self.used_bytes
        return out

    def next_review(self) -> int | None:
        """The minute to close before a pending pre-warm starts."""
        starts = self._starts
        while starts:
            start, model_id = starts[0]
            entry = self._held.get(model_id)
            if entry is not None and not entry.active and entry.start == start:
                return start - 1
            heapq.heappop(starts)
        return None

    def forget(self, model_id: str) -> None:
        held = self._held.get(model_id)
        if held is not None:
            self._drop(model_id, held)
        self._usage.pop(model_id, None)
        self._costs.pop(model_id, None)

    def clear(self) -> None:
        """Let go of every lease (all models released)."""
        for model_id, held in list(self._held.items()):
            self._drop(model_id, held)

    def holds(self, model_id: str) -> bool:
        return model_id in self._held

    def loaded(self) -> int:
        """Models whose leases are counted in :attr:`used_bytes`."""
        return sum(1 for h in self._held.values() if h.active)

    # -- internals -----------------------------------------------------------------------

    def _activate(self, model_id: str, entry: _Held) -> None:
        entry.active = True
        self.used_bytes += entry.size
        if entry.end < FOREVER:
            heapq.heappush(self._ends, (entry.end, model_id))
        if self.used_bytes > self.stats.peak_bytes:
            self.stats.peak_bytes = self.used_bytes

    def _drop(self, model_id: str, held: _Held) -> None:
        del self._held[model_id]
        if held.active:
            self.used_bytes -= held.size
            if not self._held:
                self.used_bytes = 0.0

    def _expire(self, now: int) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            end, model_id = heapq.heappop(ends)
            held = self._held.get(model_id)
            if held is not None and held.active and held.end == end:
                self._drop(model_id, held)

    def _make_room(
        self,
        model_id: str,
        size: float,
        minute: int,
        evicted: list[tuple[str, Lease]],
        always: bool,
    ) -> bool:
        """Evict loaded models until ``size`` more bytes fit (``always``: whatever they are
        worth, else only those worth less); ``False`` (nothing evicted) when that cannot be
        done."""
        if self.used_bytes + size <= self.capacity + 1e-9:
            return True
        if size > self.capacity + 1e-9:
            return False
        now = minute + 1
        value = self.value
        ranked = sorted(
            (value(m, now), m) for m, h in self._held.items() if h.active and m != model_id
        )
        limit = None if always else value(model_id, now)
        need = self.used_bytes + size - self.capacity - 1e-9
        chosen: list[tuple[float, str]] = []
        freed = 0.0
        for worth, victim in ranked:
            if freed >= need:
                break
            if limit is not None and worth >= limit:
                return False
            chosen.append((worth, victim))
            freed += self._held[victim].size
        if freed < need:
            return False
        capacity = _bytes(self.capacity)
        for worth, victim in chosen:
            self._drop(victim, self._held[victim])
            usage = self._usage.get(victim)
            if usage is not None:
                usage.frequency = 0
            if self.rule == "gdsf" and worth > self._clock:
                self._clock = worth
            self.stats.evictions += 1
            used = _bytes(self.used_bytes + size)
            whom = model_id or "a smaller budget"  # "": sizes grew or the capacity shrank
            reason = f"evicted for {whom}: {used} of {capacity} held ({self.rule})"
            evicted.append((victim, Lease.release(now, reason)))
        return True


def _bytes(n: float) -> str:
    """A byte count for a reason text.

    >>> _bytes(2.0), _bytes(3 * 2**30), _bytes(1536 * 2**20)
    ('2 B', '3 GiB', '1.5 GiB')
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


__all__ = ["DEFAULT_SIZE_BYTES", "FOREVER", "RULES", "SIZE_METRICS", "Budget", "BudgetStats"]
