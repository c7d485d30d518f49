"""The worker's own work per usage event, timed in the bench's process with no Kafka.

Each usage message is decoded and checked as the usage agent does it
(:meth:`streams.runtime.Runtime.decode`); the events of each batch go to their partition's
engine and rolling health at once (:meth:`streams.runtime.Runtime.apply_usage`, the
worker's own step), and each command is encoded as the worker sends it. Batches are cut as
the usage agent cuts a backlog: ``usage_batch_messages`` messages, or ``usage_batch_bytes``.

Left out: Faust, the consumer and the producer, the broker, the health table's writes and
the metrics of each message. The worker's rate over this one is the share of its time
left to warmcast's own work once those have had theirs; this one, measured between the
worker's rounds, also shows how fast the machine ran warmcast's Python at that moment.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson

from engine.health import ModelHealth
from schemas.usage import UsageEvent
from streams.collector import settle_garbage_collector
from streams.runtime import Runtime
from streams.settings import WarmcastSettings

#: One usage message as the bench produces it: (partition, key, value, events in it).
Message = tuple[int, bytes, bytes, int]


@dataclass(frozen=True)
class EngineRun:
    """What one in-process run went through, and how long it took."""

    messages: int
    events: int
    commands: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def batches(messages: Sequence[Message], most: int, most_bytes: int) -> Iterator[Sequence[Message]]:
    """``messages`` in the usage agent's batches: at most ``most`` messages, and full
    once their values reach ``most_bytes``.

    >>> msgs = [(0, b"k", b"x" * 10, 1)] * 5
    >>> [len(b) for b in batches(msgs, 2, 1000)], [len(b) for b in batches(msgs, 9, 25)]
    ([2, 2, 1], [3, 2])
    """
    start, size = 0, 0
    for i, (_, _, value, _) in enumerate(messages):
        size += len(value)
        if i + 1 - start == most or size >= most_bytes:
            yield messages[start : i + 1]
            start, size = i + 1, 0
    if start < len(messages):
        yield messages[start:]


@contextlib.contextmanager
def collector_as_worker(young_threshold: int) -> Iterator[None]:
    """The garbage collector as the worker sets it
    (:func:`~streams.collector.settle_garbage_collector`), for a while."""
    thresholds = gc.get_threshold()
    settle_garbage_collector(young_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def run_engine(messages: Iterable[Message], settings: WarmcastSettings) -> EngineRun:
    """Take ``messages`` through a fresh :class:`~streams.runtime.Runtime` of
    ``settings``, batch by batch, as the worker's usage step would (see the module)."""
    msgs = list(messages)
    runtime = Runtime(settings)
    stored: dict[str, ModelHealth] = {}  # nothing stored: every model starts afresh
    dumps = orjson.dumps
    events = commands = 0
    cut = list(batches(msgs, settings.usage_batch_messages, settings.usage_batch_bytes))
    with collector_as_worker(settings.gc_young_threshold):
        started = time.perf_counter()
        for batch in cut:
            now = time.time()
            mine: dict[int, list[UsageEvent]] = {}
            for partition, _, value, _ in batch:
                mine.setdefault(partition, []).extend(runtime.decode(value, UsageEvent, now).events)
            for partition, good in mine.items():
                out, _ = runtime.apply_usage(partition, good, stored.get, now)
                for command in out:
                    dumps(command.to_dict())
                events += len(good)
                commands += len(out)
        seconds = time.perf_counter() - started
    return EngineRun(len(msgs), events, commands, seconds)
