"""The served models that rank highest by one figure, kept as their figures change.

A worker may hold the health of hundreds of thousands of served models; a health listing
asks only for the first hundred or thousand by some figure (most requests, most cold
starts, latest seen). :class:`TopRanking` keeps the highest ``capacity`` models in order
and is told of every change, so that a listing costs what it lists, never a pass over
every model. Models are ordered by (value, model id), highest first.

It is bounded: a model that ranks below everything it holds when it is full is not kept.
``floor`` is then the highest place (value, model id) any model outside it could hold, so
the entries above the floor are exactly the first ones of the whole fleet; entries at or
below it may have been overtaken by models outside. Models leaving (evicted, moved to
another worker) shrink what is known exactly; :meth:`TopRanking.rebuild` from a pass over
the fleet, done in steps when it falls short, makes it whole again.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

#: A place in a ranking: (value, model id); higher places rank first.
Place = tuple[float, str]


class TopRanking:
    """The ``capacity`` highest-ranked served models by one value.

    >>> r = TopRanking(capacity=2)
    >>> for model_id, value in [("a", 5), ("b", 9), ("c", 7), ("a", 6)]:
    ...     r.update(model_id, value)
    >>> r.top(3), r.exact, r.floor
    ([('b', 9), ('c', 7)], 2, (6, 'a'))

    ``a`` was left out when ``c`` came: it may rank anywhere up to (6, ``a``), so once
    ``c`` leaves only ``b`` is known to be first:

    >>> r.discard("c")
    >>> r.top(3), r.exact
    ([('b', 9)], 1)
    >>> r.rebuild([("a", 6), ("b", 9)])
    >>> r.top(3), r.exact, r.floor
    ([('b', 9), ('a', 6)], 2, None)
    """

    __slots__ = ("_places", "_values", "capacity", "floor")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ranking holds at least one model")
        self.capacity = capacity
        #: The highest place a model not held may have; ``None``: every model is held.
        self.floor: Place | None = None
        self._places: list[Place] = []  # ascending: the first-ranked model is last
        self._values: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._places)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._values

    def update(self, model_id: str, value: float) -> None:
        """The model's value is now ``value``."""
        values, places = self._values, self._places
        old = values.get(model_id)
        if old is not None:
            if old == value:
                return
            del places[bisect_left(places, (old, model_id))]
        elif len(places) >= self.capacity:
            place = (value, model_id)
            lowest = places[0]
            if place <= lowest:  # ranks below everything held: left out
                if self.floor is None or place > self.floor:
                    self.floor = place
                return
            self._leave_out(lowest)
        values[model_id] = value
        insort(places, (value, model_id))

    def _leave_out(self, lowest: Place) -> None:
        """Drop the lowest-ranked model to make room; it may still rank up to its place."""
        del self._places[0]
        del self._values[lowest[1]]
        if self.floor is None or lowest > self.floor:
            self.floor = lowest

    def discard(self, model_id: str) -> None:
        """The model is gone (evicted, or its partition moved to another worker)."""
        old = self._values.pop(model_id, None)
        if old is not None:
            del self._places[bisect_left(self._places, (old, model_id))]

    def discard_where(self, gone: Iterable[str]) -> None:
        """:meth:`discard` each of ``gone``."""
        for model_id in gone:
            self.discard(model_id)

    def held(self) -> list[str]:
        """The models held, in no particular order."""
        return list(self._values)

    @property
    def exact(self) -> int:
        """How many of the first entries are known to be the fleet's first."""
        floor = self.floor
        if floor is None:
            return len(self._places)
        return len(self._places) - bisect_right(self._places, floor)

    def top(self, n: int, offset: int = 0) -> list[tuple[str, float]]:
        """Entries ``offset`` to ``offset + n`` (first-ranked first) of those known exactly."""
        places = self._places
        stop = min(offset + n, self.exact)
        first, last = len(places) - 1 - offset, len(places) - 1 - stop
        return [(places[i][1], places[i][0]) for i in range(first, last, -1)]

    def best_known(self, n: int, offset: int = 0) -> list[tuple[str, float]]:
        """Entries ``offset`` to ``offset + n`` of those held, exact or not."""
        places = self._places
        stop = min(offset + n, len(places))
        first, last = len(places) - 1 - offset, len(places) - 1 - stop
        return [(places[i][1], places[i][0]) for i in range(first, last, -1)]

    def rebuild(self, items: Iterable[tuple[str, float]]) -> None:
        """Start again from every model's value (a pass over the whole fleet).

        >>> r = TopRanking(capacity=2)
        >>> r.rebuild([("a", 1), ("b", 3), ("c", 2), ("d", 2)])
        >>> r.top(5), r.floor
        ([('b', 3), ('d', 2)], (2, 'c'))
        """
        self._places, self._values, self.floor = [], {}, None
        for model_id, value in items:
            self.update(model_id, value)


__all__ = ["Place", "TopRanking"]
