"""Metric events agent: metric events in, to the policy (load times) and the anomaly learners.

A metric message is acknowledged once its dead letters, if any, are delivered
(:mod:`streams.holding`); a message the worker itself fails on is dead-lettered as
``processing_error``, counted as a crash of the agent (:mod:`streams.crashes`), and the
next goes on.
"""

from __future__ import annotations

import logging
import time

from faust.types import EventT, StreamT

from schemas.metric import MetricEvent
from streams.app import WarmcastApp
from streams.sending import Delivery

log = logging.getLogger(__name__)
AGENT = "agents.metric_events.metric_events_agent"  # the agent's name


def register(app: WarmcastApp) -> None:
    """Register the metric events agent on ``app``."""

    @app.agent(app.worker_topics.metrics, name=AGENT)
    async def metric_events_agent(stream: StreamT) -> None:
        stream.enable_acks = False  # each message is acknowledged by the input gate
        async for event in stream.events():
            await process_metrics(app, event)


async def process_metrics(app: WarmcastApp, event: EventT) -> None:
    """One metric message: decoded (bad events dead-lettered), fed to its partition."""
    deliveries: list[Delivery] = []
    letters = app.dead_letters
    try:
        now = time.time()
        events = await letters.decode(event, MetricEvent, now, deliveries, AGENT)
        try:
            app.runtime.apply_metrics(event.message.partition, events, now)
        except Exception as exc:
            log.exception("could not apply the metric events of %s", event.message.tp)
            deliveries += await letters.failed(AGENT, exc, [event])
    finally:
        app.gate.settle([event], deliveries)
