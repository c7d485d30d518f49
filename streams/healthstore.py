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
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from engine.health import ModelHealth

#: Sends one table entry to the changelog: (model id, key, value; ``None`` deletes it).
Changelog = Callable[[str, bytes, bytes | None], None]


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

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: dict[str, ModelHealth] = {}
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


def _decode(model_id: str, stored: Any) -> ModelHealth | None:
    """A stored entry as an object: the bytes form, or the dict older workers wrote."""
    if not stored:
        return None
    if isinstance(stored, dict):
        return ModelHealth.from_dict({**stored, "model_id": model_id})
    return ModelHealth.from_bytes(model_id, stored)
