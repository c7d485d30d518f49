"""Usage agent: usage events in, engine fed, warmup commands out, health table kept."""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
from faust.types import EventT, StreamT

from agents.deadletter import dead_letter_all
from engine.health import ModelHealth
from engine.lease import Command
from schemas.envelope import decode
from schemas.usage import UsageEvent
from streams.app import app, model_health, usage_topic, warmup_topic
from streams.partitioning import partition_for

FORWARDED = "warmcast.forwarded"


@app.agent(usage_topic)
async def usage_agent(stream: StreamT) -> None:
    async for event in stream.events():
        await process_usage(event)


async def process_usage(event: EventT) -> None:
    runtime = app.runtime
    settings = runtime.settings
    metrics = runtime.metrics
    message = event.message
    metrics.messages.labels(topic=message.topic).inc()
    with metrics.processing.labels(topic="usage").time():
        decoded = decode(
            message.value,
            UsageEvent,
            max_bytes=settings.max_message_bytes,
            max_events=settings.max_envelope_events,
        )
        if decoded.errors:
            await dead_letter_all(event, decoded.errors)
        if not decoded.events:
            return
        partition = message.partition
        n_partitions = runtime.usage_partitions
        mine: list[UsageEvent] = []
        foreign: dict[int, list[UsageEvent]] = defaultdict(list)
        for ev in decoded.events:
            owner = partition_for(ev.model_id, n_partitions)
            (mine if owner == partition else foreign[owner]).append(ev)
        for owner, events in foreign.items():
            await forward(owner, events)
        if mine:
            await apply_usage(partition, mine)


async def forward(partition: int, events: list[UsageEvent]) -> None:
    """Send events to the partition that owns their served models (unkeyed producers)."""
    body = orjson.dumps([e.model_dump(exclude_none=True) for e in events])
    await usage_topic.send(
        key=events[0].model_id.encode(),
        value=body,
        partition=partition,
        headers={FORWARDED: b"1"},
    )


async def apply_usage(partition: int, events: list[UsageEvent]) -> None:
    """Events of models this partition owns: engine, rolling health, commands out."""
    commands, touched = app.runtime.apply_usage(partition, events, load_health, time.time())
    for model_id, health in touched.items():
        model_health[model_id] = health.to_dict()  # one table write per model and message
    for command in commands:
        await publish_command(command)


def load_health(model_id: str) -> ModelHealth | None:
    stored = model_health.get(model_id)
    return ModelHealth.from_dict(stored) if stored else None


async def publish_command(command: Command) -> None:
    metrics = app.runtime.metrics
    await warmup_topic.send(
        key=command.model_id.encode(),
        value=orjson.dumps(command.to_dict()),
        timestamp=command.issued_at,
    )
    (metrics.warm_commands if command.action == "warm" else metrics.release_commands).inc()
