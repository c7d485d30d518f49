"""A fetched partition whose records hold a batch that cannot be decoded: the records
before it are delivered, the batch is reported with its offsets and bytes, and the
partition is paused, where aiokafka alone raises."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.errors import KafkaError

from streams.undecodable import (
    BatchGuard,
    FetchedRecords,
    GuardedPartitionRecords,
    UndecodableBatch,
)
from tests.integration.rawbatch import Damage, damaged, record_batch

TP = TopicPartition("usage", 3)


class Consumer:
    """What the guard asks of a consumer: pausing a partition."""

    def __init__(self) -> None:
        self.paused: list[TopicPartition] = []

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.extend(tps)


def at(base_offset: int, batch: bytes | bytearray) -> bytes:
    """``batch`` as the broker returns it at ``base_offset`` (outside the CRC)."""
    return struct.pack(">q", base_offset) + bytes(batch[8:])


def fetched(*batches: bytes) -> bytes:
    return b"".join(batches)


def records(guard: BatchGuard | None, data: bytes, tp: TopicPartition = TP) -> Any:
    args = (tp, FetchedRecords(data), None, 0, None, None, True, READ_UNCOMMITTED)
    return GuardedPartitionRecords(guard, *args) if guard else PartitionRecords(*args)


@pytest.mark.parametrize(
    ("how", "error_class"),
    [
        ("codec_mismatch", "DecompressionError"),
        ("unknown_codec", "UnsupportedCodecError"),
        ("bad_crc", "CorruptRecordException"),
    ],
)
async def test_the_records_before_a_bad_batch_are_delivered_and_the_batch_reported(
    how: Damage, error_class: str
) -> None:
    bad = at(3, damaged(record_batch([b"d", b"e"]), how))
    data = fetched(at(0, record_batch([b"a", b"b", b"c"])), bad, at(5, record_batch([b"f"])))
    loop = asyncio.get_running_loop()
    reported: asyncio.Future[UndecodableBatch] = loop.create_future()
    consumer = Consumer()
    guard = BatchGuard(consumer, {"usage"}, reported.set_result, loop)

    got = records(guard, data)
    assert [(r.offset, r.value) for r in got] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert got.next_fetch_offset == 3  # the consumer's position stays on the batch
    assert consumer.paused == [TP]
    batch = await asyncio.wait_for(reported, 5)
    assert (batch.topic, batch.partition, batch.first_offset, batch.last_offset) == (
        "usage",
        3,
        3,
        4,
    )
    assert batch.error_class == error_class
    assert batch.raw == bad
    assert batch.codec == {"codec_mismatch": "snappy", "unknown_codec": "unknown (6)"}.get(
        how, "none"
    )
    assert not batch.codec_missing  # this process has every codec


async def test_a_partition_of_a_topic_not_guarded_raises_as_before() -> None:
    data = fetched(at(0, damaged(record_batch([b"a"]), "bad_crc")))
    consumer = Consumer()
    guard = BatchGuard(consumer, {"usage"}, lambda batch: None, asyncio.get_running_loop())
    with pytest.raises(KafkaError, match="Invalid CRC"):
        list(records(guard, data, TopicPartition("changelog", 0)))
    assert consumer.paused == []
