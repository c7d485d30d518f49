"""The rolling health table, written in batches.

Per served model the worker keeps a :class:`~engine.health.ModelHealth`; the Faust table
(with its changelog) is how it survives a restart. Writing the table at every message
would send a changelog record per model and message, so changed entries are kept apart
and written on a timer, when partitions are revoked and when the worker stops.

Table keys are the model id's bytes and the table partitions by key exactly as producers
of usage events do, so a model's health lives in the changelog partition numbered like
the usage partition that owns the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import attrgetter
from typing import Any

from engine.health import ModelHealth, stored_scalars
from engine.ranking import TopRanking

#: Sends one table entry to the changelog: (model id, key, value; ``None`` deletes it).
Changelog = Callable[[str, bytes, bytes | None], None]

#: The figures a health listing may order served models by (highest first).
RANKED = ("requests_total", "cold_starts_total", "errors_total", "last_seen")
_ranked_values = attrgetter(*RANKED)  # in RANKED's order, which _note relies on


class HealthRankings:
    """One :class:`~engine.ranking.TopRanking` per figure of :data:`RANKED`, told of every
    change of a model's health, so that a listing never orders the whole fleet.

    ``stale``: the store holds models the rankings were never told of (a table recovered
    from its changelog, partitions that came or went); a rebuild from a pass over the store
    (:func:`rebuild_rankings`) makes them whole again. Meanwhile they still answer with
    what they know, and say that it may be incomplete.

    >>> r = HealthRankings(capacity=10)
    >>> h = ModelHealth("m")
    >>> h.update(60.0, count=3, cold=1)
    >>> r.note(h)
    >>> r.ranked("cold_starts_total", 5), r.complete("cold_starts_total", 5)
    ([('m', 1)], False)
    >>> r.stale = False
    >>> r.complete("cold_starts_total", 5)
    True
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.by = {name: TopRanking(capacity) for name in RANKED}
        self.stale = True
        self._fresh: dict[str, TopRanking] | None = None  # a rebuild under way
        self.rebuilds = 0

    def note(self, health: ModelHealth) -> None:
        """The model's health has changed."""
        self._note(
            health.model_id,
            (
                health.requests_total,
                health.cold_starts_total,
                health.errors_total,
                health.last_seen,
            ),
        )

    def _note(self, model_id: str, values: tuple[Any, ...]) -> None:
        requests, cold, errors, seen = self._order
        requests.update(model_id, values[0])
        cold.update(model_id, values[1])
        errors.update(model_id, values[2])
        seen.update(model_id, values[3])
        fresh = self._fresh
        if fresh is not None:
            for ranking, value in zip(fresh.values(), values, strict=True):
                ranking.update(model_id, value)

    @property
    def _order(self) -> tuple[TopRanking, ...]:
        by = self.by
        return by["requests_total"], by["cold_starts_total"], by["errors_total"], by["last_seen"]

    def discard(self, model_id: str) -> None:
        for ranking in self.by.values():
            ranking.discard(model_id)
        if self._fresh is not None:
            for ranking in self._fresh.values():
                ranking.discard(model_id)

    def drop(self, gone: Callable[[str], bool]) -> None:
        """Forget the models for which ``gone(model_id)`` holds (partitions taken away)
        and ask for a rebuild: the partitions that come instead bring models of their own."""
        for ranking in self.by.values():
            ranking.discard_where([m for m in ranking.held() if gone(m)])
        self._fresh = None  # a rebuild under way started before: it starts again
        self.stale = True

    def ranked(self, name: str, n: int, offset: int = 0) -> list[tuple[str, float]]:
        """The models ranked ``offset`` to ``offset + n`` by ``name``, as far as known."""
        return self.by[name].best_known(n, offset)

    def complete(self, name: str, n: int, offset: int = 0) -> bool:
        """Whether :meth:`ranked` is exact: every model of the store is in its place."""
        ranking = self.by[name]
        return not self.stale and (ranking.floor is None or offset + n <= ranking.exact)

    def wants_rebuild(self, listed: int) -> bool:
        """Whether a listing of ``listed`` models could miss some, by any figure."""
        return self.stale or any(not self.complete(name, listed) for name in RANKED)

    def begin_rebuild(self) -> dict[str, TopRanking]:
        """Empty rankings to fill from a pass over the store; changes noted meanwhile go
        to them as well."""
        self._fresh = {name: TopRanking(self.capacity) for name in RANKED}
        return self._fresh

    def finish_rebuild(self, fresh: dict[str, TopRanking]) -> bool:
        """Take the filled rankings, unless a change of partitions has voided them."""
        if self._fresh is not fresh:
            return False
        self.by, self._fresh, self.stale = fresh, None, False
        self.rebuilds += 1
        return True


class HealthStore:
    """Decoded, not yet written health beside the table that keeps it.

    ``table`` is any mapping from ``model_id.encode()`` to the stored form,
    :meth:`ModelHealth.to_bytes` (a Faust table in the worker, a plain dict in tests).
    Bytes keep a large fleet's health small: a decoded model costs several times more.

    >>> store = HealthStore({})
    >>> h = ModelHealth("m")
    >>> h.update(60.0)
    >>> store.mark({"m": h})
    >>> store.get("m")["requests_total"], store.table
    (1, {})
    >>> store.flush(), ModelHealth.from_bytes("m", store.table[b"m"]).requests_total
    (1, 1)
    """

    def __init__(self, table: Any, ranked: int = 2_000) -> None:
        self.table = table
        self.pending: dict[str, ModelHealth] = {}
        #: The first ``ranked`` models by each figure of :data:`RANKED`, kept as they change.
        self.rankings = HealthRankings(ranked)
        #: Models changed since their last ranking (:meth:`rank_changed`).
        self.unranked: dict[str, ModelHealth] = {}
        self._storage: Any = None
        self._changelog: Changelog | None = None

    def write_through(self, storage: Any, changelog: Changelog) -> None:
        """Write entries straight into ``storage`` (the mapping the table reads from)
        and hand each to ``changelog(model_id, key, value)``, which sends it in record
        batches, instead of through the table, one changelog send per entry.

        >>> store, storage, sent = HealthStore({}), {}, []
        >>> store.write_through(storage, lambda m, key, value: sent.append((m, value is None)))
        >>> h = ModelHealth("m")
        >>> h.update(60.0)
        >>> store.mark({"m": h})
        >>> store.flush(), list(storage), sent, store.table
        (1, [b'm'], [('m', False)], {})
        >>> store.forget(["m"])
        >>> storage, sent[-1], store.get("m")
        ({}, ('m', True), None)
        """
        self._storage, self._changelog = storage, changelog

    @property
    def writes_through(self) -> bool:
        return self._changelog is not None

    def mark(self, changed: dict[str, ModelHealth]) -> None:
        """Remember changed models until the next :meth:`flush`."""
        self.pending.update(changed)
        self.unranked.update(changed)

    def rank_changed(self, most: int | None = None) -> int:
        """Tell the rankings of the changes marked since (``most``: of at most that many
        models, those that have waited longest); returns how many were ranked.

        Ranking a model costs a few microseconds; the worker does it on a timer, once per
        model however many messages changed it meanwhile, not in the path of each batch.
        """
        unranked, note = self.unranked, self.rankings.note
        due = list(unranked) if most is None else list(islice(unranked, most))
        for model_id in due:
            note(unranked.pop(model_id))
        return len(due)

    def decoded(self, model_id: str) -> ModelHealth | None:
        """The model's health as an object (pending first, else from the table)."""
        health = self.pending.get(model_id)
        if health is not None:
            return health
        return _decode(model_id, self.table.get(model_id.encode()))

    def get(self, model_id: str) -> dict[str, Any] | None:
        """The model's health as stored (pending changes included)."""
        health = self.pending.get(model_id)
        if health is not None:
            return health.to_dict()
        health = _decode(model_id, self.table.get(model_id.encode()))
        return health.to_dict() if health is not None else None

    def detached(self, model_id: str) -> ModelHealth | None:
        """A copy of the model's health that may be changed (a snapshot settles leases),
        leaving the live object of a pending change as it is."""
        health = self.pending.get(model_id)
        if health is not None:
            return ModelHealth.from_bytes(model_id, health.to_bytes())
        return _decode(model_id, self.table.get(model_id.encode()))

    def count(self) -> int:
        """How many models the store holds: the table's and the new ones pending (a pass
        over the pending ones alone, which early writes keep to a few thousand).

        >>> store = HealthStore({b"a": ModelHealth("a").to_bytes()})
        >>> store.mark({m: ModelHealth(m) for m in "ab"})
        >>> store.count()
        2
        """
        source = self.source()
        return len(source) + sum(1 for m in self.pending if m.encode() not in source)

    def source(self) -> Any:
        """The mapping the entries are read from (the table's storage once written to
        directly)."""
        return self._storage if self._storage is not None else self.table

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every model this worker holds, with its latest health."""
        pending = self.pending
        for key, stored in list(self.table.items()):
            model_id = key.decode() if isinstance(key, bytes) else str(key)
            if model_id not in pending:
                health = _decode(model_id, stored)
                if health is not None:
                    yield model_id, health.to_dict()
        for model_id, health in list(pending.items()):
            yield model_id, health.to_dict()

    def forget(self, model_ids: list[str]) -> None:
        """Drop models the engine no longer tracks (a tombstone in the changelog)."""
        table, storage, changelog = self.table, self._storage, self._changelog
        for model_id in model_ids:
            self.pending.pop(model_id, None)
            self.unranked.pop(model_id, None)
            self.rankings.discard(model_id)
            key = model_id.encode()
            if changelog is not None:
                if storage.pop(key, None) is not None:
                    changelog(model_id, key, None)
            elif key in table:
                del table[key]

    def flush(self, partitions: set[int] | None = None, owner: Any = None) -> int:
        """Write pending changes to the table; only those of ``partitions`` when given
        (``owner(model_id)`` tells a model's partition). Returns how many were written."""
        if partitions is None:
            due = list(self.pending)
        else:
            due = [m for m in self.pending if owner(m) in partitions]
        return self.flush_models(due)

    def flush_oldest(self, n: int) -> int:
        """Write the pending changes of the ``n`` models that have waited longest.

        >>> store = HealthStore({})
        >>> store.mark({m: ModelHealth(m) for m in "abc"})
        >>> store.mark({"a": store.pending["a"]})  # changed again: it still waits longest
        >>> store.flush_oldest(2), sorted(store.table), list(store.pending)
        (2, [b'a', b'b'], ['c'])
        """
        return self.flush_models(list(islice(self.pending, n)))

    def flush_models(self, model_ids: list[str]) -> int:
        """Write these models' pending changes to the table."""
        table, pending, changelog = self.table, self.pending, self._changelog
        target = table if changelog is None else self._storage
        for model_id in model_ids:
            key = model_id.encode()
            value = target[key] = pending.pop(model_id).to_bytes()
            if changelog is not None:
                changelog(model_id, key, value)
        return len(model_ids)


async def flush_in_steps(store: HealthStore, step: int, pause: float) -> int:
    """:meth:`HealthStore.flush` of the models pending now, in steps of ``step`` models,
    letting the event loop run between steps, so that a flush of many models does not
    hold up the messages behind; ``pause`` seconds between steps spread a flush that is
    not urgent over time. Models marked meanwhile wait for the next flush.

    >>> import asyncio
    >>> store = HealthStore({})
    >>> store.mark({m: ModelHealth(m) for m in "abcde"})
    >>> asyncio.run(flush_in_steps(store, step=2, pause=0.001)), sorted(store.table)
    (5, [b'a', b'b', b'c', b'd', b'e'])
    """
    written, due = 0, len(store.pending)
    while store.pending and written < due:
        written += store.flush_oldest(min(step, due - written))
        await asyncio.sleep(pause)
    return written


async def rank_in_steps(store: HealthStore, step: int) -> int:
    """:meth:`HealthStore.rank_changed` of the models changed by now, ``step`` at a time,
    letting the event loop run between steps.

    >>> store = HealthStore({})
    >>> store.rankings.stale = False
    >>> store.mark({m: ModelHealth(m) for m in "abc"})
    >>> store.rankings.ranked("requests_total", 5)
    []
    >>> asyncio.run(rank_in_steps(store, step=2)), store.rankings.ranked("requests_total", 2)
    (3, [('c', 0), ('b', 0)])
    """
    ranked, due = 0, len(store.unranked)
    while store.unranked and ranked < due:
        ranked += store.rank_changed(min(step, due - ranked))
        await asyncio.sleep(0)
    return ranked


async def rebuild_rankings(store: HealthStore, step: int = 1_000) -> bool:
    """Rank every model of ``store`` afresh, ``step`` models at a time, letting the event
    loop run between steps; changes noted meanwhile are ranked as they come. Returns
    whether the result was taken (a change of partitions meanwhile voids it).

    >>> store = HealthStore({}, ranked=2)
    >>> for m, n in (("a", 1), ("b", 3), ("c", 2)):
    ...     h = ModelHealth(m)
    ...     h.update(60.0, count=n)
    ...     store.table[m.encode()] = h.to_bytes()
    >>> store.rankings.ranked("requests_total", 2), store.rankings.stale
    ([], True)
    >>> asyncio.run(rebuild_rankings(store, step=2)), store.rankings.ranked("requests_total", 2)
    (True, [('b', 3), ('c', 2)])
    """
    rankings = store.rankings
    fresh = rankings.begin_rebuild()
    source = store.source()
    keys: list[Any] = list(source.keys())
    keys += [m.encode() for m in store.pending if m.encode() not in source]
    for start in range(0, len(keys), step):
        if rankings._fresh is not fresh:
            return False
        _rank_all(store, source, keys[start : start + step], fresh.values())
        await asyncio.sleep(0)
    return rankings.finish_rebuild(fresh)


def _rank_all(
    store: HealthStore, source: Any, keys: list[Any], rankings: Iterable[TopRanking]
) -> None:
    """Rank the models of ``keys`` by their current health (pending first)."""
    pending, order = store.pending, list(rankings)
    for key in keys:
        model_id = key.decode() if isinstance(key, bytes) else str(key)
        health = pending.get(model_id)
        if health is not None:
            values: tuple[Any, ...] = _ranked_values(health)
        else:
            stored = source.get(key)
            if not stored:
                continue
            scalars = stored if isinstance(stored, dict) else stored_scalars(stored)
            values = tuple(scalars.get(name) or 0 for name in RANKED)
        for ranking, value in zip(order, values, strict=True):
            ranking.update(model_id, value)


def _decode(model_id: str, stored: Any) -> ModelHealth | None:
    """A stored entry as an object: the bytes form, or the dict older workers wrote."""
    if not stored:
        return None
    if isinstance(stored, dict):
        return ModelHealth.from_dict({**stored, "model_id": model_id})
    return ModelHealth.from_bytes(model_id, stored)
