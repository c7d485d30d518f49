"""The input topics read back by offset, without a broker: records in the order they were
written (timestamp, metrics first at the same millisecond, then offset); the group's
commit taken where there is one and a partition's first offset where there is none; a
range read up to, not including, its end, and given up when it takes too long (the Kafka
clients replaced by ones that answer as the broker would)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams import offsets
from streams.offsets import committed_offsets, read_ranges, written_order
from streams.settings import WarmcastSettings

USAGE, METRICS = "warmcast.usage.v1", "warmcast.metrics.v1"
KINDS = {USAGE: "usage", METRICS: "metrics"}
SETTINGS = WarmcastSettings(kafka_bootstrap_servers="127.0.0.1:1")


def record(topic: str, offset: int, timestamp: int, partition: int = 0) -> ConsumerRecord:
    value = f"{topic}@{offset}".encode()
    return ConsumerRecord(
        topic, partition, offset, timestamp, 0, None, value, None, 0, len(value), ()
    )


def test_records_come_in_timestamp_order_whatever_the_input() -> None:
    records = [record(USAGE, 5, 3000), record(METRICS, 1, 1000), record(USAGE, 6, 2000)]
    assert [(ts, kind) for ts, kind, _ in written_order(records, KINDS)] == [
        (1.0, "metrics"),
        (2.0, "usage"),
        (3.0, "usage"),
    ]


def test_at_the_same_millisecond_metrics_come_before_usage_then_by_offset() -> None:
    records = [
        record(USAGE, 9, 1000),
        record(USAGE, 8, 1000),
        record(METRICS, 40, 1000),
        record(METRICS, 39, 1000),
    ]
    assert [value for _, _, value in written_order(records, KINDS)] == [
        b"warmcast.metrics.v1@39",
        b"warmcast.metrics.v1@40",
        b"warmcast.usage.v1@8",
        b"warmcast.usage.v1@9",
    ]


def test_timestamps_are_given_in_seconds_and_nothing_is_given_for_nothing() -> None:
    [(ts, kind, value)] = written_order([record(USAGE, 0, 1_796_522_400_250)], KINDS)
    assert (ts, kind, value) == (1_796_522_400.25, "usage", b"warmcast.usage.v1@0")
    assert written_order([], KINDS) == []


@dataclass
class FakeAdmin:
    """The group's commits as the broker lists them (offset -1: none)."""

    commits: dict[TopicPartition, int]
    closed: bool = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        assert group_id == "warmcast"
        return {
            tp: OffsetAndMetadata(self.commits[tp], "") for tp in partitions if tp in self.commits
        }


class FakeConsumer:
    """A partition's log (``logs``), fetched ``per_fetch`` records at a time from where it
    was sought; ``beginning_offsets`` gives each log's first offset."""

    def __init__(self, logs: dict[TopicPartition, list[ConsumerRecord]], per_fetch: int) -> None:
        self.logs = logs
        self.per_fetch = per_fetch
        self.positions: dict[TopicPartition, int] = {}
        self.fetches = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.logs[tp][0].offset for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        assert set(tps) <= set(self.logs)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        self.fetches += 1
        out = {}
        for tp in tps:
            got = [r for r in self.logs[tp] if r.offset >= self.positions[tp]][: self.per_fetch]
            if got:
                out[tp] = got
                self.positions[tp] = got[-1].offset + 1
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def clients(
    monkeypatch: pytest.MonkeyPatch, consumer: FakeConsumer, admin: FakeAdmin | None = None
) -> None:
    def make_consumer(**kwargs: Any) -> FakeConsumer:
        assert kwargs["group_id"] is None  # outside the group
        return consumer

    monkeypatch.setattr(offsets, "AIOKafkaConsumer", make_consumer)
    if admin is not None:
        monkeypatch.setattr(offsets, "AIOKafkaAdminClient", lambda **kwargs: admin)


def log_of(topic: str, first: int, last: int, partition: int = 0) -> list[ConsumerRecord]:
    return [record(topic, o, 1000 + o, partition) for o in range(first, last + 1)]


def test_the_commit_is_taken_where_there_is_one_and_the_first_offset_where_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usage, metrics = TopicPartition(USAGE, 2), TopicPartition(METRICS, 2)
    other = TopicPartition(METRICS, 3)
    admin = FakeAdmin({usage: 17, metrics: -1})  # metrics: none; other: not listed at all
    consumer = FakeConsumer({metrics: log_of(METRICS, 5, 9), other: log_of(METRICS, 3, 4)}, 10)
    clients(monkeypatch, consumer, admin)
    got = asyncio.run(committed_offsets(SETTINGS, "warmcast", [usage, metrics, other]))
    assert got == {usage: 17, metrics: 5, other: 3}
    assert admin.closed and consumer.stopped


def test_no_consumer_is_started_when_every_partition_has_a_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usage = TopicPartition(USAGE, 0)

    def no_consumer(**kwargs: Any) -> Any:
        raise AssertionError("no consumer needed")

    monkeypatch.setattr(offsets, "AIOKafkaAdminClient", lambda **kwargs: FakeAdmin({usage: 4}))
    monkeypatch.setattr(offsets, "AIOKafkaConsumer", no_consumer)
    assert asyncio.run(committed_offsets(SETTINGS, "warmcast", [usage])) == {usage: 4}


def test_a_range_is_read_from_its_start_up_to_not_including_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usage, metrics = TopicPartition(USAGE, 1), TopicPartition(METRICS, 1)
    logs = {usage: log_of(USAGE, 0, 20, 1), metrics: log_of(METRICS, 0, 20, 1)}
    consumer = FakeConsumer(logs, per_fetch=3)
    clients(monkeypatch, consumer)
    got = asyncio.run(read_ranges(SETTINGS, {usage: (4, 11), metrics: (15, 16)}, 1 << 20))
    assert [r.offset for r in got if r.topic == USAGE] == list(range(4, 11))
    assert [r.offset for r in got if r.topic == METRICS] == [15]
    assert consumer.stopped


def test_a_range_not_read_in_time_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = TopicPartition(USAGE, 0)
    consumer = FakeConsumer({usage: log_of(USAGE, 0, 2)}, per_fetch=1)  # the end never comes
    clients(monkeypatch, consumer)
    with pytest.raises(TimeoutError, match="did not finish"):
        asyncio.run(read_ranges(SETTINGS, {usage: (0, 10)}, 1 << 20, timeout=-1.0))
    assert consumer.stopped
