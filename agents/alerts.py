"""Alerts and idle partitions: the health checks on a timer, their transitions published;
minutes closed and held events taken on the wall clock when the input goes quiet."""

from __future__ import annotations

import time

from streams.app import WarmcastApp


def register(app: WarmcastApp) -> None:
    """Register the alert and idle-partition timers on ``app``."""
    runtime = app.runtime

    @app.timer(interval=runtime.settings.alert_check_seconds)
    async def check_alerts() -> None:
        for alert in runtime.check_alerts(time.time()):
            await app.publish.alert(alert)

    @app.timer(interval=15.0)
    async def advance_idle_partitions() -> None:
        await advance_idle(app, time.time())

    @app.timer(interval=1.0)
    async def confirm_held_events() -> None:
        await confirm_held(app, time.time())


async def advance_idle(app: WarmcastApp, now: float) -> None:
    """Live mode: close the minutes of partitions that have gone quiet on the wall clock.

    Only partitions whose event time is near the wall clock are advanced, so a replay of
    old history moves on its own event time alone.
    """
    runtime = app.runtime
    lag = runtime.settings.idle_advance_seconds
    await confirm_held(app, now)
    for step in list(runtime.steps.values()):
        watermark = step.engine.watermark
        if watermark is None or not (now - 6 * 3600 < watermark < now - lag - 60):
            continue
        commands = step.advance(now - lag)
        runtime.note_commands(commands, now)
        await app.publish.commands(commands)


async def confirm_held(app: WarmcastApp, now: float) -> None:
    """An event held because it was far ahead of its partition's event time, with no event
    after it yet, is taken at its own time once the wall clock reaches it: a replay's event
    after a gap waits a second at most, an event from the future waits for the next event
    (which may show it to be an outlier) or for its time to come."""
    runtime = app.runtime
    if all(engine.held_time is None for engine in runtime.engines.values()):
        return
    store = app.health_store
    commands, touched = runtime.confirm_held(store.decoded, now)
    store.mark(touched)
    await app.publish.commands(commands)
