"""Metrics agent: metric events in, to the policy (load times) and the anomaly learners."""

from __future__ import annotations

import time

from faust.types import EventT, StreamT

from agents.deadletter import dead_letter_all
from schemas.envelope import decode, reject_skewed
from schemas.metric import MetricEvent
from streams.app import app, metrics_topic


@app.agent(metrics_topic)
async def metrics_agent(stream: StreamT) -> None:
    async for event in stream.events():
        await process_metrics(event)


async def process_metrics(event: EventT) -> None:
    runtime = app.runtime
    settings = runtime.settings
    message = event.message
    runtime.metrics.consumed(message.topic).inc()
    decoded = decode(
        message.value,
        MetricEvent,
        max_bytes=settings.max_message_bytes,
        max_events=settings.max_envelope_events,
    )
    decoded = reject_skewed(
        decoded, time.time(), settings.max_future_skew_seconds, settings.max_past_skew_seconds
    )
    if decoded.errors:
        await dead_letter_all(event, decoded.errors)
    runtime.apply_metrics(message.partition, decoded.events, time.time())
