"""Usage agent: usage events in, engine fed, warmup commands out, health table kept.

A usage message is acknowledged (its offset may be committed) once what it caused is
delivered: its dead letters, the forwards of its events to the partitions that own them,
and the warmup commands they led to (:mod:`streams.holding`). Nothing raises out of the
agent into Faust's restart loop: a message the worker itself fails on is dead-lettered as
``processing_error``, counted as a crash of the agent (:mod:`streams.crashes`), and the
others go on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from faust.types import EventT, StreamT

from agents.health import EARLY_FLUSH_MODELS, HealthKeeper
from engine.partition import Origin
from schemas.envelope import EventError
from schemas.usage import UsageEvent
from streams.app import WarmcastApp
from streams.batching import behind, take_batches
from streams.partitioning import partition_for
from streams.sending import Delivery, split_to_fit

log = logging.getLogger(__name__)

FORWARDED = "warmcast.forwarded"
#: Where a forwarded record's events were first read: ``partition:offset.rank*n,...``
#: (``n`` events of the message at ``offset``, from its ``rank``-th forwarded item on).
ORIGIN = "warmcast.origin"
#: Room kept in a forwarded record for its origin header (a run per source message).
ORIGIN_ROOM = 2_048
AGENT = "agents.usage.usage_agent"  # the agent's name
#: A usage event and the message it came in.
Sourced = tuple[UsageEvent, EventT]


def register(app: WarmcastApp, keeper: HealthKeeper) -> UsageAgent:
    """Register the usage agent on ``app``; returns it."""
    usage = UsageAgent(app, keeper)
    app.agent(app.worker_topics.usage, name=AGENT)(usage.run)
    return usage


class UsageAgent:
    """Usage messages in, events to their partition's engine, commands out."""

    def __init__(self, app: WarmcastApp, keeper: HealthKeeper) -> None:
        self.app = app
        self.keeper = keeper
        self.topic = app.worker_topics.usage.get_topic_name()

    async def run(self, stream: StreamT) -> None:
        """Usage messages in batches of at most ``usage_batch_messages`` (or
        ``usage_batch_bytes``): the per-message work that is not per event is done once.
        A batch waits at most ``usage_batch_seconds`` to fill up, or
        ``usage_catchup_batch_seconds`` while the worker is behind."""
        app = self.app
        s = app.runtime.settings
        most = s.usage_batch_messages
        last: list[EventT] = []

        def wait() -> float:
            if last and behind(app.consumer, last[-1], most):
                return s.usage_catchup_batch_seconds
            return s.usage_batch_seconds

        sizes = app.runtime.metrics.usage_batches
        # Closed when the loop raises: a restarted agent reads the stream alone.
        async with contextlib.aclosing(
            take_batches(stream, most, s.usage_batch_bytes, wait, acknowledge=False)
        ) as batches:
            async for batch in batches:
                sizes.observe(len(batch))
                await self.process(batch)
                last = batch

    async def process(self, batch: Sequence[EventT]) -> None:
        """Messages taken together: each is decoded and checked on its own (bad ones are
        dead-lettered), then the events of each partition go to its engine at once; each
        partition's messages are acknowledged once what they caused is delivered."""
        app = self.app
        runtime = app.runtime
        metrics = runtime.metrics
        started = time.perf_counter()
        taken: dict[int, list[EventT]] = {}  # each partition's messages, in order
        waits: dict[int, list[Delivery]] = {}  # what they wait for
        try:
            now = time.time()
            routed = Routed(runtime.usage_partitions)
            read = runtime.read_offsets
            for event in batch:
                message = event.message
                partition = message.partition
                read[partition] = message.offset
                messages = taken.get(partition)
                if messages is None:
                    messages = taken[partition] = []
                    waits[partition] = []
                messages.append(event)
                good = await app.dead_letters.decode(
                    event, UsageEvent, now, waits[partition], AGENT, count=False
                )
                if good:
                    elsewhere = routed.add(partition, event, good)
                    if elsewhere:  # counted by the partition they arrived on
                        runtime.note_forwarded(partition, elsewhere, now)
            await self.deliver(routed, waits)
        except Exception as exc:  # a failure of the worker's own: the batch is dead-lettered
            log.exception("could not process a batch of %d usage messages", len(batch))
            for partition, messages in taken.items():
                waits[partition] += await app.dead_letters.failed(AGENT, exc, messages)
        finally:  # each message is counted, with its share of the batch's time
            settle = app.gate.settle
            for partition, messages in taken.items():
                settle(messages, waits[partition])
            n = len(batch)
            metrics.consumed(self.topic).inc(n)
            metrics.observe_many(
                metrics.usage_processing, (time.perf_counter() - started) / max(n, 1), n
            )

    async def deliver(self, routed: Routed, waits: dict[int, list[Delivery]]) -> None:
        """A batch's events forwarded to the partitions that own them, and the rest applied
        by their partition's engine; what each partition's messages wait for added to
        ``waits``."""
        for (source, owner), theirs in routed.foreign.items():
            waits[source] += await self.forward(owner, theirs)
        for partition, events in routed.mine.items():
            if events:
                waits[partition] += await self.apply_or_dead_letter(
                    partition,
                    events,
                    routed.offsets[partition],
                    routed.origins[partition],
                    routed.fed[partition],
                )

    async def forward(self, partition: int, events: list[Sourced]) -> list[Delivery]:
        """Send events to the partition that owns their served models (unkeyed producers), in
        as many envelopes as the producer's request limit needs; an event too large to be
        forwarded even alone is dead-lettered."""
        app = self.app
        sender = app.sender
        topic = self.topic
        key = events[0][0].model_id.encode()
        room = [(FORWARDED, b"1"), (ORIGIN, bytes(ORIGIN_ROOM))]

        def encode(part: Sequence[Sourced]) -> bytes:
            return orjson.dumps([e.model_dump(exclude_none=True) for e, _ in part])

        pieces, alone = split_to_fit(events, encode, lambda b: sender.fits(topic, key, b, room))
        first = events[0][1].message
        origin = (first.topic, first.partition, first.offset)
        places = places_of(events)
        out = []
        for part, body in pieces:
            where = [places[id(item)] for item in part]
            headers = [(FORWARDED, b"1"), (ORIGIN, origin_header(first.partition, where))]
            out.append(
                await sender.send(
                    topic, body, key=key, partition=partition, headers=headers, origin=origin
                )
            )
        for ev, source in alone:
            body = encode([(ev, source)])
            why = f"event of {len(body)} bytes cannot be forwarded within {sender.limit(topic)}"
            out.append(
                await app.dead_letters.dead_letter(
                    source, EventError("oversize", "RecordTooLarge", why, raw=body)
                )
            )
        return out

    async def apply_or_dead_letter(
        self,
        partition: int,
        events: list[UsageEvent],
        offsets: list[int],
        origins: list[Origin | None],
        messages: list[EventT],
    ) -> list[Delivery]:
        """:meth:`apply_usage`; if the worker fails on it, ``messages`` are dead-lettered
        as ``processing_error`` (:meth:`~streams.deadletters.DeadLetters.failed`). Returns
        what the messages wait for."""
        try:
            return await self.apply_usage(partition, events, offsets, origins)
        except Exception as exc:
            log.exception("could not apply %d usage events of partition %d", len(events), partition)
            return await self.app.dead_letters.failed(AGENT, exc, messages)

    async def apply_usage(
        self,
        partition: int,
        events: list[UsageEvent],
        offsets: list[int],
        origins: list[Origin | None] | None = None,
    ) -> list[Delivery]:
        """Events of models this partition owns (``offsets``: the input offset of each one's
        message, in order; ``origins``: where forwarded ones were first read): engine, rolling
        health, commands out (returns their deliveries)."""
        app = self.app
        runtime = app.runtime
        if origins is not None and not any(origins):
            origins = None
        store = app.health_store
        commands, touched = runtime.apply_usage(
            partition,
            events,
            store.decoded,
            time.time(),
            offset=offsets[-1],
            offsets=offsets,
            origins=origins,
        )
        store.mark(touched)
        over = len(store.pending) - runtime.settings.health_pending_max
        if over > 0:  # many new models: those waiting longest are written now, not on the timer
            self.keeper.write_through_changelog()
            store.flush_oldest(max(over, EARLY_FLUSH_MODELS))
        gone = runtime.steps[partition].evicted()  # of the step apply_usage just fed
        if gone:  # health follows the engine: a flood of new model ids stays bounded
            store.forget(gone)
        return await app.publish.commands(commands)


class Routed:
    """A batch's good events by the partition they arrived on: those of the served models
    the partition owns, and those of other partitions' models (to be forwarded)."""

    __slots__ = ("fed", "foreign", "mine", "offsets", "origins", "partitions")

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.mine: dict[int, list[UsageEvent]] = {}
        self.fed: dict[int, list[EventT]] = {}  # the messages whose events go to the engine
        self.offsets: dict[int, list[int]] = {}  # the message offset of each event of ``mine``
        self.origins: dict[int, list[Origin | None]] = {}  # where forwarded ones were first read
        self.foreign: dict[tuple[int, int], list[Sourced]] = defaultdict(list)

    def add(self, partition: int, event: EventT, good: Sequence[UsageEvent]) -> int:
        """The good events of one message read on ``partition``; how many of them belong to
        other partitions."""
        message = event.message
        queue = self.mine.get(partition)
        if queue is None:
            queue = self.mine[partition] = []
            self.fed[partition] = []
            self.offsets[partition] = []
            self.origins[partition] = []
        headers = message.headers  # only forwarded records carry any
        first_read = origins_of(headers, len(good)) if headers else None
        came_from = self.origins[partition]
        offsets = self.offsets[partition]
        offset = message.offset
        n_partitions = self.partitions
        foreign = self.foreign
        sent = 0
        for i, ev in enumerate(good):
            owner = partition_for(ev.model_id, n_partitions)
            if owner == partition:
                queue.append(ev)
                came_from.append(first_read[i] if first_read else None)
                offsets.append(offset)
            else:
                foreign[partition, owner].append((ev, event))
                sent += 1
        self.fed[partition].append(event)
        return sent


def places_of(events: Sequence[Sourced]) -> dict[int, tuple[int, int]]:
    """Each forwarded item's place at its source (by ``id``): the offset of its message
    and its rank among that message's items forwarded to the same partition, which a
    source read again gives the same items."""
    ranks: dict[int, int] = defaultdict(int)
    out: dict[int, tuple[int, int]] = {}
    for item in events:
        offset = item[1].message.offset
        out[id(item)] = (offset, ranks[offset])
        ranks[offset] += 1
    return out


def origin_header(partition: int, places: Sequence[tuple[int, int]]) -> bytes:
    """The :data:`ORIGIN` header of a forwarded record whose events are at ``places``
    (source offset, rank) of source ``partition``: runs of ``offset.rank*count``.

    >>> origin_header(3, [(7, 0), (7, 1), (9, 0), (7, 3)])
    b'3:7.0*2,9.0*1,7.3*1'
    """
    runs: list[list[int]] = []
    for offset, rank in places:
        if runs and runs[-1][0] == offset and runs[-1][1] + runs[-1][2] == rank:
            runs[-1][2] += 1
        else:
            runs.append([offset, rank, 1])
    if len(runs) * 32 > ORIGIN_ROOM - 8:  # too many to say: the events count as new
        return b""
    return f"{partition}:{','.join(f'{o}.{r}*{n}' for o, r, n in runs)}".encode()


def origins_of(headers: Any, n: int) -> list[Origin | None] | None:
    """Where each of a forwarded record's ``n`` events was first read (``None``: not a
    forwarded record, or its origin header cannot be read as such).

    >>> origins_of([(ORIGIN, b"3:7.0*2,9.4*1")], 3)
    [(3, 7, 0), (3, 7, 1), (3, 9, 4)]
    >>> origins_of([(ORIGIN, b"3:7.0*2")], 3) is None, origins_of([], 1) is None
    (True, True)
    """
    value = None
    for name, v in headers or ():
        if name == ORIGIN:
            value = v
    if not value:
        return None
    try:
        source, _, runs = bytes(value).decode().partition(":")
        p = int(source)
        out: list[Origin | None] = []
        for run in runs.split(","):
            place, _, count = run.partition("*")
            offset, _, rank = place.partition(".")
            o, r = int(offset), int(rank)
            out += [(p, o, r + k) for k in range(int(count))]
    except (ValueError, UnicodeDecodeError):
        return None
    return out if len(out) == n else None
