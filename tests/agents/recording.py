"""A worker app as the agents see it, without a broker: its producer records what it is
handed (the Kafka client boundary), so that an agent can be called as the worker calls it
and what it publishes read back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types.tuples import Message

from agents import Parts, register
from streams.app import WarmcastApp, create_app
from streams.settings import WarmcastSettings


@dataclass
class Record:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)


class RecordingBatch:
    """A record batch as the emitters fill it (appends until ``room`` records)."""

    def __init__(self, room: int = 1000) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.room = room
        self.closed = False

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None) -> Any:
        if self.closed or len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        self.closed = True

    def size(self) -> int:
        return sum(len(k or b"") + len(v or b"") for k, v in self.records)


class RecordingProducer:
    """Takes every record and batch at once, as a broker that never fails would."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def _done(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        self.records.append(Record(topic, partition, key, value, dict(headers or ())))
        return self._done()

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch()

    async def send_batch(
        self, batch: RecordingBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        for key, value in batch.records:
            self.records.append(Record(topic, partition, key, value))
        return self._done()

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]


@dataclass
class Worker:
    app: WarmcastApp
    parts: Parts
    producer: RecordingProducer


def recording_worker(**settings: Any) -> Worker:
    """The worker's app (every agent registered) whose producer records."""
    app = create_app(WarmcastSettings(kafka_bootstrap_servers="127.0.0.1:1", **settings))
    parts = register(app)
    producer = RecordingProducer()
    app.sender.producer = lambda: producer
    return Worker(app, parts, producer)


def event(
    app: WarmcastApp,
    topic: str,
    partition: int,
    offset: int,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> Any:
    """A consumed message as Faust hands it to an agent."""
    message = Message(
        topic,
        partition,
        offset,
        timestamp=0.0,
        timestamp_type=0,
        headers=headers or [],
        key=key,
        value=value,
        checksum=None,
    )
    return faust.Event(app, key, value, headers or [], message)


async def settled(app: WarmcastApp, timeout: float = 5.0) -> None:
    """Wait until every emitter has handed its records to the producer."""
    async with asyncio.timeout(timeout):
        for emitter in list(app.emitters.values()):
            await emitter.drain()
