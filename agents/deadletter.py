"""Bad input: consumed messages decoded and checked, and what fails goes to
``<topic>.dlq`` with headers that say why."""

from __future__ import annotations

import time

from faust.types import EventT

from schemas.envelope import E, EventError
from streams.app import app


async def dead_letter(event: EventT, error: EventError) -> None:
    """Publish one bad message (or one bad event of an envelope) to its dead-letter topic."""
    message = event.message
    topic = message.topic
    headers = {
        "warmcast.original-topic": topic.encode(),
        "warmcast.original-partition": str(message.partition).encode(),
        "warmcast.original-offset": str(message.offset).encode(),
        "warmcast.error-class": error.error_class.encode(),
        "warmcast.error-reason": error.reason.encode(),
        "warmcast.error-message": error.message[:2000].encode(),
    }
    if error.index is not None:
        headers["warmcast.envelope-index"] = str(error.index).encode()
    value = error.raw if error.raw else (message.value or b"")
    if len(value) > app.runtime.settings.max_message_bytes:
        value = value[: app.runtime.settings.max_message_bytes]
        headers["warmcast.truncated"] = b"true"
    await app.topic(f"{topic}.dlq").send(key=message.key, value=value, headers=headers)
    runtime = app.runtime
    runtime.metrics.dead_letters.labels(topic=topic, reason=error.reason).inc()
    runtime.note_dead_letters(1, time.time())


async def dead_letter_all(event: EventT, errors: list[EventError]) -> None:
    for error in errors:
        await dead_letter(event, error)


async def decode_or_dead_letter(event: EventT, schema: type[E], now: float) -> list[E]:
    """The good events of a consumed message (counted as consumed); every bad one (and a
    message that is not JSON, too large, or out of time bounds) is dead-lettered."""
    runtime = app.runtime
    message = event.message
    runtime.metrics.consumed(message.topic).inc()
    decoded = runtime.decode(message.value, schema, now)
    if decoded.errors:
        await dead_letter_all(event, decoded.errors)
    return decoded.events
