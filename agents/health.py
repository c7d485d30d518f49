"""Health snapshots: the rolling health of changed models, published periodically.

Snapshots go to the compacted health topic keyed by ``model_id``, so the topic holds the
latest health of every served model. Only models that saw events since the previous
round are published.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import orjson
from faust.transport.producer import ProducerBuffer

from engine.health import ModelHealth
from streams.app import app, health_store, health_topic
from streams.healthstore import flush_in_steps
from streams.partitioning import partition_for


def snapshot(model_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A model's health as of the newest event time of its partition."""
    if not stored:
        return None
    runtime = app.runtime
    health = ModelHealth.from_dict(stored)
    partition = partition_for(model_id, runtime.usage_partitions)
    now = runtime.partition_event_time.get(partition, health.last_seen)
    return health.snapshot(now, runtime.settings.health_window_seconds)


@app.timer(interval=app.runtime.settings.health_flush_seconds)
async def write_health() -> None:
    """Write changed rolling health to its table (and so to the changelog)."""
    await flush_in_steps(health_store, sent=changelog_sent)


async def changelog_sent(low: int = 10, timeout: float = 5.0) -> None:
    """Wait until at most ``low`` table writes wait in Faust's producer buffer."""
    buffer = cast(ProducerBuffer, app.producer.buffer)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while buffer.size > low:
                buffer.message_sent.clear()
                await buffer.message_sent.wait()


@app.timer(interval=app.runtime.settings.health_snapshot_seconds)
async def publish_snapshots() -> None:
    runtime = app.runtime
    due, runtime.dirty = runtime.dirty, set()
    for model_id in sorted(due):
        document = snapshot(model_id, health_store.get(model_id))
        if document is None:
            continue
        await health_topic.send(key=model_id.encode(), value=orjson.dumps(document))
        runtime.metrics.health_snapshots.inc()
