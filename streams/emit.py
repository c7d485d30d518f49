"""Publishing records through the producer that Faust runs, in record batches.

Warmup commands, and the health table's changelog, go out this way. Records are keyed by
``model_id`` and go to the partition a keyed producer would use. Queueing returns at
once (the agent never waits on the broker); a pump task hands each partition's queue to
the producer as one record batch. While a batch waits for the previous one to leave, new
records gather behind it, so the batches grow with the load and the cost per record
stays that of one append.

Nothing is lost on a commit: :meth:`RecordEmitter.drain` waits until every queued
record is with the producer, and the worker drains every emitter before the producer is
flushed ahead of each offset commit (:func:`drain_before_flush`), so offsets are only
committed for messages whose records are on their way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for

log = logging.getLogger(__name__)

#: (key, value, timestamp in ms) of one queued record; a value of ``None`` deletes the key.
Record = tuple[bytes, bytes | None, int]


class RecordEmitter:
    """Queues records per partition of one topic and ships them as record batches.

    ``producer`` is an ``aiokafka.AIOKafkaProducer`` (``create_batch``, ``send_batch`` and
    ``send``); ``on_failure(n, exc)`` hears of records the broker did not take. The pump
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
        self.pending: dict[int, list[Record]] = {}
        self.queued = 0  # records queued and not yet with the producer
        self.batches = 0  # record batches handed to the producer
        self.sent = 0  # records handed to the producer
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump: asyncio.Task[None] | None = None

    def queue(self, key: str, value: bytes | None, timestamp_ms: int) -> None:
        """Queue one record keyed by ``key`` (returns at once)."""
        self._append(key, value, timestamp_ms)
        self._wake_pump()

    def _append(self, key: str, value: bytes | None, timestamp_ms: int) -> None:
        record = (key.encode(), value, timestamp_ms)
        partition = partition_for(key, self.partitions)
        queue = self.pending.get(partition)
        if queue is None:
            self.pending[partition] = [record]
        else:
            queue.append(record)
        self.queued += 1

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
                records = self.pending.pop(partition)
                self.queued -= len(records)
                try:
                    await self._ship(partition, records)
                except Exception as exc:  # the producer refused: say so, keep the pump
                    log.exception("could not publish %d records to %s", len(records), self.topic)
                    if self.on_failure is not None:
                        self.on_failure(len(records), exc)
            self._idle.set()

    async def _ship(self, partition: int, records: list[Record]) -> None:
        producer = self.producer
        batch = producer.create_batch()
        in_batch = 0
        for key, value, ts in records:
            if batch.append(key=key, value=value, timestamp=ts) is not None:
                in_batch += 1
                continue
            if in_batch:  # full: send it, start the next
                await self._send_batch(batch, partition, in_batch)
                batch, in_batch = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=ts) is not None:
                    in_batch = 1
                    continue
            # larger than a batch can hold: on its own
            await producer.send(self.topic, value, key=key, partition=partition, timestamp_ms=ts)
            self.sent += 1
        if in_batch:
            await self._send_batch(batch, partition, in_batch)

    async def _send_batch(self, batch: Any, partition: int, n: int) -> None:
        batch.close()  # complete: the producer sends it without lingering over it again
        delivery = await self.producer.send_batch(batch, self.topic, partition=partition)
        self.batches += 1
        self.sent += n
        if self.on_failure is not None:
            delivery.add_done_callback(lambda f: self._delivered(f, n))

    def _delivered(self, delivery: asyncio.Future[Any], n: int) -> None:
        if delivery.cancelled():
            return
        exc = delivery.exception()
        if exc is not None and self.on_failure is not None:
            self.on_failure(n, exc)


class CommandEmitter(RecordEmitter):
    """A :class:`RecordEmitter` of warmup commands (JSON, timestamped when issued)."""

    def publish(self, commands: list[Command]) -> None:
        """Queue commands for delivery (returns at once)."""
        if not commands:
            return
        append, dumps = self._append, orjson.dumps
        for command in commands:
            append(command.model_id, dumps(command.to_dict()), int(command.issued_at * 1000))
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
