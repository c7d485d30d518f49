"""The usage agent called as the worker calls it: commands out, bad input dead-lettered,
foreign events forwarded to their owner (the producer records; no broker)."""

from __future__ import annotations

import asyncio
import time

import orjson

from agents.usage import ORIGIN, origins_of
from engine.alerting import AlertTracker
from schemas.alert import Alert
from schemas.deadletter import DeadLetterHeaders
from schemas.warmup import WarmupCommand
from streams.partitioning import partition_for
from tests.agents.recording import event, recording_worker, settled

USAGE = "warmcast.usage.v1"


def owned_by(partition: int, n: int = 4) -> str:
    return next(f"m{i}" for i in range(1000) if partition_for(f"m{i}", n) == partition)


def test_events_of_an_owned_model_lead_to_a_warm_command() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    app, producer = w.app, w.producer
    model = owned_by(1)
    now = time.time()
    body = orjson.dumps([{"model_id": model, "ts": now, "count": 2}])

    async def go() -> None:
        await w.parts.usage.process([event(app, USAGE, 1, 0, body, key=model.encode())])
        await settled(app)

    asyncio.run(go())
    commands = [orjson.loads(r.value or b"") for r in producer.on("warmcast.warmup.v1")]
    assert [(c["model_id"], c["action"]) for c in commands] == [(model, "warm")]
    assert app.runtime.positions["usage", 1] == 0
    assert app.health_store.decoded(model).requests_total == 2  # type: ignore[union-attr]


def test_a_bad_message_is_dead_lettered_with_why() -> None:
    w = recording_worker(partitions=4)
    app, producer = w.app, w.producer

    async def go() -> None:
        await w.parts.usage.process([event(app, USAGE, 0, 7, b"{not json")])

    asyncio.run(go())
    [letter] = producer.on(f"{USAGE}.dlq")
    assert letter.value == b"{not json"
    assert letter.headers["warmcast.error-reason"] == b"malformed_json"
    assert letter.headers["warmcast.original-offset"] == b"7"
    headers = DeadLetterHeaders.from_headers(letter.headers.items())  # the contract's form
    assert (headers.original_topic, headers.original_partition) == (USAGE, "0")
    assert producer.on("warmcast.warmup.v1") == []


def test_an_event_of_another_partition_is_forwarded_to_its_owner() -> None:
    w = recording_worker(partitions=4)
    app, producer = w.app, w.producer
    model = owned_by(3)
    body = orjson.dumps([{"model_id": model, "ts": time.time()}])

    async def go() -> None:
        await w.parts.usage.process([event(app, USAGE, 0, 5, body)])

    asyncio.run(go())
    [forwarded] = [r for r in producer.on(USAGE) if r.partition == 3]
    assert orjson.loads(forwarded.value or b"")[0]["model_id"] == model
    assert origins_of(list(forwarded.headers.items()), 1) == [(0, 5, 0)]
    assert ORIGIN in forwarded.headers
    assert producer.on("warmcast.warmup.v1") == []  # the owner decides, not this partition


def test_commands_and_alerts_leave_in_the_contracts_form() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    model = owned_by(2)
    now = time.time()
    body = orjson.dumps([{"model_id": model, "ts": now}])
    [raised] = AlertTracker().check(
        "stale_data", USAGE, True, ts=now, value=float("inf"), threshold=300.0
    )

    async def go() -> None:
        await w.parts.usage.process([event(w.app, USAGE, 2, 0, body)])
        await w.app.publish.alert(raised)
        await settled(w.app)

    asyncio.run(go())
    [command] = w.producer.on("warmcast.warmup.v1")
    assert WarmupCommand.model_validate_json(command.value or b"").model_id == model
    [alert] = w.producer.on("warmcast.alerts.v1")
    published = Alert.model_validate_json(alert.value or b"")
    assert published.kind == "stale_data" and published.value is None  # no infinity
    assert alert.key == published.fingerprint.encode()


def test_a_batch_of_single_event_messages_is_applied_forwarded_and_counted() -> None:
    """Single-event messages (no envelope, no headers), owned and foreign, in one batch:
    the owned ones decide, the foreign one is forwarded with where it was read, a bad one
    is dead-lettered, and every message is counted once, consumed and timed."""
    w = recording_worker(partitions=4, policy="fixed:10")
    app, producer = w.app, w.producer
    mine, theirs = owned_by(1), owned_by(2)
    now = time.time()
    bodies = [
        orjson.dumps({"model_id": mine, "ts": now}),
        orjson.dumps({"model_id": theirs, "ts": now}),
        orjson.dumps({"model_id": "", "ts": now}),  # no model id: a schema violation
        orjson.dumps({"model_id": mine, "ts": now + 1, "count": 3}),
    ]
    batch = [event(app, USAGE, 1, 10 + i, body) for i, body in enumerate(bodies)]

    async def go() -> None:
        await w.parts.usage.process(batch)
        await settled(app)

    asyncio.run(go())
    commands = [orjson.loads(r.value or b"") for r in producer.on("warmcast.warmup.v1")]
    assert [(c["model_id"], c["action"]) for c in commands] == [(mine, "warm")]
    assert app.health_store.decoded(mine).requests_total == 4  # type: ignore[union-attr]
    [forwarded] = [r for r in producer.on(USAGE) if r.partition == 2]
    assert [e["model_id"] for e in orjson.loads(forwarded.value or b"")] == [theirs]
    assert origins_of(list(forwarded.headers.items()), 1) == [(1, 11, 0)]
    [letter] = producer.on(f"{USAGE}.dlq")
    assert letter.headers["warmcast.error-reason"] == b"schema_violation"
    assert letter.headers["warmcast.original-offset"] == b"12"
    metrics = app.runtime.metrics
    assert metrics.consumed(USAGE)._value.get() == 4
    timed = metrics.usage_processing
    assert sum(b.get() for b in timed._buckets) == 4
    assert timed._sum.get() > 0
