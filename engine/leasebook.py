"""The executor's lease book: which served models must be loaded at a time ``t``.

A model server executes warmup commands; the book turns the commands it has read into the
set of models that must be loaded now, and says which to load and which to unload.

- A ``warm`` command keeps its model loaded during ``[start, end)``. The model is loaded
  ``lead`` seconds before ``start`` (its expected load time), so it is ready at ``start``.
- A command replaces the model's older leases (older by ``issued_at``) from the minute
  after it was issued: a ``warm`` command cuts them at the next minute boundary (so the
  model is not unloaded between the old lease and the new one), a ``release`` cuts them at
  its ``issued_at``: the model is unloaded at once.
- A model is unloaded when no lease covers the time any more: at the end of its lease,
  unless a newer lease covers it; never while a lease covers it.
- A command whose ``command_id`` was seen before is ignored (delivery is at-least-once).

Times are passed in (``now``): the book is pure and reads no clock.

>>> book = LeaseBook()
>>> book.add("c1", "llama", "warm", issued_at=0.0, start=60.0, end=600.0)
True
>>> book.add("c1", "llama", "warm", issued_at=0.0, start=60.0, end=600.0)  # duplicate
False
>>> book.plan(now=30.0, loaded=set())
Plan(load=[], unload=[])
>>> book.set_lead("llama", 45.0)       # loads take 45 s: start loading at 15 s
>>> book.plan(now=30.0, loaded=set())
Plan(load=['llama'], unload=[])
>>> book.plan(now=600.0, loaded={"llama"})
Plan(load=[], unload=['llama'])
>>> _ = book.add("c2", "llama", "release", issued_at=100.0, start=100.0, end=100.0)
>>> book.plan(now=101.0, loaded={"llama"})   # a release unloads at once
Plan(load=[], unload=['llama'])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Action = Literal["warm", "release"]
MINUTE = 60.0
#: commands per model whose cut is remembered (the newest)
MARKS = 64


def cut_of(action: str, issued_at: float) -> float:
    """From when a command replaces the older leases of its model.

    >>> cut_of("warm", 125.0), cut_of("warm", 120.0), cut_of("release", 125.0)
    (180.0, 180.0, 125.0)
    """
    if action == "release":
        return issued_at
    return (math.floor(issued_at / MINUTE) + 1) * MINUTE


@dataclass(slots=True)
class BookedLease:
    """One command as the book keeps it; ``end`` is cut by newer commands."""

    command_id: str
    action: str
    issued_at: float
    start: float
    end: float
    seq: int  # arrival order: breaks ties of issued_at


class Plan(NamedTuple):
    """What to do now: models to load (most urgent first) and models to unload."""

    load: list[str]
    unload: list[str]


@dataclass(slots=True)
class _Model:
    leases: list[BookedLease] = field(default_factory=list)
    #: (issued_at, cut) of the latest commands, releases too: an older command read
    #: later is cut by them
    marks: list[tuple[float, float]] = field(default_factory=list)


class LeaseBook:
    """Leases by served model, with the command ids seen (at most ``memory`` of them).

    ``lead`` is the default lead time of a model whose load time is not known yet.

    A newer command cuts an older lease; an older command read after a newer one (a
    replay) is cut by the newer one, so the book does not depend on the order it reads
    commands in:

    >>> book = LeaseBook()
    >>> _ = book.add("new", "m", "warm", issued_at=300.0, start=360.0, end=900.0)
    >>> _ = book.add("old", "m", "warm", issued_at=0.0, start=60.0, end=3600.0)
    >>> book.wanted("m", 200.0), book.wanted("m", 899.0), book.wanted("m", 1000.0)
    (True, True, False)
    """

    def __init__(self, lead: float = 0.0, memory: int = 100_000) -> None:
        self.default_lead = lead
        self.memory = memory
        self.models: dict[str, _Model] = {}
        self.leads: dict[str, float] = {}  # measured lead time by model
        self.seen: OrderedDict[str, str] = OrderedDict()  # command id -> model id
        self._seq = 0

    def __len__(self) -> int:
        return len(self.models)

    def add(
        self,
        command_id: str,
        model_id: str,
        action: str,
        issued_at: float,
        start: float,
        end: float,
    ) -> bool:
        """Book a command; ``False`` when its id was seen before (it is ignored)."""
        if command_id in self.seen:
            self.seen.move_to_end(command_id)
            return False
        self.seen[command_id] = model_id
        while len(self.seen) > self.memory:
            self.seen.popitem(last=False)
        self._seq += 1
        new = BookedLease(command_id, action, issued_at, start, end, self._seq)
        model = self.models.setdefault(model_id, _Model())
        new_cut = cut_of(action, issued_at)
        for lease in model.leases:
            if lease.issued_at <= issued_at:
                lease.end = min(lease.end, new_cut)
        for mark_issued, mark_cut in model.marks:
            if mark_issued > issued_at:
                new.end = min(new.end, mark_cut)
        model.marks.append((issued_at, new_cut))
        if len(model.marks) > MARKS:
            model.marks.sort()
            del model.marks[: len(model.marks) - MARKS]
        if action == "warm" and new.end > new.start:
            model.leases.append(new)
        model.leases = [lease for lease in model.leases if lease.end > lease.start]
        return True

    def set_lead(self, model_id: str, seconds: float) -> None:
        """How long before its lease starts a model is loaded (its expected load time)."""
        self.leads[model_id] = max(0.0, seconds)

    def lead(self, model_id: str) -> float:
        return self.leads.get(model_id, self.default_lead)

    def live(self, model_id: str, now: float) -> bool:
        """A lease covers ``now``: the model must not be unloaded.

        >>> book = LeaseBook()
        >>> _ = book.add("c", "m", "warm", issued_at=0.0, start=60.0, end=120.0)
        >>> book.live("m", 59.0), book.live("m", 60.0), book.live("m", 120.0)
        (False, True, False)
        """
        model = self.models.get(model_id)
        return model is not None and any(le.start <= now < le.end for le in model.leases)

    def due(self, model_id: str, now: float) -> float | None:
        """When the model must be ready: the start of the earliest lease that wants it
        loaded at ``now`` (``None``: none does)."""
        model = self.models.get(model_id)
        if model is None:
            return None
        lead = self.lead(model_id)
        starts = [le.start for le in model.leases if le.start - lead <= now < le.end]
        return min(starts) if starts else None

    def wanted(self, model_id: str, now: float) -> bool:
        """The model must be loaded at ``now`` (a lease covers it, or starts within the
        model's lead time)."""
        return self.due(model_id, now) is not None

    def plan(self, now: float, loaded: Collection[str]) -> Plan:
        """Models to load (wanted, not loaded; the earliest due first) and to unload
        (loaded, booked, wanted by no lease). A model the book never heard of is left
        alone: the server may hold models warmcast does not manage."""
        load: list[tuple[float, str]] = []
        unload: list[str] = []
        for model_id in self.models:
            due = self.due(model_id, now)
            if due is not None and model_id not in loaded:
                load.append((due, model_id))
            elif due is None and model_id in loaded:
                unload.append(model_id)
        load.sort()
        return Plan([m for _, m in load], sorted(unload))

    def next_change(self, now: float) -> float | None:
        """The next time after ``now`` when :meth:`plan` may answer differently.

        >>> book = LeaseBook(lead=10.0)
        >>> _ = book.add("c", "m", "warm", issued_at=0.0, start=60.0, end=120.0)
        >>> book.next_change(0.0), book.next_change(50.0), book.next_change(120.0)
        (50.0, 120.0, None)
        """
        times: list[float] = []
        for model_id, model in self.models.items():
            lead = self.lead(model_id)
            for lease in model.leases:
                times.extend(t for t in (lease.start - lead, lease.end) if t > now)
        return min(times) if times else None

    def prune(self, now: float, loaded: Collection[str]) -> None:
        """Forget leases that have ended, and models with no lease that are not loaded
        (their measured lead time is kept)."""
        for model_id in list(self.models):
            model = self.models[model_id]
            model.leases = [le for le in model.leases if le.end > now]
            if not model.leases and model_id not in loaded:
                del self.models[model_id]

    def forget(self, model_ids: Iterable[str]) -> None:
        """Drop models another executor owns now (a rebalance): not unloaded by this one,
        and their commands are booked again if they come back.

        >>> book = LeaseBook()
        >>> _ = book.add("c", "m", "warm", issued_at=0.0, start=60.0, end=120.0)
        >>> book.forget(["m"])
        >>> len(book), book.add("c", "m", "warm", issued_at=0.0, start=60.0, end=120.0)
        (0, True)
        """
        gone = set(model_ids)
        for model_id in gone:
            self.models.pop(model_id, None)
        for command_id in [c for c, m in self.seen.items() if m in gone]:
            del self.seen[command_id]

    def leased(self, now: float) -> set[str]:
        """Models a lease covers at ``now`` (what the server's index should show)."""
        return {m for m in self.models if self.live(m, now)}


__all__ = ["MINUTE", "BookedLease", "LeaseBook", "Plan", "cut_of"]
