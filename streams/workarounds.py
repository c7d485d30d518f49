"""Where warmcast reaches past the public APIs of Faust, aiokafka and river, in one place.

Each workaround below says what it does, why, and which private parts of which library
it touches. The versions they were written against are pinned in ``pyproject.toml``;
:func:`check` looks, at the worker's start, that the installed libraries still are those
versions and still have every private part used, and says what is off (a warning: the
worker still runs, but the behaviour that workaround gives may be lost). Each workaround
has a test of its own (``tests/streams/test_workarounds.py``).

Private parts used elsewhere, listed here so that :func:`check` covers them:

- ``streams.undecodable`` wraps aiokafka's ``Fetcher._proc_fetch_request`` to stop at a
  record batch that cannot be decoded instead of failing the whole fetch;
- ``streams.emit.drain_before_flush`` wraps the Faust producer's ``flush`` so that what
  the emitters queued is delivered before each offset commit;
- ``streams.sensors.UnmonitoredApp`` leaves Faust's Monitor out of its sensors;
- ``engine.prediction`` seeds river's ``LogisticRegression`` weights (``_weights``).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

log = logging.getLogger(__name__)

#: The (major, minor) versions the workarounds were written against.
TESTED_WITH = {"faust-streaming": (0, 15), "aiokafka": (0, 14), "river": (0, 26)}


@dataclass(frozen=True)
class Workaround:
    """One reach past a library's public API."""

    name: str
    library: str
    where: str
    why: str
    #: ``(module, class, attributes)``: what must exist for it to work
    needs: tuple[str, str, tuple[str, ...]]


WORKAROUNDS = (
    Workaround(
        "fetch_wait",
        "aiokafka",
        "tune_consumer",
        "Faust fixes the fetch wait at 1.5 s; the embedded broker holds an empty fetch for "
        "its whole wait, which would add that much latency per event",
        ("aiokafka.consumer.fetcher", "Fetcher", ("_fetch_max_wait_ms",)),
    ),
    Workaround(
        "consumer_thread",
        "faust-streaming",
        "kafka_consumer",
        "the worker pauses, resumes and seeks partitions in the AIOKafkaConsumer that "
        "Faust runs in a thread of its own",
        (
            "faust.transport.drivers.aiokafka",
            "AIOKafkaConsumerThread",
            ("_consumer", "call_thread"),
        ),
    ),
    Workaround(
        "commit",
        "faust-streaming",
        "commit_offsets",
        "a restore moves the group's commit up to what a checkpoint has seen",
        ("faust.transport.consumer", "Consumer", ("_commit",)),
    ),
    Workaround(
        "unacked",
        "faust-streaming",
        "forget_unacked",
        "a message held for a delivery is let go unacknowledged at a rebalance",
        ("faust.transport.consumer", "Consumer", ("_unacked_messages",)),
    ),
    Workaround(
        "acknowledge_gap",
        "faust-streaming",
        "acknowledge_skipped",
        "the offsets of a skipped undecodable batch count as done, as Consumer.ack does",
        (
            "faust.transport.consumer",
            "Consumer",
            ("_add_gap", "_acked", "_acked_index", "_committed_offset", "_n_acked"),
        ),
    ),
    Workaround(
        "wait_empty",
        "faust-streaming",
        "streams.app.WarmcastApp._consumer_wait_empty",
        "before a rebalance or a stop, wait a bounded time for held messages",
        ("faust.app.base", "App", ("_consumer_wait_empty",)),
    ),
    Workaround(
        "key_partition",
        "faust-streaming",
        "key_partitions",
        "the in-memory store learns a key's partition when health is written through",
        ("faust.stores.memory", "Store", ("_key_partition",)),
    ),
    Workaround(
        "ensure_producer",
        "faust-streaming",
        "ensure_producer",
        "record batches go to the AIOKafkaProducer under Faust's producer",
        ("faust.transport.drivers.aiokafka", "Producer", ("_ensure_producer",)),
    ),
    Workaround(
        "fetch_guard",
        "aiokafka",
        "streams.undecodable.guard_consumer",
        "a record batch that cannot be decoded pauses its partition only",
        ("aiokafka.consumer.fetcher", "Fetcher", ("_proc_fetch_request",)),
    ),
    Workaround(
        "drain_before_flush",
        "faust-streaming",
        "streams.emit.drain_before_flush",
        "what the emitters queued is delivered before each offset commit",
        ("faust.transport.drivers.aiokafka", "Producer", ("flush",)),
    ),
    Workaround(
        "no_monitor",
        "faust-streaming",
        "streams.sensors.UnmonitoredApp",
        "Faust's Monitor hears nothing unless its statistics pages are on",
        ("faust.app.base", "App", ("on_init_dependencies", "monitor")),
    ),
    Workaround(
        "seed_weights",
        "river",
        "engine.prediction",
        "the usage learner starts as the plain hazard estimator",
        ("river.linear_model.base", "GLM", ("_weights",)),
    ),
)


def _has(cls: type, attribute: str) -> bool:
    """Whether a class has ``attribute``, or sets it in an ``__init__`` (or Mode's
    ``__post_init__``) of its own or of a base."""
    if hasattr(cls, attribute):
        return True
    assigned = re.compile(rf"\.{re.escape(attribute)}\b\s*(:[^=]*)?=")
    for klass in cls.__mro__:
        for name in ("__init__", "__post_init__"):
            init = klass.__dict__.get(name)
            try:
                if init is not None and assigned.search(inspect.getsource(init)):
                    return True
            except (OSError, TypeError):
                continue
    return False


def missing(workaround: Workaround) -> list[str]:
    """The private parts a workaround needs that the installed library lacks."""
    module_name, class_name, attributes = workaround.needs
    try:
        module = __import__(module_name, fromlist=[class_name])
        cls = getattr(module, class_name)
    except (ImportError, AttributeError):
        return [f"{module_name}.{class_name}"]
    return [f"{class_name}.{a}" for a in attributes if not _has(cls, a)]


def version_problem(library: str, installed: str | None) -> str | None:
    """What is off with a library's installed version (``None``: the tested one).

    >>> version_problem("aiokafka", "0.14.0") is None
    True
    >>> version_problem("aiokafka", "0.15.1")
    'aiokafka 0.15.1 is installed; the workarounds were written against 0.14'
    >>> version_problem("river", None)
    'river is not installed'
    """
    if installed is None:
        return f"{library} is not installed"
    tested = TESTED_WITH[library]
    parts = installed.split(".")
    try:
        found = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        found = (-1, -1)
    if found != tested:
        pin = ".".join(map(str, tested))
        return f"{library} {installed} is installed; the workarounds were written against {pin}"
    return None


def check() -> list[str]:
    """Every problem with the workarounds on the installed libraries (empty: none)."""
    problems = []
    for library in TESTED_WITH:
        try:
            installed: str | None = version(library)
        except PackageNotFoundError:
            installed = None
        problem = version_problem(library, installed)
        if problem is not None:
            problems.append(problem)
    for w in WORKAROUNDS:
        lacks = missing(w)
        if lacks:
            problems.append(f"{w.name} ({w.where}): {w.library} lacks {', '.join(lacks)}")
    return problems


def warn_if_off(logger: logging.Logger = log) -> list[str]:
    """Log each problem :func:`check` finds (a warning each); returns them."""
    problems = check()
    for problem in problems:
        logger.warning("framework workaround: %s", problem)
    return problems


# -- the workarounds ----------------------------------------------------------------------


def kafka_consumer(app: Any) -> tuple[Any, Any]:
    """The thread Faust runs its Kafka consumer in, and that ``AIOKafkaConsumer``
    (``None``, ``None`` before the consumer has started)."""
    thread = getattr(app.consumer, "_thread", None)
    return thread, getattr(thread, "_consumer", None)


def tune_consumer(app: Any, fetch_max_wait_ms: int) -> bool:
    """Set how long the worker's fetches wait for data (Faust fixes it at 1.5 s).

    A Kafka broker answers a fetch as soon as data arrives; the embedded broker holds an
    empty fetch for its whole wait, which would add up to that much latency per event.
    Returns whether the consumer was found.
    """
    _, consumer = kafka_consumer(app)
    if consumer is None:
        return False
    set_fetch_wait(consumer, fetch_max_wait_ms)
    return True


def set_fetch_wait(consumer: Any, fetch_max_wait_ms: int) -> None:
    """Set an ``AIOKafkaConsumer``'s fetch wait, in it and in its fetcher."""
    consumer._fetch_max_wait_ms = fetch_max_wait_ms
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = fetch_max_wait_ms


async def stop_fetching_changelogs(app: Any) -> list[TP]:
    """Pause the table changelog partitions this worker recovered from, in its Kafka
    consumer; returns them.

    The worker writes its tables' changelogs and reads them only to recover. Faust leaves
    them fetched once recovery is over and drops what comes back, but the client keeps a
    fetched partition's records until they are consumed and, meanwhile, holds back every
    fetch to that broker for its prefetch backoff (0.1 s): the first changelog write after
    a rebalance would stall the usage events behind it. Paused, they are not fetched; the
    next rebalance makes a new assignment, in which Faust recovers before this runs again.
    Standby partitions (``table_standby_replicas``) keep being fetched.
    """
    thread, consumer = kafka_consumer(app)
    if consumer is None:
        return []
    changelogs = app.tables.changelog_topics
    recovery = getattr(app.tables, "recovery", None)
    standbys = recovery.standby_tps if recovery is not None else set()
    tps = [tp for tp in consumer.assignment() if tp.topic in changelogs and tp not in standbys]
    if tps:

        async def pause() -> None:
            consumer.pause(*tps)

        await thread.call_thread(pause)
    return tps


def seek_uncommitted_to_beginning(app: Any) -> bool:
    """Make the consumer's seek to committed offsets, which Faust does before its streams
    resume after each rebalance, also seek the partitions that have no committed offset:
    to their beginning (the worker's offset reset). Returns whether the consumer was found.

    aiokafka leaves such a partition where its fetcher is, and while Faust recovers its
    tables it may have taken records of it from the fetcher and dropped them: a partition
    that has something to seek back to gets them again, one without a commit (a new
    group, or one that has waited since its first offset) lost them.
    """
    _, consumer = kafka_consumer(app)
    if consumer is None:
        return False
    if getattr(consumer, "_warmcast_seeks_uncommitted", False):
        return True
    seek_to_committed = consumer.seek_to_committed

    async def seek_every_partition(*partitions: Any) -> Any:
        offsets = await seek_to_committed(*partitions)
        for tp, offset in offsets.items():
            if offset == 0:
                consumer.seek(tp, 0)  # aiokafka seeks only past 0
        fresh = [tp for tp, offset in offsets.items() if offset is None or offset < 0]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        return offsets

    consumer.seek_to_committed = seek_every_partition
    consumer._warmcast_seeks_uncommitted = True
    return True


async def switch_fetching(app: Any, tps: set[TP], on: bool) -> None:
    """Resume (``on``) or pause the fetching of ``tps`` that the consumer is assigned."""
    thread, consumer = kafka_consumer(app)
    if consumer is None:
        return
    assigned = consumer.assignment()
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    wanted = [tp for tp in wanted if tp in assigned]
    if not wanted:
        return

    async def switch() -> None:
        (consumer.resume if on else consumer.pause)(*wanted)

    await thread.call_thread(switch)


def forget_unacked(app: Any, message: Any) -> None:
    """Let a message go unacknowledged: Faust no longer waits for it before a rebalance."""
    untaken = getattr(app.consumer, "_unacked_messages", None)
    if untaken is not None:
        untaken.discard(message)


def unacked_messages(consumer: Any) -> Any:
    """Faust's set of messages taken and not yet acknowledged (``None``: not found)."""
    return getattr(consumer, "_unacked_messages", None)


async def commit_offsets(app: Any, offsets: dict[TP, int]) -> Any:
    """Commit ``offsets`` for the group now, as Faust's own commit does."""
    return await app.consumer._commit(offsets)


async def acknowledge_skipped(consumer: Any, tp: TP, first: int, last: int, lock: Any) -> None:
    """Count offsets ``first`` to ``last`` of ``tp`` as processed: a gap up to ``last - 1``
    and ``last`` acknowledged, as ``Consumer.ack`` does it (under ``lock``)."""
    if last > first:
        await consumer._add_gap(tp, first, last - 1)
    with lock:
        committed = consumer._committed_offset[tp]
        if (committed is None or last >= committed) and last not in consumer._acked_index[tp]:
            consumer._acked_index[tp].add(last)
            consumer._acked[tp].append(last)
            consumer._n_acked += 1


def key_partitions(storage: Any) -> dict[bytes, int] | None:
    """The in-memory store's key -> partition map (``None``: a store without one)."""
    found: dict[bytes, int] | None = getattr(storage, "_key_partition", None)
    return found


def ensure_producer(app: Any) -> Callable[[], Any]:
    """What gives the AIOKafkaProducer under the Faust app's producer (once started)."""
    return lambda: app.producer._ensure_producer()
