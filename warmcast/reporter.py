"""``UsageReporter``: report a serving process's requests to warmcast in two lines.

.. code-block:: python

    reporter = UsageReporter("kafka:9092")      # once, at start-up (in the event loop)
    await reporter.start()
    reporter.report("llama-8b", cold_start=False, latency=0.21)   # per request: never blocks
    await reporter.stop()                       # at shutdown: sends what is buffered

Events are buffered and sent in the background every ``flush_seconds`` (or as soon as
``batch_events`` wait), packed into envelopes (JSON arrays of usage events) per partition
of the usage topic. Each envelope is keyed by a served model of its partition, and every
event goes to the partition Kafka's Java client would pick for its ``model_id`` (murmur2),
so the worker that owns the model reads it first hand. The buffer holds at most
``max_buffered`` events: a report beyond it is dropped and counted (``dropped``), never
waited for. A send that fails is tried again, with backoff, keeping its events buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from typing import Any

import orjson

from streams.partitioning import partition_for
from streams.sending import Backoff

log = logging.getLogger("warmcast.reporter")


class UsageReporter:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = "warmcast.usage.v1",
        batch_events: int = 100,
        flush_seconds: float = 0.5,
        max_buffered: int = 100_000,
        **producer_options: Any,
    ) -> None:
        if batch_events < 1 or max_buffered < 1:
            raise ValueError("batch_events and max_buffered must be at least 1")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.batch_events = batch_events
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.producer_options = producer_options
        self.sent = 0  # events delivered
        self.dropped = 0  # events refused because the buffer was full
        self.failed_sends = 0  # sends that failed (their events were kept and sent again)
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._producer: Any = None
        self._partitions = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._backoff = Backoff(first=0.1, most=5.0)
        self._rng = random.Random()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def start(self) -> UsageReporter:
        from aiokafka import AIOKafkaProducer

        options = {"linger_ms": 5, "acks": "all", **self.producer_options}
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **options)
        await self._producer.start()
        self._partitions = len(await self._producer.partitions_for(self.topic))
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="warmcast-usage-reporter")
        return self

    def report(
        self,
        model_id: str,
        *,
        count: int = 1,
        cold_start: bool | None = None,
        latency: float | None = None,
        error: bool | None = None,
        ts: float | None = None,
        **labels: str,
    ) -> bool:
        """Buffer one usage event (safe from any thread); ``False`` when it was dropped
        because the buffer is full."""
        event: dict[str, Any] = {"model_id": model_id, "ts": time.time() if ts is None else ts}
        if count != 1:
            event["count"] = count
        if cold_start is not None:
            event["cold_start"] = cold_start
        if latency is not None:
            event["latency"] = latency
        if error is not None:
            event["error"] = error
        event.update(labels)
        with self._lock:
            if len(self._buffer) >= self.max_buffered:
                self.dropped += 1
                return False
            self._buffer.append(event)
            full = len(self._buffer) >= self.batch_events
        if full:
            self._poke()
        return True

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending usage events failed; they stay buffered")

    async def flush(self) -> None:
        """Send every buffered event now (tried again, with backoff, until delivered)."""
        attempt = 0
        while self._buffer:
            with self._lock:
                taken = list(self._buffer)
                self._buffer.clear()
            try:
                await self._send(taken)
                self.sent += len(taken)
                attempt = 0
            except asyncio.CancelledError:
                self._put_back(taken)
                raise
            except Exception as exc:
                self.failed_sends += 1
                self._put_back(taken)
                attempt += 1
                log.warning("usage events not sent (%s); trying again", exc)
                await asyncio.sleep(self._backoff.delay(attempt, self._rng))

    def _put_back(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            room = self.max_buffered - len(self._buffer)
            keep = events[: max(0, room)]
            self.dropped += len(events) - len(keep)
            self._buffer.extendleft(reversed(keep))

    async def _send(self, events: list[dict[str, Any]]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("the reporter is not started")
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            partition = partition_for(event["model_id"], self._partitions)
            by_partition.setdefault(partition, []).append(event)
        futures = []
        for partition, group in by_partition.items():
            for i in range(0, len(group), self.batch_events):
                part = group[i : i + self.batch_events]
                futures.append(
                    await producer.send(
                        self.topic,
                        orjson.dumps(part),
                        key=part[0]["model_id"].encode(),
                        partition=partition,
                    )
                )
        await asyncio.gather(*futures)

    async def stop(self, timeout: float = 10.0) -> None:
        """Send what is buffered (within ``timeout``), then close."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._producer is not None:
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except (TimeoutError, Exception) as exc:
                log.warning("usage events left unsent at stop: %d (%s)", self.buffered, exc)
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> UsageReporter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["UsageReporter"]
