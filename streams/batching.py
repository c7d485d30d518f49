"""Taking a Faust stream's events in batches, waiting longer while the worker is behind.

Faust's ``Stream.take_events`` waits a fixed time for a batch to fill up. A short wait keeps
event-to-command latency low when the worker keeps up, but when it is behind (after a
restart, or a burst) the same short wait cuts the backlog into small batches, and
everything done once per batch (each partition's engine step, a record batch of commands
per warmup partition, the wait itself) is paid again every few messages. Here the wait is
asked for before each batch: the usage agent waits longer while a backlog is there to fill
the batch, and its latency is the backlog's anyway.

The events are acknowledged once the batch they came in has been processed (the code
iterating :func:`take_batches` has asked for the next batch), so a commit never covers an
event that has not been processed; or, with ``acknowledge=False``, by that code itself when it is
ready to (see :mod:`streams.holding`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from faust.types import EventT, StreamT


async def take_batches(
    stream: StreamT,
    max_events: int,
    max_bytes: int,
    wait: Callable[[], float],
    acknowledge: bool = True,
) -> AsyncGenerator[list[EventT], None]:
    """Batches of ``stream``'s events, full at ``max_events`` events or once their messages
    hold ``max_bytes`` bytes (an envelope's events count by its size); before each batch,
    at most ``wait()`` seconds pass waiting for it to fill up.

    A background task reads the stream (with its acknowledgements off) into the batch
    being filled; when that batch is full it waits until the batch is taken. Without
    ``acknowledge``, the events are left for the caller to acknowledge.
    """
    loop = asyncio.get_running_loop()
    filling: list[EventT] = []
    size = 0  # bytes of the messages in ``filling``
    full = asyncio.Event()
    taken = asyncio.Event()
    acks = stream.enable_acks
    stream.enable_acks = False  # each event is acknowledged after its batch is processed

    async def fill() -> None:
        nonlocal size
        async for _ in stream:
            event = stream.current_event
            if event is None:  # pragma: no cover  (a stream over a topic has events)
                continue
            filling.append(event)
            size += len(event.message.value or b"")
            if len(filling) >= max_events or size >= max_bytes:
                full.set()
                taken.clear()
                await taken.wait()

    filler = asyncio.ensure_future(fill())
    try:
        while True:
            if not full.is_set():
                timer = loop.call_later(wait(), full.set)
                await full.wait()
                timer.cancel()
            full.clear()
            if filler.done():
                filler.result()  # the stream failed: its error; else it has ended
                if not filling:
                    return
            if not filling:
                continue
            batch = filling[:]
            filling.clear()
            size = 0
            taken.set()
            yield batch
            if acknowledge:
                for event in batch:
                    await stream.ack(event)
    finally:
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler
        stream.enable_acks = acks


def behind(consumer: Any, event: EventT, messages: int) -> bool:
    """Whether at least ``messages`` more messages wait in the partition ``event`` came
    from (``consumer`` is the app's Faust consumer; unknown end: not behind).

    >>> from types import SimpleNamespace as Obj
    >>> consumer = Obj(highwater=lambda tp: 1000)
    >>> event = Obj(message=Obj(tp="usage-0", offset=500))
    >>> behind(consumer, event, 200), behind(consumer, event, 600)
    (True, False)
    """
    message = event.message
    try:
        end = consumer.highwater(message.tp)
    except Exception:  # not assigned any more, or not fetched yet
        return False
    return end is not None and end - (message.offset + 1) >= messages
