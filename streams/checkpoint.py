"""Checkpoints on Kafka: ``<namespace>.checkpoints.v1``, compacted, keyed by usage partition.

The key of a partition's periodic checkpoint is its number (``b"3"``); an operator's named
snapshot of it is ``b"3@before-upgrade"``. Every worker tails the whole topic and keeps an
index of the latest *verified* record per key (where it is, what it covers), not the
records themselves; a checkpoint is fetched again, and verified again, when it is used.

A record that fails verification (no tag, a wrong tag, signed for another partition or
namespace) is refused and reported, and the previous good one stays in the index; so is a
``stale`` one, covering fewer offsets than the one before it (an old record published
again, or a late write of a worker the partition has moved away from).

"Caught up" means each partition of the topic has been read to the high watermark of a
fetch response sent after the question was asked: the embedded broker's ListOffsets can
report an end short of a multi-record batch, a fetch response's high watermark cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from engine.checkpoint import CheckpointHeader, CheckpointRejected, unseal
from streams.kafka import client_kwargs, last_answer, topic_partitions
from streams.settings import WarmcastSettings

log = logging.getLogger(__name__)

#: Called with (reason, detail) for each refused record.
OnRejected = Callable[[str, str], None]

#: How long a fetch with no data waits; bounds how soon the index sees a new record.
FETCH_WAIT_MS = 100


def record_key(partition: int, name: str = "") -> bytes:
    """The key of a partition's checkpoint, or of its snapshot called ``name``.

    >>> record_key(3), record_key(3, "before-upgrade")
    (b'3', b'3@before-upgrade')
    """
    return f"{partition}@{name}".encode() if name else str(partition).encode()


def parse_key(key: bytes | None) -> tuple[int, str] | None:
    """The usage partition and snapshot name of a key (``None``: not a checkpoint key).

    >>> parse_key(b"3"), parse_key(b"3@nightly"), parse_key(b"x"), parse_key(None)
    ((3, ''), (3, 'nightly'), None, None)
    """
    if not key:
        return None
    text = key.decode(errors="replace")
    number, _, name = text.partition("@")
    if not number.isdigit() or len(number) > 6:
        return None
    return int(number), name


@dataclass(frozen=True, slots=True)
class Indexed:
    """Where the latest verified checkpoint of a key is, and what it covers."""

    partition: int  # of the checkpoints topic
    offset: int
    header: CheckpointHeader
    size: int


class CheckpointStore:
    """Writes checkpoints and finds the latest verified one of each usage partition."""

    def __init__(self, settings: WarmcastSettings, key: bytes, on_rejected: OnRejected) -> None:
        self.settings = settings
        self.topic = settings.topic("checkpoints")
        self.key = key
        self.on_rejected = on_rejected
        self.index: dict[bytes, Indexed] = {}
        self.rejected = 0
        self._room = settings.checkpoint_max_bytes + 64 * 1024
        self._producer: AIOKafkaProducer | None = None
        self._tail: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        self._reading = asyncio.Lock()
        self._progress = asyncio.Event()

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        async with self._started:
            if self._task is not None:
                return
            kwargs = client_kwargs(self.settings)
            self._producer = AIOKafkaProducer(
                **kwargs, acks="all", linger_ms=0, max_request_size=self._room
            )
            await self._producer.start()
            self._tail = self._consumer(kwargs)
            await self._tail.start()
            partitions = await topic_partitions(self._tail, self.topic)
            self._tps = [TopicPartition(self.topic, p) for p in partitions]
            self._tail.assign(self._tps)
            await self._tail.seek_to_beginning(*self._tps)
            self._reader = self._consumer(kwargs)
            await self._reader.start()
            self._task = asyncio.get_running_loop().create_task(self._follow())

    def _consumer(self, kwargs: dict[str, object]) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kwargs,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_partition_fetch_bytes=self._room,
            fetch_max_bytes=max(self._room, 52_428_800),
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in (self._tail, self._reader, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._tail = self._reader = self._producer = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- writing --------------------------------------------------------------------

    async def write(self, header: CheckpointHeader, sealed: bytes) -> None:
        """Publish a sealed checkpoint and wait until the broker has it."""
        if len(sealed) > self.settings.checkpoint_max_bytes:
            raise ValueError(
                f"checkpoint of partition {header.partition} is {len(sealed)} bytes, over "
                f"WARMCAST_CHECKPOINT_MAX_BYTES ({self.settings.checkpoint_max_bytes})"
            )
        await self.start()
        assert self._producer is not None
        key = record_key(header.partition, header.name)
        target = header.partition % len(self._tps)
        await self._producer.send_and_wait(self.topic, sealed, key=key, partition=target)

    # -- reading --------------------------------------------------------------------

    def latest(self, partition: int, name: str = "") -> Indexed | None:
        return self.index.get(record_key(partition, name))

    def names(self) -> list[str]:
        """Names of the snapshots in the index."""
        return sorted({k.partition(b"@")[2].decode() for k in self.index if b"@" in k})

    async def sync(self, timeout: float = 30.0) -> None:
        """Return once the index holds every record written before this call."""
        await self.start()
        asked = time.time() * 1000 + FETCH_WAIT_MS  # a fetch sent after now
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self._caught_up(asked):
            if not self.running:
                raise RuntimeError("the checkpoints topic is not being read")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"could not read {self.topic} to its end in {timeout:.0f}s")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 1.0))

    async def _caught_up(self, since_ms: float) -> bool:
        tail = self._tail
        if tail is None:
            return False
        for tp in self._tps:
            polled = tail.last_poll_timestamp(tp)
            highwater = tail.highwater(tp)
            if polled is None or polled < since_ms or highwater is None:
                return False
            if await tail.position(tp) < highwater:
                return False
        return True

    async def load(self, partition: int, name: str = "") -> tuple[CheckpointHeader, bytes] | None:
        """The latest verified checkpoint of a partition: its header and payload."""
        found = self.latest(partition, name)
        if found is None:
            return None
        record = await self._fetch(found.partition, found.offset)
        if record is None or record.value is None:
            raise CheckpointRejected("malformed", f"record {found.offset} is gone")
        header, payload = unseal(record.value, self.key)
        self._check(header, partition, name)
        return header, payload

    async def _fetch(self, partition: int, offset: int) -> ConsumerRecord[bytes, bytes] | None:
        reader = self._reader
        assert reader is not None
        tp = TopicPartition(self.topic, partition)
        async with self._reading:
            reader.assign([tp])
            reader.seek(tp, offset)
            deadline = asyncio.get_running_loop().time() + 30.0
            while asyncio.get_running_loop().time() < deadline:
                batch = await reader.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.offset == offset:
                        return record
                    if record.offset > offset:
                        return None
        return None

    def broker_answered(self) -> float | None:
        """Wall time (s) of the latest fetch response from the broker."""
        tail = self._tail
        return None if tail is None else last_answer(tail, self._tps)

    async def _follow(self) -> None:
        tail = self._tail
        assert tail is not None
        while True:
            try:
                batch = await tail.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away: keep trying, the stall is alerted on
                log.warning("reading %s failed; retrying", self.topic, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                for record in records:
                    self._index(tp.partition, record)
            self._progress.set()

    def _index(self, partition: int, record: ConsumerRecord[bytes, bytes]) -> None:
        parsed = parse_key(record.key)
        where = f"{self.topic}/{partition}@{record.offset}"
        if parsed is None or record.value is None:
            self._reject("malformed", f"{where}: not a checkpoint key {record.key!r}")
            return
        usage_partition, name = parsed
        try:
            header, _ = unseal(record.value, self.key)
            self._check(header, usage_partition, name)
        except CheckpointRejected as exc:
            self._reject(exc.reason, f"{where}: {exc}")
            return
        key = record_key(usage_partition, name)
        previous = self.index.get(key)
        before = previous.header.offsets if previous is not None else {}
        if any(header.offsets.get(kind, -1) < offset for kind, offset in before.items()):
            self._reject("stale", f"{where}: covers less than the checkpoint before it")
            return
        self.index[key] = Indexed(partition, record.offset, header, len(record.value))

    def _check(self, header: CheckpointHeader, partition: int, name: str) -> None:
        if header.partition != partition or header.name != name:
            raise CheckpointRejected(
                "mismatch", f"signed for partition {header.partition} {header.name!r}"
            )
        if header.namespace != self.settings.topic_namespace:
            raise CheckpointRejected("mismatch", f"signed for namespace {header.namespace!r}")

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected += 1
        log.warning("checkpoint refused (%s): %s", reason, detail)
        self.on_rejected(reason, detail)


__all__ = ["CheckpointStore", "Indexed", "parse_key", "record_key"]
