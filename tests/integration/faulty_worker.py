"""``warmcast worker`` whose producer is refused by the broker for some topics while a file
exists: the refusal a broker gives a client that may not write a topic
(``TopicAuthorizationFailedError``, not retriable), injected where the worker's records
meet the real producer, so that a test can turn it on and off.

``FAULT_TOPICS`` names the topics (comma-separated; ``topic:N`` for its partition N
alone), ``FAULT_SWITCH`` the file.
Run as ``python -m tests.integration.faulty_worker worker``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

TOPICS = frozenset(t for t in os.environ.get("FAULT_TOPICS", "").split(",") if t)
SWITCH = Path(os.environ.get("FAULT_SWITCH", "/nonexistent"))
_send = AIOKafkaProducer.send
_send_batch = AIOKafkaProducer.send_batch


def refused(topic: str, partition: int | None) -> asyncio.Future[Any] | None:
    """A delivery the broker refused, while the switch is on for ``topic`` (or for its
    ``partition``)."""
    named = topic in TOPICS or f"{topic}:{partition}" in TOPICS
    if not named or not SWITCH.exists():
        return None
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(TopicAuthorizationFailedError(f"{topic} refused (test switch)"))
    return future


async def send(self: AIOKafkaProducer, topic: str, *args: Any, **kwargs: Any) -> Any:
    return refused(topic, kwargs.get("partition")) or await _send(self, topic, *args, **kwargs)


async def send_batch(self: AIOKafkaProducer, batch: Any, topic: str, **kwargs: Any) -> Any:
    refusal = refused(topic, kwargs.get("partition"))
    return refusal or await _send_batch(self, batch, topic, **kwargs)


AIOKafkaProducer.send = send  # type: ignore[method-assign]
AIOKafkaProducer.send_batch = send_batch  # type: ignore[method-assign]

if __name__ == "__main__":
    from tools.cli import main

    sys.exit(main(sys.argv[1:]))
