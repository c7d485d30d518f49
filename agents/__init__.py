"""Faust agents: decode, hand to the engine, publish. One module per concern.

:func:`build_app` is the worker's composition root: it makes the app from settings
(:func:`streams.app.create_app`) and registers every module's agents, timers and views on
it. No module here holds an app of its own.
"""

from __future__ import annotations

from agents import (
    alerts,
    control,
    delivery,
    health,
    metrics,
    probes,
    recovery,
    undecodable,
    usage,
    web,
)
from agents.control import ControlFeed
from agents.recovery import Recovery
from streams.app import WarmcastApp, create_app
from streams.settings import WarmcastSettings


def build_app(settings: WarmcastSettings | None = None) -> WarmcastApp:
    """The worker's app with every agent registered (settings from the environment when
    none are given)."""
    app = create_app(settings)
    register(app)
    return app


def register(app: WarmcastApp) -> None:
    """Register every agent, timer and view of the worker on ``app``."""
    alerts.register(app)
    feed = ControlFeed(app)
    checkpoints = Recovery(app, feed)
    controls = control.register(app, feed, checkpoints)
    delivery.register(app)
    keeper = health.register(app)
    metrics.register(app)
    recovery.register(app, checkpoints)
    undecodable.register(app, controls)
    usage.register(app, keeper)
    web.register(app, keeper, probes.register(app))  # probes last: they watch every agent


__all__ = ["build_app", "register"]
