"""Input messages acknowledged once what they caused is delivered; partitions held while
it cannot be.

An agent hands each partition's messages of a batch to :meth:`InputGate.settle`, with the
deliveries they caused (:class:`~streams.sending.Delivery`: dead letters, forwards,
warmup commands). The messages are acknowledged, so that their offsets may be committed,
once those deliveries and those of every earlier message of the partition are done. Faust
commits a partition up to its first unacknowledged offset, but not reliably when a later
offset is acknowledged just past it, so a partition's messages are acknowledged strictly in
order.

A delivery in trouble holds the partitions whose messages wait for it: each is paused in
the consumer (the other partitions go on), ``on_hold(tp, offset, delivery)`` is told the
first offset left uncommitted, and nothing from there on is acknowledged. When the
delivery goes through at last, the messages are acknowledged, the partition resumes and
``on_resume(tp, released=False)`` is told.

A rebalance or a stop does not wait for a held partition: :meth:`release` lets its
messages go unacknowledged (``on_resume(tp, released=True)``), and they are read again
from the committed offset, by this worker or by the partition's next owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from faust.types import TP, EventT

from streams.sending import Delivery

log = logging.getLogger(__name__)

#: Pauses or resumes fetching from partitions.
Fetching = Callable[[set[TP]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Released:
    """Messages of a partition let go unacknowledged, and what they waited for."""

    tp: TP
    offset: int  # the first one
    messages: int
    undelivered: list[str]


@dataclass(slots=True)
class _Waiting:
    """Messages of one partition (in order) and the deliveries they wait for."""

    events: list[EventT]
    deliveries: list[Delivery]

    def ready(self) -> bool:
        return all(d.delivered for d in self.deliveries)

    def troubled(self) -> bool:
        return any(d.troubled and not d.done.done() for d in self.deliveries)


class InputGate:
    """Acknowledges input messages once their deliveries are done, in order per partition,
    and holds partitions whose deliveries are in trouble (see the module's docstring).

    ``ack(event)`` acknowledges one event; ``forget(event)`` stops the consumer waiting
    for one that is let go unacknowledged; ``pause`` and ``resume`` stop and restart
    fetching a partition; ``abandon(delivery)`` gives up a delivery of messages let go.
    """

    def __init__(
        self,
        ack: Callable[[EventT], object],
        forget: Callable[[EventT], None],
        pause: Fetching,
        resume: Fetching,
        abandon: Callable[[Delivery], None],
    ) -> None:
        self.ack = ack
        self.forget = forget
        self.pause = pause
        self.resume = resume
        self.abandon = abandon
        self.on_hold: Callable[[TP, int, Delivery], None] | None = None
        self.on_resume: Callable[[TP, bool], None] | None = None
        self.waiting: dict[TP, deque[_Waiting]] = {}
        #: Held partitions, with the first offset they hold (left uncommitted).
        self.held: dict[TP, int] = {}
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def settle(self, events: list[EventT], deliveries: Iterable[Delivery] = ()) -> None:
        """Acknowledge ``events`` (of one partition, in order) once ``deliveries`` and
        everything before them in the partition are done."""
        if not events:
            return
        tp = events[0].message.tp
        queue = self.waiting.get(tp)
        pending = [d for d in deliveries if not d.delivered]
        if not pending and not queue:
            ack = self.ack
            for event in events:
                ack(event)
            return
        if queue is None:
            queue = self.waiting[tp] = deque()
        queue.append(_Waiting(events, pending))

        def advance(_: object) -> None:
            self._advance(tp)

        def hold(delivery: Delivery) -> None:
            self._hold(tp, delivery)

        for delivery in pending:
            delivery.done.add_done_callback(advance)
            delivery.watch(hold)

    def held_offset(self, topic: str, partition: int) -> int | None:
        """The first offset a held partition leaves uncommitted (``None``: not held)."""
        for tp, offset in self.held.items():
            if tp.topic == topic and tp.partition == partition:
                return offset
        return None

    def unsettled(self) -> int:
        """Messages waiting for deliveries that are not in trouble."""
        return sum(
            len(w.events) for tp, q in self.waiting.items() if tp not in self.held for w in q
        )

    async def wait_settled(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until no message waits but those of held
        partitions; returns whether that came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.unsettled():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return not self.unsettled()
        return True

    def release(self) -> list[Released]:
        """Let every waiting message go unacknowledged (a rebalance or a stop: they are
        read again from the committed offset); returns what was let go, per partition."""
        out: list[Released] = []
        for tp, queue in list(self.waiting.items()):
            events = [e for w in queue for e in w.events]
            for event in events:
                self.forget(event)
            undelivered: list[str] = []
            for w in queue:
                for delivery in w.deliveries:
                    if delivery.done.done():
                        continue
                    undelivered.append(delivery.describe())
                    if not delivery.shared:
                        self.abandon(delivery)
            out.append(Released(tp, events[0].message.offset, len(events), undelivered))
        self.waiting.clear()
        for tp in list(self.held):
            del self.held[tp]
            if self.on_resume is not None:
                self.on_resume(tp, True)
        self._changed.set()
        return out

    def _advance(self, tp: TP) -> None:
        queue = self.waiting.get(tp)
        ack = self.ack
        while queue and queue[0].ready():
            for event in queue.popleft().events:
                ack(event)
        if not queue:
            self.waiting.pop(tp, None)
        self._changed.set()
        if tp in self.held and not any(w.troubled() for w in queue or ()):
            del self.held[tp]
            self._spawn(self.resume({tp}))
            if self.on_resume is not None:
                self.on_resume(tp, False)

    def _hold(self, tp: TP, delivery: Delivery) -> None:
        queue = self.waiting.get(tp)
        if not queue or tp in self.held:
            return
        offset = queue[0].events[0].message.offset
        self.held[tp] = offset
        self._changed.set()
        self._spawn(self.pause({tp}))
        log.error(
            "holding %s partition %d at offset %d: %s could not be delivered",
            tp.topic,
            tp.partition,
            offset,
            delivery.describe(),
        )
        if self.on_hold is not None:
            self.on_hold(tp, offset, delivery)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
