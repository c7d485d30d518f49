"""Every record the worker publishes leaves through one :class:`Sender`.

The sender knows what the producer and the broker take. A record is measured as the
producer measures it (:func:`record_size`) against the smaller of the producer's request
limit (Faust's ``producer_max_request_size``) and the destination topic's
``max.message.bytes`` when the broker says it, so that a caller cuts
(:func:`truncate_to_fit`) or splits (:func:`split_to_fit`) what would not fit before it
is sent, instead of having the producer refuse it.

A send that fails is tried again after a pause that grows exponentially, with jitter
(:class:`Backoff`), up to ``send_retry_max_seconds``, and on and on until it succeeds or
the worker stops: nothing is dropped. Each send is a :class:`Delivery`, whose ``done``
resolves once the broker has the records. A delivery is *in trouble* once it has failed
``attempts`` times, or once for a reason that is not retriable; whoever waits for it is
told then (:meth:`Delivery.watch`: the input messages that caused it are held, see
:mod:`streams.holding`), and again when it goes through at last.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

log = logging.getLogger(__name__)

T = TypeVar("T")
Headers = Sequence[tuple[str, bytes]]
#: One try of a send: hands the records to the producer, returns its delivery future.
Attempt = Callable[[], Awaitable["asyncio.Future[Any]"]]

#: Longest the worker waits to hand a record to the producer (its buffer full, or the
#: topic unknown) before the try counts as failed and is made again in the background.
HANDOVER_SECONDS = 5.0

TRUNCATED = "warmcast.truncated"
ORIGINAL_SIZE = "warmcast.original-size"
ORIGINAL_SHA256 = "warmcast.original-sha256"


def record_size(key: bytes | None, value: bytes | None, headers: Headers = ()) -> int:
    """Bytes the producer counts for one record against its request limit (the record in
    a batch of its own, headers included).

    >>> record_size(b"k", b"v" * 100) - record_size(b"k", b"")
    101
    """
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
    return size


def truncate_to_fit(
    key: bytes | None,
    value: bytes,
    headers: Headers,
    limit: int,
    max_value: int | None = None,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The record as it can be sent within ``limit`` bytes (and a value of at most
    ``max_value``): returned as it is when it fits, else with the head of its value and
    headers that say so, with the original value's size and SHA-256 (hex). A key longer
    than a quarter of the limit is cut to that too.

    >>> key, cut, headers = truncate_to_fit(b"k", b"x" * 5000, [("why", b"test")], limit=1000)
    >>> h = dict(headers)
    >>> h[TRUNCATED], h[ORIGINAL_SIZE], record_size(key, cut, headers) <= 1000, len(cut) > 500
    (b'true', b'5000', True, True)
    >>> h[ORIGINAL_SHA256] == hashlib.sha256(b"x" * 5000).hexdigest().encode()
    True
    >>> truncate_to_fit(b"k", b"small", [], limit=1000)
    (b'k', b'small', [])
    """
    kept = list(headers)
    too_long = max_value is not None and len(value) > max_value
    if not too_long and record_size(key, value, kept) <= limit:
        return key, value, kept
    kept += [
        (TRUNCATED, b"true"),
        (ORIGINAL_SIZE, str(len(value)).encode()),
        (ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
    if key is not None and len(key) > limit // 4:
        key = key[: limit // 4]
    room = limit - record_size(key, b"", kept)
    if max_value is not None:
        room = min(room, max_value)
    cut = value[: max(room, 0)]
    while cut and (over := record_size(key, cut, kept) - limit) > 0:
        cut = cut[: len(cut) - over]  # the value's length prefix grows with it
    return key, cut, kept


def split_to_fit(
    items: Sequence[T], encode: Callable[[Sequence[T]], bytes], fits: Callable[[bytes], bool]
) -> tuple[list[tuple[Sequence[T], bytes]], list[T]]:
    """``items`` encoded in pieces that each ``fits``, in order (a piece that does not fit
    is halved); returns the pieces (their items and body) and the items that do not fit
    even alone.

    >>> import json
    >>> pieces, alone = split_to_fit(
    ...     ["a", "b", "c", "d", "long" * 9], lambda xs: json.dumps(xs).encode(),
    ...     lambda body: len(body) <= 12)
    >>> [json.loads(body) for _, body in pieces], alone
    ([['a', 'b'], ['c'], ['d']], ['longlonglonglonglonglonglonglonglong'])
    """
    pieces: list[tuple[Sequence[T], bytes]] = []
    alone: list[T] = []

    def place(part: Sequence[T]) -> None:
        body = encode(part)
        if fits(body):
            pieces.append((part, body))
        elif len(part) == 1:
            alone.append(part[0])
        else:
            middle = len(part) // 2
            place(part[:middle])
            place(part[middle:])

    if items:
        place(items)
    return pieces, alone


def retriable(exc: BaseException) -> bool:
    """Whether a failed send may succeed when tried again: the broker's own verdict, as
    aiokafka marks its errors, and any timeout.

    >>> from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
    >>> retriable(KafkaConnectionError()), retriable(MessageSizeTooLargeError())
    (True, False)
    >>> retriable(RuntimeError("wrapping", )), retriable(KafkaTimeoutError())
    (False, True)
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KafkaTimeoutError | TimeoutError):
            return True
        if isinstance(seen, KafkaError):
            return bool(seen.retriable)
        seen = seen.__cause__
    return False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the pause before try ``attempt + 1`` is drawn
    between half and all of ``first * factor ** (attempt - 1)``, never more than ``most``.

    >>> b = Backoff(first=0.1, most=2.0)
    >>> [round(b.ceiling(n), 2) for n in (1, 2, 3, 6, 500)]
    [0.1, 0.2, 0.4, 2.0, 2.0]
    >>> 0.05 <= b.delay(1, random.Random(7)) <= 0.1
    True
    """

    first: float = 0.1
    most: float = 30.0
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        return min(self.most, self.first * self.factor ** min(max(attempt - 1, 0), 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(attempt)
        return top / 2 + (rng or random).random() * top / 2


class RecordTooLarge(ValueError):
    """A record larger than its destination takes (the caller cuts or splits first)."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"a record of {size} bytes exceeds the {limit} bytes {topic} takes")
        self.topic, self.size, self.limit = topic, size, limit


class Delivery:
    """Records on their way to ``topic`` (``partition`` when it is chosen here).

    ``done`` resolves once the broker has them and never fails: a failed send is tried
    again until it succeeds, or until it is abandoned (``done`` is then cancelled).
    ``shared`` marks records that several input messages caused (a record batch of
    warmup commands): such a delivery is never abandoned for one of them.
    """

    __slots__ = (
        "_task",
        "_watchers",
        "attempts",
        "done",
        "error",
        "origin",
        "partition",
        "records",
        "shared",
        "size",
        "topic",
        "troubled",
    )

    def __init__(
        self, topic: str, partition: int | None, records: int, size: int, shared: bool = False
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records
        self.size = size
        self.shared = shared
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.attempts = 0  # failed tries so far
        self.error: BaseException | None = None  # the latest failure
        self.troubled = False
        #: The input message that caused it, when there is one: (topic, partition, offset).
        self.origin: tuple[str, int, int] | None = None
        self._watchers: list[Callable[[Delivery], None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def delivered(self) -> bool:
        return self.done.done() and not self.done.cancelled()

    def watch(self, on_trouble: Callable[[Delivery], None]) -> None:
        """Call ``on_trouble(self)`` once this delivery is in trouble (now, if it is)."""
        if self.done.done():
            return
        if self.troubled:
            on_trouble(self)
        else:
            self._watchers.append(on_trouble)

    def in_trouble(self, error: BaseException) -> None:
        """Mark the delivery in trouble and tell who watches it."""
        self.error = error
        if self.troubled or self.done.done():
            return
        self.troubled = True
        watchers, self._watchers = self._watchers, []
        for on_trouble in watchers:
            on_trouble(self)

    def where(self) -> str:
        return self.topic if self.partition is None else f"{self.topic} partition {self.partition}"

    def describe(self, why: bool = True) -> str:
        """What the records are and where they go (and, with ``why``, the latest failure)."""
        reason = f": {self.error!r}" if why and self.error is not None else ""
        came = ""
        if self.origin is not None:
            came = f" (for {self.origin[0]} partition {self.origin[1]} offset {self.origin[2]})"
        return f"{self.records} record(s), {self.size} bytes, to {self.where()}{came}{reason}"


class Sender:
    """Sends records through the worker's producer within its request limit, and tries a
    failed send again until it succeeds (see the module's docstring).

    ``producer()`` is the running ``aiokafka.AIOKafkaProducer``. The hooks hear of every
    failed try (``on_failure``), of a delivery that gets in trouble (``on_trouble``) and of
    one in trouble that is done with, delivered or given up (``on_recovery``).
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        max_request_bytes: int,
        *,
        backoff: Backoff | None = None,
        attempts: int = 3,
    ) -> None:
        self.producer = producer
        self.max_request_bytes = max_request_bytes
        self.topic_limits: dict[str, int] = {}  # max.message.bytes, where the broker said
        self.backoff = backoff or Backoff()
        self.attempts = attempts
        self.on_failure: Callable[[Delivery, BaseException], None] | None = None
        self.on_trouble: Callable[[Delivery], None] | None = None
        self.on_recovery: Callable[[Delivery], None] | None = None
        #: Deliveries in trouble, or waiting to be tried again, not delivered yet.
        self.retrying: set[Delivery] = set()
        #: Topics with deliveries in trouble (how many), and the latest reason: a new
        #: record for one waits its turn in the background instead of holding its caller.
        self.troubled_topics: dict[str, int] = {}
        self._topic_errors: dict[str, BaseException] = {}
        self.closed = False

    def limit(self, topic: str) -> int:
        """The largest record ``topic`` takes, in :func:`record_size` bytes."""
        return min(self.max_request_bytes, self.topic_limits.get(topic, self.max_request_bytes))

    def fits(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> bool:
        return record_size(key, value, headers) <= self.limit(topic)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        origin: tuple[str, int, int] | None = None,
    ) -> Delivery:
        """Hand one record to the producer (waiting only while its buffer is full); the
        delivery says when the broker has it. ``origin`` is the input message that caused
        it (topic, partition, offset). Raises :class:`RecordTooLarge` for a record larger
        than ``topic`` takes."""
        size = record_size(key, value, headers)
        if size > self.limit(topic):
            raise RecordTooLarge(topic, size, self.limit(topic))
        delivery = Delivery(topic, partition, 1, size)
        delivery.origin = origin
        listed = list(headers)

        async def attempt() -> asyncio.Future[Any]:
            sent: asyncio.Future[Any] = await self.producer().send(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=timestamp_ms,
                headers=listed,
            )
            return sent

        if self.troubled_topics.get(topic):
            self.trouble(delivery, self._topic_errors[topic])
            delivery._task = asyncio.ensure_future(self._again(delivery, attempt))
        else:
            await self._try(delivery, attempt)
        return delivery

    async def send_batch(self, delivery: Delivery, batch: Any, partition: int) -> None:
        """Hand a record batch (``producer().create_batch()``, closed) for
        ``delivery.topic`` to the producer; ``delivery`` says when the broker has it."""
        delivery.partition = partition

        async def attempt() -> asyncio.Future[Any]:
            sent: asyncio.Future[Any] = await self.producer().send_batch(
                batch, delivery.topic, partition=partition
            )
            return sent

        await self._try(delivery, attempt)

    async def _try(self, delivery: Delivery, attempt: Attempt) -> None:
        try:
            async with asyncio.timeout(HANDOVER_SECONDS):
                sent = await attempt()
        except Exception as exc:  # a timeout too; not a cancellation
            self._failed(delivery, attempt, exc)
            return
        sent.add_done_callback(lambda f: self._settled(delivery, attempt, f))

    def _settled(self, delivery: Delivery, attempt: Attempt, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            self._failed(delivery, attempt, KafkaTimeoutError("the send was cancelled"))
            return
        exc = sent.exception()
        if exc is None:
            self._delivered(delivery)
        else:
            self._failed(delivery, attempt, exc)

    def _failed(self, delivery: Delivery, attempt: Attempt, exc: BaseException) -> None:
        if delivery.done.done():
            return
        delivery.attempts += 1
        delivery.error = exc
        self.retrying.add(delivery)
        if self.on_failure is not None:
            self.on_failure(delivery, exc)
        if not delivery.troubled and (not retriable(exc) or delivery.attempts >= self.attempts):
            log.error(
                "could not deliver %s after %d tries; trying again every %.0fs at most",
                delivery.describe(),
                delivery.attempts,
                self.backoff.most,
            )
            self.trouble(delivery, exc)
        if self.closed:
            self.abandon(delivery)
            return
        delivery._task = asyncio.ensure_future(self._again(delivery, attempt))

    async def _again(self, delivery: Delivery, attempt: Attempt) -> None:
        await asyncio.sleep(self.backoff.delay(delivery.attempts))
        delivery._task = None
        await self._try(delivery, attempt)

    def trouble(self, delivery: Delivery, error: BaseException) -> None:
        """Put ``delivery`` in trouble (also one not sent yet, that waits behind one)."""
        if delivery.troubled or delivery.done.done():
            delivery.error = error
            return
        self.retrying.add(delivery)
        topic = delivery.topic
        self.troubled_topics[topic] = self.troubled_topics.get(topic, 0) + 1
        self._topic_errors[topic] = error
        delivery.in_trouble(error)
        if self.on_trouble is not None:
            self.on_trouble(delivery)

    def _delivered(self, delivery: Delivery) -> None:
        if delivery.done.done():
            return
        delivery.done.set_result(None)
        self.retrying.discard(delivery)
        if delivery.troubled:
            log.warning(
                "delivered %s after %d failed tries", delivery.describe(False), delivery.attempts
            )
            self._untroubled(delivery)

    def abandon(self, delivery: Delivery) -> None:
        """Stop trying ``delivery`` (its ``done`` is cancelled)."""
        task, delivery._task = delivery._task, None
        if task is not None:
            task.cancel()
        self.retrying.discard(delivery)
        if not delivery.done.done():
            delivery.done.cancel()
            if delivery.troubled:
                self._untroubled(delivery)

    def _untroubled(self, delivery: Delivery) -> None:
        """A delivery in trouble is done with: delivered, or given up."""
        topic = delivery.topic
        left = self.troubled_topics.get(topic, 0) - 1
        if left > 0:
            self.troubled_topics[topic] = left
        else:
            self.troubled_topics.pop(topic, None)
        if self.on_recovery is not None:
            self.on_recovery(delivery)

    def close(self) -> list[Delivery]:
        """Stop trying again (the worker stops); returns the deliveries given up."""
        self.closed = True
        given_up = [d for d in self.retrying if not d.done.done()]
        for delivery in given_up:
            self.abandon(delivery)
        return given_up
