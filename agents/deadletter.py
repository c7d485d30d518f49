"""Bad input: consumed messages decoded and checked, and what fails goes to
``<topic>.dlq`` with headers that say why.

A dead letter keeps the bad message (or event) whole when it fits what the producer and
the dead-letter topic take; otherwise its head is kept, and headers say so
(``warmcast.truncated``) with the size and SHA-256 of the whole
(``warmcast.original-size``, ``warmcast.original-sha256``).
"""

from __future__ import annotations

import logging
import time

from faust.types import EventT

from schemas.envelope import E, EventError
from streams.app import app
from streams.sending import Delivery, truncate_to_fit

log = logging.getLogger(__name__)


async def dead_letter(event: EventT, error: EventError) -> Delivery:
    """Publish one bad message (or one bad event of an envelope) to its dead-letter topic;
    returns its delivery."""
    message = event.message
    topic = message.topic
    headers = [
        ("warmcast.original-topic", topic.encode()),
        ("warmcast.original-partition", str(message.partition).encode()),
        ("warmcast.original-offset", str(message.offset).encode()),
        ("warmcast.error-class", error.error_class.encode()),
        ("warmcast.error-reason", error.reason.encode()),
        ("warmcast.error-message", error.message[:2000].encode()),
    ]
    if error.index is not None:
        headers.append(("warmcast.envelope-index", str(error.index).encode()))
    runtime = app.runtime
    sender = app.sender
    dlq = f"{topic}.dlq"
    key, value, headers = truncate_to_fit(
        message.key,
        error.raw if error.raw else (message.value or b""),
        headers,
        sender.limit(dlq),
        max_value=runtime.settings.max_message_bytes,
    )
    origin = (topic, message.partition, message.offset)
    delivery = await sender.send(dlq, value, key=key, headers=headers, origin=origin)
    runtime.metrics.dead_letters.labels(topic=topic, reason=error.reason).inc()
    runtime.note_dead_letters(1, time.time())
    return delivery


async def dead_letter_all(event: EventT, errors: list[EventError]) -> list[Delivery]:
    return [await dead_letter(event, error) for error in errors]


async def decode_or_dead_letter(
    event: EventT, schema: type[E], now: float, deliveries: list[Delivery], agent: str
) -> list[E]:
    """The good events of a consumed message (counted as consumed); every bad one (and a
    message that is not JSON, too large, or out of time bounds) is dead-lettered, and its
    delivery added to ``deliveries``. A message that cannot be decoded at all (an error
    of the worker's own) is dead-lettered as ``processing_error`` (see :func:`failed`)."""
    runtime = app.runtime
    message = event.message
    runtime.metrics.consumed(message.topic).inc()
    try:
        decoded = runtime.decode(message.value, schema, now)
    except Exception as exc:
        log.exception("could not decode %s offset %d", message.tp, message.offset)
        deliveries += await failed(agent, exc, [event])
        return []
    if decoded.errors:
        deliveries += await dead_letter_all(event, decoded.errors)
    return decoded.events


async def failed(agent: str, exc: BaseException, events: list[EventT]) -> list[Delivery]:
    """The worker itself failed on ``events``: each is dead-lettered as
    ``processing_error`` and the agent goes on with the next, the failure counted as a
    crash of ``agent`` all the same (a worker failing again and again is not ready and
    raises ``agent_crash_loop``, see :mod:`agents.probes`). Returns the deliveries."""
    from agents.probes import note_crash

    error = EventError("processing_error", type(exc).__name__, f"{exc!r}"[:2000])
    out = [await dead_letter(event, error) for event in events]
    await note_crash(agent, exc)
    return out
