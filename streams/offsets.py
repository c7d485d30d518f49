"""The input topics read back by offset, outside the consumer group: where the group has
committed (or, where it has not, where a partition begins), the records of a range of
offsets, and those records in the order they were written. A restore brings a partition's
checkpointed state to the group's commit with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from streams.kafka import client_kwargs
from streams.settings import WarmcastSettings

#: How long reading a range back may take before it is given up.
READ_TIMEOUT = 300.0


async def committed_offsets(
    settings: WarmcastSettings, group_id: str, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The committed offset of ``group_id`` on each of ``tps``; the partition's first
    offset where the group has none (where a member of the group will start)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=list(tps))
    finally:
        await admin.close()
    out: dict[TopicPartition, int] = {}
    missing = []
    for tp in tps:
        meta = offsets.get(tp)
        if meta is not None and meta.offset >= 0:
            out[tp] = meta.offset
        else:
            missing.append(tp)
    if missing:
        consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None)
        await consumer.start()
        try:
            first = await consumer.beginning_offsets(missing)
        finally:
            await consumer.stop()
        out.update(first)
    return out


async def read_ranges(
    settings: WarmcastSettings,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    max_message_bytes: int,
    timeout: float = READ_TIMEOUT,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of ``ranges`` ([start, end) per partition), each partition's in offset
    order; :class:`TimeoutError` when they are not all read within ``timeout`` seconds."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=max(max_message_bytes * 2, 1 << 20),
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiting = list(ranges)
        while waiting:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {dict(ranges)} did not finish in {timeout:.0f}s")
            batch = await consumer.getmany(*waiting, timeout_ms=500)
            for tp, got in batch.items():
                end = ranges[tp][1]
                records += [r for r in got if r.offset < end]
            waiting = [tp for tp in waiting if await consumer.position(tp) < ranges[tp][1]]
    finally:
        await consumer.stop()
    return records


class Written(Protocol):
    """What :func:`written_order` needs of a record read back."""

    @property
    def topic(self) -> str: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


def written_order(
    records: Iterable[Written], kinds: Mapping[str, str]
) -> list[tuple[float, str, bytes | None]]:
    """``(timestamp in seconds, input kind, value)`` of each record, ``kinds`` naming the
    input of each topic, in the order the records were written: by timestamp, a
    ``metrics`` record before another input's of the same millisecond, then by offset.

    >>> from collections import namedtuple
    >>> R = namedtuple("R", "topic offset timestamp value")
    >>> kinds = {"u": "usage", "m": "metrics"}
    >>> written_order(
    ...     [R("u", 8, 2000, b"b2"), R("u", 7, 2000, b"b1"), R("m", 3, 2000, b"m"),
    ...      R("u", 9, 1500, b"a")],
    ...     kinds,
    ... )
    [(1.5, 'usage', b'a'), (2.0, 'metrics', b'm'), (2.0, 'usage', b'b1'), (2.0, 'usage', b'b2')]
    """
    ranked = sorted(
        records,
        key=lambda r: (r.timestamp, 0 if kinds[r.topic] == "metrics" else 1, r.offset),
    )
    return [(r.timestamp / 1000, kinds[r.topic], r.value) for r in ranked]
