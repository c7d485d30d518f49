"""Publishing records through the producer that Faust runs, in record batches.

Warmup commands, health snapshots and the health table's changelog go out this way.
Records are keyed by ``model_id`` and go to the partition a keyed producer would use.
Queueing returns at once (the agent never waits on the broker): each record is appended
straight to the record batch being filled for its partition, and a pump task hands the
filled batches to the producer. While a batch waits for the previous one to leave, new
records gather in the next, so the batches grow with the load and the cost per record
stays that of one append.

Each record batch is a :class:`~streams.sending.Delivery` of the worker's
:class:`~streams.sending.Sender`: a batch the broker refuses is tried again until it gets
through, and while it is in trouble the batches queued behind it for the same partition
wait (they are in trouble too), so that a partition's records keep their order. The
deliveries :meth:`CommandEmitter.publish` returns are what the input messages behind the
commands wait for before they are acknowledged (:mod:`streams.holding`).
:meth:`RecordEmitter.drain` waits until every queued record that can go is with the
producer; the worker drains every emitter before the producer is flushed ahead of each
offset commit and at shutdown (:func:`drain_before_flush`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for
from streams.sending import Delivery, Sender

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Shipment:
    """A record batch being filled or shipped, and its delivery."""

    batch: Any
    delivery: Delivery


class RecordEmitter:
    """Queues records per partition of one topic and ships them as record batches
    through ``sender``; the pump waits ``linger_seconds`` after the first queued record
    before shipping."""

    def __init__(
        self, sender: Sender, topic: str, partitions: int, linger_seconds: float = 0.0
    ) -> None:
        self.sender = sender
        self.linger = linger_seconds
        self.topic = topic
        self.partitions = partitions
        #: partition -> its record batches waiting to be shipped, in order (the last one
        #: still being filled)
        self.pending: dict[int, list[Shipment]] = {}
        self.queued = 0  # records queued and not yet with the producer
        self.batches = 0  # record batches handed to the producer
        self.sent = 0  # records handed to the producer
        self.refused = 0  # records larger than the topic takes (not queued)
        self._last: dict[int, Delivery] = {}  # per partition, the latest batch shipped
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump: asyncio.Task[None] | None = None

    def queue(self, key: str, value: bytes | None, timestamp_ms: int) -> None:
        """Queue one record keyed by ``key`` (returns at once); a value of ``None``
        deletes the key."""
        self._append(key, value, timestamp_ms)
        self._wake_pump()

    def _append(self, key: str, value: bytes | None, timestamp_ms: int) -> Delivery | None:
        """Append a record to its partition's batch; returns the batch's delivery."""
        partition = partition_for(key, self.partitions)
        raw = key.encode()
        waiting = self.pending.get(partition)
        if waiting:
            last = waiting[-1]
            if last.batch.append(key=raw, value=value, timestamp=timestamp_ms) is not None:
                self.queued += 1
                return last.delivery
        # no batch being filled, or it is full (appending closed it): start the next; an
        # empty batch takes any one record, so the record is measured against the limit
        if not self.sender.fits(self.topic, raw, value):
            self.refused += 1
            log.error("a record of %s is larger than %s takes: not sent", key[:100], self.topic)
            return None
        batch = self.sender.producer().create_batch()
        batch.append(key=raw, value=value, timestamp=timestamp_ms)
        delivery = Delivery(self.topic, partition, 0, 0, shared=True)
        blocking = self._blocking(partition)
        if blocking is not None:  # it waits behind a batch in trouble: so is it
            self.sender.trouble(delivery, _behind(blocking))
        if waiting is None:
            waiting = self.pending[partition] = []
        waiting.append(Shipment(batch, delivery))
        self.queued += 1
        return delivery

    def _blocking(self, partition: int) -> Delivery | None:
        """The shipped batch in trouble that the partition's next batches wait for."""
        last = self._last.get(partition)
        if last is None or not last.troubled or last.done.done():
            return None
        return last

    def _wake_pump(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._run())

    async def drain(self) -> None:
        """Wait until every queued record that can be shipped is with the producer (those
        waiting behind a batch in trouble stay queued)."""
        if self.pending and (self._pump is None or self._pump.done()):
            self._pump = asyncio.ensure_future(self._run())
        await self._idle.wait()

    def _next_ready(self) -> int | None:
        for partition in self.pending:
            if self._blocking(partition) is None:
                return partition
        return None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger > 0:  # let a few messages' commands gather into one batch
                await asyncio.sleep(self.linger)
            self._wake.clear()
            while (partition := self._next_ready()) is not None:
                waiting = self.pending.pop(partition)  # new records start new batches
                self.queued -= sum(s.batch.record_count() for s in waiting)
                await self._ship(partition, waiting)
            self._idle.set()

    async def _ship(self, partition: int, waiting: list[Shipment]) -> None:
        for i, shipment in enumerate(waiting):
            batch, delivery = shipment.batch, shipment.delivery
            n = delivery.records = batch.record_count()
            batch.close()  # complete: the producer sends it without lingering over it again
            delivery.size = batch.size()
            await self.sender.send_batch(delivery, batch, partition)
            self._last[partition] = delivery
            self.batches += 1
            self.sent += n
            troubled = delivery.troubled
            if troubled:  # the rest waits for it, in order, ahead of newer batches
                rest = waiting[i + 1 :]
                if rest:
                    self.pending[partition] = rest + self.pending.get(partition, [])
                    self.queued += sum(s.batch.record_count() for s in rest)
            delivery.watch(functools.partial(self._blocked, partition))
            if troubled:
                return

    def _blocked(self, partition: int, delivery: Delivery) -> None:
        """A shipped batch is in trouble: the batches queued behind it are too, and they
        are shipped once it is through."""
        delivery.done.add_done_callback(lambda _: self._wake_pump())
        for shipment in self.pending.get(partition, ()):
            self.sender.trouble(shipment.delivery, _behind(delivery))


def _behind(delivery: Delivery) -> Exception:
    return RuntimeError(f"waiting behind {delivery.describe()}")


class CommandEmitter(RecordEmitter):
    """A :class:`RecordEmitter` of warmup commands (JSON).

    A command's record carries the wall-clock time it is published as its Kafka timestamp;
    its event times are in the command (``issued_at``, ``start``, ``end``). Kafka's
    time-based retention counts from record timestamps, so commands of a replayed history
    stamped with their event time would be deleted at the broker's next retention check.
    """

    def publish(self, commands: list[Command]) -> list[Delivery]:
        """Queue commands for delivery (returns at once); returns the deliveries of the
        record batches they are in."""
        if not commands:
            return []
        append, dumps = self._append, orjson.dumps
        now_ms = int(time.time() * 1000)
        batches: set[Delivery | None] = set()
        add = batches.add
        for command in commands:
            add(append(command.model_id, dumps(command.to_dict()), now_ms))
        self._wake_pump()
        return [d for d in batches if d is not None]


async def drain_all(emitters: Mapping[str, RecordEmitter]) -> None:
    """Wait until every emitter has handed what it queued to the producer."""
    for emitter in list(emitters.values()):
        await emitter.drain()


def drain_before_flush(
    faust_producer: Any,
    emitters: Mapping[str, RecordEmitter],
    timeout: Callable[[], float],
    before: Callable[[], None] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Make the Faust producer's ``flush`` (awaited before every offset commit and at
    shutdown) first call ``before()`` (which queues what must be delivered before the
    offsets read so far are committed), then wait for ``emitters`` to hand over what they
    queued, then await ``after()``; the whole waits at most ``timeout()`` seconds (offsets
    are only acknowledged for delivered records, so a commit does not need more)."""
    flush = faust_producer.flush

    async def drain_then_flush() -> None:
        if before is not None:
            before()  # at once: Faust has chosen the offsets it commits before this
        try:
            async with asyncio.timeout(timeout()):
                await drain_all(emitters)
                if after is not None:
                    await after()
                await flush()
        except TimeoutError:
            log.warning("the producer's flush did not finish within %.0fs", timeout())

    faust_producer.flush = drain_then_flush
