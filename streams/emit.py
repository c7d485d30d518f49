"""Publishing records through the producer that Faust runs, in record batches.

Warmup commands, and the health table's changelog, go out this way. Records are keyed by
``model_id`` and go to the partition a keyed producer would use. Queueing returns at
once (the agent never waits on the broker): each record is appended straight to the
record batch being filled for its partition, and a pump task hands the filled batches to
the producer. While a batch waits for the previous one to leave, new records gather in
the next, so the batches grow with the load and the cost per record stays that of one
append.

Nothing is lost on a commit: :meth:`RecordEmitter.drain` waits until every queued
record is with the producer, and the worker drains every emitter before the producer is
flushed ahead of each offset commit (:func:`drain_before_flush`), so offsets are only
committed for messages whose records are on their way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for

log = logging.getLogger(__name__)


class RecordEmitter:
    """Queues records per partition of one topic and ships them as record batches.

    ``producer`` is an ``aiokafka.AIOKafkaProducer`` (``create_batch`` and
    ``send_batch``); ``on_failure(n, exc)`` hears of records the broker did not take. The pump
    waits ``linger_seconds`` after the first queued record before shipping.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        partitions: int,
        on_failure: Callable[[int, BaseException], None] | None = None,
        linger_seconds: float = 0.0,
    ) -> None:
        self.producer = producer
        self.linger = linger_seconds
        self.topic = topic
        self.partitions = partitions
        self.on_failure = on_failure
        #: partition -> its record batches waiting to be shipped, in order (the last one
        #: still being filled)
        self.pending: dict[int, list[Any]] = {}
        self.queued = 0  # records queued and not yet with the producer
        self.batches = 0  # record batches handed to the producer
        self.sent = 0  # records handed to the producer
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump: asyncio.Task[None] | None = None

    def queue(self, key: str, value: bytes | None, timestamp_ms: int) -> None:
        """Queue one record keyed by ``key`` (returns at once); a value of ``None``
        deletes the key."""
        self._append(key, value, timestamp_ms)
        self._wake_pump()

    def _append(self, key: str, value: bytes | None, timestamp_ms: int) -> None:
        partition = partition_for(key, self.partitions)
        raw = key.encode()
        self.queued += 1
        waiting = self.pending.get(partition)
        if waiting is None:
            waiting = self.pending[partition] = []
        elif waiting[-1].append(key=raw, value=value, timestamp=timestamp_ms) is not None:
            return
        # no batch being filled, or it is full (appending closed it): start the next; an
        # empty batch takes any one record (the broker's size limit applies when sent)
        batch = self.producer.create_batch()
        batch.append(key=raw, value=value, timestamp=timestamp_ms)
        waiting.append(batch)

    def _wake_pump(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._run())

    async def drain(self) -> None:
        """Wait until every queued command has been handed to the producer."""
        if self.pending and (self._pump is None or self._pump.done()):
            self._pump = asyncio.ensure_future(self._run())
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger > 0:  # let a few messages' commands gather into one batch
                await asyncio.sleep(self.linger)
            self._wake.clear()
            while self.pending:
                partition = next(iter(self.pending))
                waiting = self.pending.pop(partition)  # new records start new batches
                n = sum(batch.record_count() for batch in waiting)
                self.queued -= n
                try:
                    await self._ship(partition, waiting)
                except Exception as exc:  # the producer refused: say so, keep the pump
                    log.exception("could not publish %d records to %s", n, self.topic)
                    if self.on_failure is not None:
                        self.on_failure(n, exc)
            self._idle.set()

    async def _ship(self, partition: int, waiting: list[Any]) -> None:
        for batch in waiting:
            n = batch.record_count()
            batch.close()  # complete: the producer sends it without lingering over it again
            delivery = await self.producer.send_batch(batch, self.topic, partition=partition)
            self.batches += 1
            self.sent += n
            if self.on_failure is not None:
                delivery.add_done_callback(lambda f, n=n: self._delivered(f, n))

    def _delivered(self, delivery: asyncio.Future[Any], n: int) -> None:
        if delivery.cancelled():
            return
        exc = delivery.exception()
        if exc is not None and self.on_failure is not None:
            self.on_failure(n, exc)


class CommandEmitter(RecordEmitter):
    """A :class:`RecordEmitter` of warmup commands (JSON).

    A command's record carries the wall-clock time it is published as its Kafka timestamp;
    its event times are in the command (``issued_at``, ``start``, ``end``). Kafka's
    time-based retention counts from record timestamps, so commands of a replayed history
    stamped with their event time would be deleted at the broker's next retention check.
    """

    def publish(self, commands: list[Command]) -> None:
        """Queue commands for delivery (returns at once)."""
        if not commands:
            return
        append, dumps = self._append, orjson.dumps
        now_ms = int(time.time() * 1000)
        for command in commands:
            append(command.model_id, dumps(command.to_dict()), now_ms)
        self._wake_pump()


async def drain_all(emitters: Mapping[str, RecordEmitter]) -> None:
    """Wait until every emitter has handed what it queued to the producer."""
    for emitter in list(emitters.values()):
        await emitter.drain()


def drain_before_flush(faust_producer: Any, emitters: Mapping[str, RecordEmitter]) -> None:
    """Make the Faust producer's ``flush`` (awaited before every offset commit and at
    shutdown) first wait for ``emitters`` to hand over what they queued."""
    flush = faust_producer.flush

    async def drain_then_flush() -> None:
        await drain_all(emitters)
        await flush()

    faust_producer.flush = drain_then_flush
