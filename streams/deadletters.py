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
from streams.crashes import AgentCrashes
from streams.runtime import Runtime
from streams.sending import Delivery, Sender, truncate_to_fit

log = logging.getLogger(__name__)


def error_headers(
    topic: str, partition: int, offset: int, error: EventError
) -> list[tuple[str, bytes]]:
    """The headers that say where a dead letter was read and why it was refused."""
    return [
        ("warmcast.original-topic", topic.encode()),
        ("warmcast.original-partition", str(partition).encode()),
        ("warmcast.original-offset", str(offset).encode()),
        ("warmcast.error-class", error.error_class.encode()),
        ("warmcast.error-reason", error.reason.encode()),
        ("warmcast.error-message", error.message[:2000].encode()),
    ]


class DeadLetters:
    """Dead-letters what the worker's agents cannot take (``app.dead_letters``)."""

    def __init__(self, runtime: Runtime, sender: Sender, crashes: AgentCrashes) -> None:
        self.runtime = runtime
        self.sender = sender
        self.crashes = crashes

    async def send(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        error: EventError,
        max_value: int,
    ) -> Delivery:
        """Publish one refused record of ``topic`` to ``<topic>.dlq``, counted; returns
        its delivery."""
        headers = error_headers(topic, partition, offset, error)
        if error.index is not None:
            headers.append(("warmcast.envelope-index", str(error.index).encode()))
        sender = self.sender
        dlq = f"{topic}.dlq"
        key, value, headers = truncate_to_fit(
            key, value, headers, sender.limit(dlq), max_value=max_value
        )
        origin = (topic, partition, offset)
        delivery = await sender.send(dlq, value, key=key, headers=headers, origin=origin)
        self.runtime.metrics.dead_letters.labels(topic=topic, reason=error.reason).inc()
        self.runtime.note_dead_letters(1, time.time())
        return delivery

    async def dead_letter(self, event: EventT, error: EventError) -> Delivery:
        """Publish one bad message (or one bad event of an envelope) to its dead-letter
        topic; returns its delivery."""
        message = event.message
        value = error.raw if error.raw else (message.value or b"")
        return await self.send(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            value,
            error,
            self.runtime.settings.max_message_bytes,
        )

    async def dead_letter_all(self, event: EventT, errors: list[EventError]) -> list[Delivery]:
        return [await self.dead_letter(event, error) for error in errors]

    async def decode(
        self,
        event: EventT,
        schema: type[E],
        now: float,
        deliveries: list[Delivery],
        agent: str,
        count: bool = True,
    ) -> list[E]:
        """The good events of a consumed message (counted as consumed, unless not
        ``count``: a caller that counts a batch's messages at once); every bad one
        (and a message that is not JSON, too large, or out of time bounds) is
        dead-lettered, and its delivery added to ``deliveries``. A message that cannot be
        decoded at all (an error of the worker's own) is dead-lettered as
        ``processing_error`` (see :meth:`failed`)."""
        runtime = self.runtime
        message = event.message
        if count:
            runtime.metrics.consumed(message.topic).inc()
        try:
            decoded = runtime.decode(message.value, schema, now)
        except Exception as exc:
            log.exception("could not decode %s offset %d", message.tp, message.offset)
            deliveries += await self.failed(agent, exc, [event])
            return []
        if decoded.errors:
            deliveries += await self.dead_letter_all(event, decoded.errors)
        return decoded.events

    async def failed(self, agent: str, exc: BaseException, events: list[EventT]) -> list[Delivery]:
        """The worker itself failed on ``events``: each is dead-lettered as
        ``processing_error`` and the agent goes on with the next, the failure counted as
        a crash of ``agent`` all the same (a worker failing again and again is not ready
        and raises ``agent_crash_loop``, see :mod:`streams.crashes`). Returns the
        deliveries."""
        error = EventError("processing_error", type(exc).__name__, f"{exc!r}"[:2000])
        out = [await self.dead_letter(event, error) for event in events]
        await self.crashes.note(agent, exc)
        return out
