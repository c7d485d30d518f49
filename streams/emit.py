"""Publishing warmup commands through the producer that Faust runs, in record batches.

Commands are keyed by ``model_id`` and go to the partition a keyed producer would use.
:meth:`CommandEmitter.publish` only queues them (the agent never waits on the broker); a
pump task hands each partition's queue to the producer as one record batch. While a
batch waits for the previous one to leave, new commands gather behind it, so the batches
grow with the load and the per-command cost stays that of one append.

Nothing is lost on a commit: :meth:`CommandEmitter.drain` waits until every queued
command is with the producer, and the worker drains before the producer is flushed
ahead of each offset commit (see ``agents/usage.py``), so offsets are only committed for
messages whose commands are on their way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for

log = logging.getLogger(__name__)

#: (key, value, timestamp in ms) of one queued command.
Record = tuple[bytes, bytes, int]


class CommandEmitter:
    """Queues commands per partition and ships them as record batches.

    ``producer`` is an ``aiokafka.AIOKafkaProducer`` (``create_batch``, ``send_batch`` and
    ``send``); ``on_failure(n, exc)`` hears of commands the broker did not take. The pump
    waits ``linger_seconds`` after the first queued command before shipping.
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
        self.queued = 0  # commands queued and not yet with the producer
        self.batches = 0  # record batches handed to the producer
        self.sent = 0  # commands handed to the producer
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump: asyncio.Task[None] | None = None

    def publish(self, commands: list[Command]) -> None:
        """Queue commands for delivery (returns at once)."""
        if not commands:
            return
        pending, n, dumps = self.pending, self.partitions, orjson.dumps
        for command in commands:
            model_id = command.model_id
            record = (model_id.encode(), dumps(command.to_dict()), int(command.issued_at * 1000))
            queue = pending.get(partition := partition_for(model_id, n))
            if queue is None:
                pending[partition] = [record]
            else:
                queue.append(record)
        self.queued += len(commands)
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
                    log.exception("could not publish %d warmup commands", len(records))
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
