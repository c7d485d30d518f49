"""Record batches that cannot be decoded stop their own partition, not the worker.

aiokafka decodes the record batches of a fetched partition as the consumer takes its
records; a batch it cannot decode (a codec whose library is missing, codec bits no client
knows, a compressed payload that is not what its codec says, a CRC mismatch) raises out
of ``getmany``, which Faust takes as a crash of its consumer: the worker stops, and stops
again at every restart, since nothing commits past the batch. Worse, the records of other
partitions taken in the same call are lost with it.

:func:`guard_consumer` changes that for one ``AIOKafkaConsumer`` and the topics named:
the records before a bad batch are delivered as usual, the batch's partition is paused in
the consumer (its fetch position stays on the batch), and an :class:`UndecodableBatch`
(topic, partition, offsets, codec, error and the batch's bytes as fetched) is handed to a
callback on the caller's event loop. The other partitions go on. What to do with the
batch is the operator's (see :mod:`agents.undecodable`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import codec as codecs
from aiokafka.consumer import fetcher as kafka_fetcher
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.memory_records import MemoryRecords

log = logging.getLogger(__name__)

#: Kafka's codec ids, the low three bits of a record batch's attributes.
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_AVAILABLE = {
    "none": lambda: True,
    "gzip": codecs.has_gzip,
    "snappy": codecs.has_snappy,
    "lz4": codecs.has_lz4,
    "zstd": codecs.has_zstd,
}
_LOG_OVERHEAD = 12  # base offset (8 bytes) and batch length (4) before each batch
_V2_HEADER = struct.Struct(">qiibIhi")  # ... leader epoch, magic, CRC, attributes, last delta
_V1_HEADER = struct.Struct(">qiIbb")  # offset, length, CRC, magic, attributes


def codec_name(codec_id: int) -> str:
    """The name of a codec id.

    >>> codec_name(2), codec_name(6)
    ('snappy', 'unknown (6)')
    """
    return CODECS.get(codec_id, f"unknown ({codec_id})")


def codec_available(name: str) -> bool:
    """Whether this process can decode ``name`` (``False`` for an unknown codec).

    >>> codec_available("gzip"), codec_available("unknown (6)")
    (True, False)
    """
    check = _AVAILABLE.get(name)
    return check is not None and check()


@dataclass(frozen=True, slots=True)
class UndecodableBatch:
    """A record batch that could not be decoded, as the consumer found it."""

    topic: str
    partition: int
    first_offset: int  # the first offset not delivered
    last_offset: int  # the batch's last offset, as its header says
    codec: str  # "gzip", ..., or "unknown (N)"
    error_class: str
    error: str
    raw: bytes  # the batch as the broker returned it

    @property
    def codec_missing(self) -> bool:
        """A codec Kafka has whose library this process lacks: installing it and
        restarting the worker decodes the batch."""
        return self.codec in _AVAILABLE and not codec_available(self.codec)

    @property
    def offsets(self) -> int:
        return self.last_offset - self.first_offset + 1


def locate(data: bytes, index: int, position: int) -> tuple[int, int, int, bytes]:
    """The ``index``-th record batch (from 1) of a fetched partition's ``data``: its
    first offset not yet delivered (``position`` if it lies inside the batch), last
    offset, codec id and bytes. Where the batch cannot be read, ``position`` itself.

    >>> from aiokafka.record.default_records import DefaultRecordBatchBuilder
    >>> def batch(n, codec=0):
    ...     b = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    ...     for i in range(n):
    ...         b.append(i, None, None, b"x", [])
    ...     return bytes(b.build())
    >>> one, two = batch(3), batch(2, codec=1)
    >>> two = (3).to_bytes(8, "big") + two[8:]  # the broker gives it base offset 3
    >>> first, last, codec, raw = locate(one + two, 2, position=3)
    >>> first, last, codec, raw == two
    (3, 4, 1, True)
    """
    pos = 0
    for _ in range(index - 1):
        if pos + _LOG_OVERHEAD > len(data):
            return position, position, 0, b""
        (length,) = struct.unpack_from(">i", data, pos + 8)
        pos += _LOG_OVERHEAD + max(length, 0)
    if pos + _V1_HEADER.size > len(data):
        return position, position, 0, b""
    (length,) = struct.unpack_from(">i", data, pos + 8)
    raw = bytes(data[pos : pos + _LOG_OVERHEAD + max(length, 0)])
    magic = data[pos + 16]
    if magic >= 2 and len(raw) >= _V2_HEADER.size:
        base, _, _, _, _, attributes, last_delta = _V2_HEADER.unpack_from(raw)
        last = base + last_delta
    else:  # a legacy message (set): its offset is its last
        base, _, _, _, attributes = _V1_HEADER.unpack_from(raw)
        last = base
    first = max(base, position)
    return first, max(last, first), attributes & 0x07, raw


class FetchedRecords:
    """aiokafka's ``MemoryRecords`` of one fetched partition that keeps the fetched
    bytes and counts the batches it hands out, so that a batch that fails can be found."""

    __slots__ = ("data", "handed", "has_next", "next", "size_in_bytes")

    def __init__(self, data: bytes) -> None:
        records = MemoryRecords(data)
        self.data = data
        self.handed = 0
        self.has_next = records.has_next
        self.size_in_bytes = records.size_in_bytes
        self.next = records.next_batch

    def next_batch(self) -> Any:
        self.handed += 1
        return self.next()


class GuardedPartitionRecords(PartitionRecords):
    """A fetched partition's records that end before a batch that cannot be decoded
    (and tell the guard), instead of raising."""

    def __init__(self, guard: BatchGuard, *args: Any) -> None:
        self._guard = guard
        super().__init__(*args)

    def _unpack_records(self) -> Any:
        try:
            yield from super()._unpack_records()
        except Exception as exc:
            if not self._guard.undecodable(self._tp, self._records, self.next_fetch_offset, exc):
                raise


Report = Callable[[UndecodableBatch], None]


class BatchGuard:
    """What one consumer does with a batch it cannot decode: for ``topics``, pause the
    partition and ``report`` the batch on ``loop``; for any other topic, raise."""

    def __init__(
        self,
        consumer: Any,
        topics: Collection[str],
        report: Report,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.consumer = consumer
        self.topics = frozenset(topics)
        self.report = report
        self.loop = loop
        self.found = 0

    def partition_records(self, *args: Any) -> GuardedPartitionRecords:
        return GuardedPartitionRecords(self, *args)

    def undecodable(self, tp: Any, records: Any, position: int, exc: BaseException) -> bool:
        """In the consumer's own thread: whether the batch was taken care of."""
        if tp.topic not in self.topics or not isinstance(records, FetchedRecords):
            return False
        first, last, codec_id, raw = locate(records.data, records.handed, position)
        batch = UndecodableBatch(
            tp.topic,
            tp.partition,
            first,
            last,
            codec_name(codec_id),
            type(exc).__name__,
            str(exc)[:2000],
            raw,
        )
        self.found += 1
        self.consumer.pause(tp)
        self.loop.call_soon_threadsafe(self.report, batch)
        return True


_GUARD = "_warmcast_batch_guard"
_NAMES = {"PartitionRecords", "MemoryRecords"}


def guard_consumer(consumer: Any, topics: Collection[str], report: Report) -> bool:
    """Guard ``consumer``'s fetcher (once; call it from the event loop ``report`` is to
    run on). Returns whether the consumer is guarded: ``False`` before it has started,
    or if this aiokafka builds its fetched records differently.

    The fetcher makes the records of each fetched partition in ``_proc_fetch_request``;
    this consumer's fetcher gets its own copy of that method, which makes them with
    :class:`FetchedRecords` and :class:`GuardedPartitionRecords`. Other consumers of the
    process are left as they are.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return False
    if isinstance(getattr(fetcher, _GUARD, None), BatchGuard):
        return True
    method = kafka_fetcher.Fetcher._proc_fetch_request
    if not _NAMES.issubset(method.__code__.co_names):
        log.error("this aiokafka makes fetched records differently: batches are not guarded")
        return False
    guard = BatchGuard(consumer, topics, report, asyncio.get_running_loop())
    scope = dict(method.__globals__)
    scope.update(PartitionRecords=guard.partition_records, MemoryRecords=FetchedRecords)
    own = types.FunctionType(
        method.__code__, scope, method.__name__, method.__defaults__, method.__closure__
    )
    fetcher._proc_fetch_request = types.MethodType(own, fetcher)
    setattr(fetcher, _GUARD, guard)
    return True


def operator_action(batch: UndecodableBatch) -> str:
    """What the operator does about ``batch``, in a sentence (an alert's summary).

    >>> bad = UndecodableBatch("usage", 1, 40, 42, "unknown (6)", "UnsupportedCodecError",
    ...                        "Unknown compression codec 0x06", b"")
    >>> action = operator_action(bad)
    >>> action.split(" {")[0]
    'skip them to usage.dlq: POST /control/skip-batch'
    >>> action.split("skip-batch ")[1]
    '{"topic": "usage", "partition": 1, "offset": 40}'
    """
    if batch.codec_missing:
        return (
            f"install the {batch.codec} codec (pip install 'aiokafka[snappy,lz4,zstd]') and "
            "restart the worker: it resumes there"
        )
    where = f'"topic": "{batch.topic}", "partition": {batch.partition}'
    return (
        f"skip them to {batch.topic}.dlq: POST /control/skip-batch "
        f'{{{where}, "offset": {batch.first_offset}}}'
    )


def summary(batch: UndecodableBatch) -> str:
    """The alert's summary: where, what failed, what to do (at most 256 characters).

    >>> bad = UndecodableBatch("usage", 1, 40, 42, "snappy", "DecompressionError",
    ...                        "snappy: corrupt input", b"")
    >>> summary(bad)[:73]
    'usage[1] offsets 40-42 cannot be decoded (snappy, DecompressionError): pa'
    """
    where = f"{batch.topic}[{batch.partition}] offsets {batch.first_offset}-{batch.last_offset}"
    text = (
        f"{where} cannot be decoded ({batch.codec}, {batch.error_class}): partition paused; "
        + operator_action(batch)
    )
    return text[:256]
