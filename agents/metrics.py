"""Metrics agent: metric events in, to the policy (load times) and the anomaly learners.

A metric message is acknowledged once its dead letters, if any, are delivered
(:mod:`streams.holding`); a message the worker itself fails on is dead-lettered as
``processing_error``, counted as a crash of the agent (:mod:`agents.probes`), and the
next goes on.
"""

from __future__ import annotations

import logging
import time

from faust.types import EventT, StreamT

from agents.deadletter import decode_or_dead_letter, failed
from schemas.metric import MetricEvent
from streams.app import app, metrics_topic
from streams.sending import Delivery

log = logging.getLogger(__name__)
AGENT = "agents.metrics.metrics_agent"  # the agent's name, as Faust gives it


@app.agent(metrics_topic)
async def metrics_agent(stream: StreamT) -> None:
    stream.enable_acks = False  # each message is acknowledged by the input gate
    async for event in stream.events():
        await process_metrics(event)


async def process_metrics(event: EventT) -> None:
    deliveries: list[Delivery] = []
    try:
        now = time.time()
        events = await decode_or_dead_letter(event, MetricEvent, now, deliveries, AGENT)
        try:
            app.runtime.apply_metrics(event.message.partition, events, now)
        except Exception as exc:
            log.exception("could not apply the metric events of %s", event.message.tp)
            deliveries += await failed(AGENT, exc, [event])
    finally:
        app.gate.settle([event], deliveries)
