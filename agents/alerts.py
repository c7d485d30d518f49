"""Alerts: health checks on a timer, transitions published firing and resolved."""

from __future__ import annotations

import asyncio
import math
import time

import orjson

from engine.alerting import AlertTransition
from streams.app import alerts_topic, app, health_store


@app.timer(interval=app.runtime.settings.alert_check_seconds)
async def check_alerts() -> None:
    for alert in app.runtime.check_alerts(time.time()):
        await publish_alert(alert)


async def publish_alert(alert: AlertTransition) -> None:
    """Publish an alert transition (handed to the producer; tried again until it is
    delivered)."""
    body = {
        "fingerprint": alert.fingerprint,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "subject": alert.subject,
        "summary": alert.summary,
        "value": finite(alert.value),
        "threshold": finite(alert.threshold),
        "ts": alert.ts,
    }
    await app.sender.send(
        alerts_topic.get_topic_name(), orjson.dumps(body), key=alert.fingerprint.encode()
    )
    app.runtime.metrics.alerts.labels(kind=alert.kind, state=alert.state).inc()


_announcing: set[asyncio.Task[None]] = set()


def announce(alerts: list[AlertTransition]) -> None:
    """Publish transitions from code that cannot wait (a callback): in a task of its own."""
    for alert in alerts:
        task = asyncio.ensure_future(publish_alert(alert))
        _announcing.add(task)
        task.add_done_callback(_announcing.discard)


def finite(value: float | None) -> float | None:
    """The contract has no NaN or infinity: such a value is published as unknown."""
    return value if value is None or math.isfinite(value) else None


@app.timer(interval=15.0)
async def advance_idle_partitions() -> None:
    """Live mode: close the minutes of partitions that have gone quiet on the wall clock.

    Only partitions whose event time is near the wall clock are advanced, so a replay of
    old history moves on its own event time alone.
    """
    runtime = app.runtime
    now = time.time()
    lag = runtime.settings.idle_advance_seconds
    from agents.usage import publish_commands

    await confirm_held_events()
    for engine in list(runtime.engines.values()):
        watermark = engine.watermark
        if watermark is None or not (now - 6 * 3600 < watermark < now - lag - 60):
            continue
        commands = engine.advance(now - lag)
        runtime.note_commands(commands, now)
        if commands:
            await publish_commands(commands)


@app.timer(interval=1.0)
async def confirm_held_events() -> None:
    """An event held because it was far ahead of its partition's event time, with no event
    after it yet, is taken at its own time once the wall clock reaches it: a replay's event
    after a gap waits a second at most, an event from the future waits for the next event
    (which may show it to be an outlier) or for its time to come."""
    runtime = app.runtime
    if all(engine.held_time is None for engine in runtime.engines.values()):
        return
    from agents.usage import publish_commands

    commands, touched = runtime.confirm_held(health_store.decoded, time.time())
    health_store.mark(touched)
    if commands:
        await publish_commands(commands)
