"""Usage agent: usage events in, engine fed, warmup commands out, health table kept."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

import orjson
from faust.types import EventT, StreamT

from agents.deadletter import decode_or_dead_letter
from agents.health import EARLY_FLUSH_MODELS, write_through_changelog
from engine.lease import Command
from schemas.usage import UsageEvent
from streams.app import app, health_store, usage_topic, warmup_topic
from streams.batching import behind, take_batches
from streams.emit import CommandEmitter
from streams.partitioning import partition_for

FORWARDED = "warmcast.forwarded"


@app.agent(usage_topic)
async def usage_agent(stream: StreamT) -> None:
    """Usage messages in batches of at most ``usage_batch_messages`` (or
    ``usage_batch_bytes``): the per-message work that is not per event is done once. A
    batch waits at most ``usage_batch_seconds`` to fill up, or
    ``usage_catchup_batch_seconds`` while the worker is behind."""
    s = app.runtime.settings
    most = s.usage_batch_messages
    last: list[EventT] = []

    def wait() -> float:
        if last and behind(app.consumer, last[-1], most):
            return s.usage_catchup_batch_seconds
        return s.usage_batch_seconds

    sizes = app.runtime.metrics.usage_batches
    # Closed when the loop raises: a restarted agent reads the stream alone.
    async with contextlib.aclosing(
        take_batches(stream, most, s.usage_batch_bytes, wait)
    ) as batches:
        async for batch in batches:
            sizes.observe(len(batch))
            await process_usage(batch)
            last = batch


async def process_usage(batch: Sequence[EventT]) -> None:
    """Messages taken together: each is decoded and checked on its own (bad ones are
    dead-lettered), then the events of each partition go to its engine at once."""
    runtime = app.runtime
    metrics = runtime.metrics
    started = time.perf_counter()
    try:
        now = time.time()
        n_partitions = runtime.usage_partitions
        mine: dict[int, list[UsageEvent]] = {}
        last_offset: dict[int, int] = {}
        foreign: dict[int, list[UsageEvent]] = defaultdict(list)
        read = runtime.read_offsets
        for event in batch:
            message = event.message
            partition = message.partition
            read[partition] = message.offset
            good = await decode_or_dead_letter(event, UsageEvent, now)
            if not good:
                continue
            queue = mine.get(partition)
            if queue is None:
                queue = mine[partition] = []
            kept = len(queue)
            for ev in good:
                owner = partition_for(ev.model_id, n_partitions)
                (queue if owner == partition else foreign[owner]).append(ev)
            if len(queue) - kept < len(good):  # counted by the partition they arrived on
                runtime.note_forwarded(partition, len(good) - len(queue) + kept, now)
            last_offset[partition] = message.offset
        for owner, theirs in foreign.items():
            await forward(owner, theirs)
        for partition, events in mine.items():
            if events:
                await apply_usage(partition, events, last_offset[partition])
    finally:  # each message is counted, with its share of the batch's time
        share = (time.perf_counter() - started) / max(len(batch), 1)
        observe = metrics.usage_processing.observe
        for _ in batch:
            observe(share)


async def forward(partition: int, events: list[UsageEvent]) -> None:
    """Send events to the partition that owns their served models (unkeyed producers)."""
    body = orjson.dumps([e.model_dump(exclude_none=True) for e in events])
    await usage_topic.send(
        key=events[0].model_id.encode(),
        value=body,
        partition=partition,
        headers={FORWARDED: b"1"},
    )


async def apply_usage(partition: int, events: list[UsageEvent], offset: int) -> None:
    """Events of models this partition owns, up to ``offset`` of its input: engine,
    rolling health, commands out."""
    runtime = app.runtime
    commands, touched = runtime.apply_usage(
        partition, events, health_store.decoded, time.time(), offset=offset
    )
    health_store.mark(touched)
    over = len(health_store.pending) - runtime.settings.health_pending_max
    if over > 0:  # many new models: those waiting longest are written now, not on the timer
        write_through_changelog()
        health_store.flush_oldest(max(over, EARLY_FLUSH_MODELS))
    gone = runtime.engines[partition].drain_evicted()  # the engine apply_usage just fed
    if gone:  # health follows the engine: a flood of new model ids stays bounded
        health_store.forget(gone)
        runtime.forget_health(partition, gone)
    if commands:
        await publish_commands(commands)


def emitter() -> CommandEmitter:
    """The worker's command emitter (made at first use)."""
    runtime = app.runtime
    failures = runtime.metrics.command_failures
    made = app.emitter(
        warmup_topic.get_topic_name(),
        runtime.warmup_partitions,
        CommandEmitter,
        on_failure=lambda n, exc: failures.inc(n),
        linger_seconds=runtime.settings.producer_linger_ms / 1000,
    )
    return cast(CommandEmitter, made)


async def publish_commands(commands: list[Command]) -> None:
    """Queue commands for delivery, in record batches per warmup partition; wait for the
    queue to empty when the broker falls behind."""
    queue = emitter()
    queue.publish(commands)
    if queue.queued > app.runtime.settings.command_queue_max:
        await queue.drain()
    metrics = app.runtime.metrics
    warm = sum(1 for c in commands if c.action == "warm")
    if warm:
        metrics.warm_commands.inc(warm)
    if len(commands) > warm:
        metrics.release_commands.inc(len(commands) - warm)
