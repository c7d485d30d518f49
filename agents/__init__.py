"""Faust agents: decode, hand to the engine, publish. One module per concern.

:func:`build_app` is the worker's composition root: it makes the app from settings
(:func:`streams.app.create_app`) and registers every module's agents, timers and views on
it. No module here holds an app of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents import (
    alerts,
    control,
    delivery,
    health,
    metric_events,
    probes,
    promotion,
    recovery,
    undecodable,
    usage,
    web,
)
from agents.control import Controls
from agents.delivery import DeliveryWatch
from agents.health import HealthKeeper
from agents.probes import Probes
from agents.recovery import Recovery
from agents.undecodable import Undecodable
from agents.usage import UsageAgent
from agents.web import HealthDocuments
from streams.app import WarmcastApp, create_app
from streams.control_feed import ControlFeed
from streams.settings import WarmcastSettings


@dataclass(frozen=True)
class Parts:
    """What :func:`register` put on an app, by concern."""

    usage: UsageAgent
    health: HealthKeeper
    controls: Controls
    recovery: Recovery
    undecodable: Undecodable
    delivery: DeliveryWatch
    probes: Probes
    web: HealthDocuments


def build_app(settings: WarmcastSettings | None = None) -> WarmcastApp:
    """The worker's app with every agent registered (settings from the environment when
    none are given)."""
    app = create_app(settings)
    register(app)
    return app


def register(app: WarmcastApp) -> Parts:
    """Register every agent, timer and view of the worker on ``app``; returns them."""
    alerts.register(app)
    feed = ControlFeed(app)
    checkpoints = Recovery(app, feed)
    controls = control.register(app, feed, checkpoints)
    watch = delivery.register(app)
    keeper = health.register(app)
    metric_events.register(app)
    recovery.register(app, checkpoints)
    guard = undecodable.register(app, controls)
    promotion.register(app, controls)
    usage_agent = usage.register(app, keeper)
    probing = probes.register(app)  # after every agent: it watches their crashes
    documents = web.register(app, keeper, probing)
    return Parts(usage_agent, keeper, controls, checkpoints, guard, watch, probing, documents)


__all__ = ["Parts", "build_app", "register"]
