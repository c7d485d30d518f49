"""The metric events agent called as the worker calls it: sizes and load times reach the
partition's engine (and its memory budget), bad input is dead-lettered (no broker)."""

from __future__ import annotations

import asyncio
import time

import orjson

from agents.metric_events import process_metrics
from schemas.deadletter import DeadLetterHeaders
from tests.agents.recording import event, recording_worker, settled

METRICS = "warmcast.metrics.v1"


def test_a_size_reaches_the_budget_of_its_partition() -> None:
    w = recording_worker(partitions=2, policy="lru", capacity_bytes=8 * 2**30)
    app = w.app
    now = time.time()
    body = orjson.dumps(
        [
            {"model_id": "m", "ts": now, "name": "memory_mb", "value": 3072.0},
            {"model_id": "m", "ts": now, "name": "load_time_seconds", "value": 12.5},
        ]
    )

    async def go() -> None:
        await process_metrics(app, event(app, METRICS, 1, 4, body, key=b"m"))
        await settled(app)

    asyncio.run(go())
    budget = app.runtime.engines[1].budget
    assert budget is not None and budget.capacity == 4 * 2**30  # half of the pool's
    assert budget.size_of("m") == 3 * 2**30 and budget.sized("m")
    assert w.producer.on(f"{METRICS}.dlq") == []


def test_a_bad_metric_event_is_dead_lettered_with_why() -> None:
    w = recording_worker(partitions=2)
    app = w.app
    body = orjson.dumps([{"model_id": "m", "ts": time.time(), "name": "memory_mb"}])

    async def go() -> None:
        await process_metrics(app, event(app, METRICS, 0, 9, body))
        await settled(app)

    asyncio.run(go())
    [letter] = w.producer.on(f"{METRICS}.dlq")
    assert letter.headers["warmcast.original-offset"] == b"9"
    assert letter.headers["warmcast.error-reason"] == b"schema_violation"
    assert b"value" in letter.headers["warmcast.error-message"]
    headers = DeadLetterHeaders.from_headers(letter.headers.items())  # the contract's form
    assert (headers.original_topic, headers.error_class) == (METRICS, "ValidationError")
