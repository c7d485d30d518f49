"""Metrics agent: metric events in, to the policy (load times) and the anomaly learners."""

from __future__ import annotations

import time

from faust.types import EventT, StreamT

from agents.deadletter import decode_or_dead_letter
from schemas.metric import MetricEvent
from streams.app import app, metrics_topic


@app.agent(metrics_topic)
async def metrics_agent(stream: StreamT) -> None:
    async for event in stream.events():
        await process_metrics(event)


async def process_metrics(event: EventT) -> None:
    now = time.time()
    events = await decode_or_dead_letter(event, MetricEvent, now)
    app.runtime.apply_metrics(event.message.partition, events, now)
