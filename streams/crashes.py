"""Crashes of the worker's agents, counted; a crash loop raised as an alert.

Faust restarts an agent whose loop raises, so an agent raising at every message would
otherwise leave a worker that looks alive. Every crash counts in
``warmcast_agent_crashes_total{agent}``; ``WARMCAST_AGENT_CRASH_LOOP_CRASHES`` crashes
within ``WARMCAST_AGENT_CRASH_LOOP_WINDOW_SECONDS`` make the worker not ready and raise
``agent_crash_loop`` (critical, subject: the agent), resolved once the agent has gone a
whole window without a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

from engine.alerting import AlertTransition
from streams.publishers import Publishers
from streams.runtime import Runtime

log = logging.getLogger(__name__)

ALERT_KIND = "agent_crash_loop"


class AgentCrashes:
    """Counts the crashes of the worker's agents and raises their crash loops."""

    def __init__(self, runtime: Runtime, publish: Publishers) -> None:
        self.runtime = runtime
        self.publish = publish
        self.counter = Counter(
            "warmcast_agent_crashes_total",
            "agent loops that raised (Faust restarts them)",
            ["agent"],
            registry=runtime.metrics.registry,
        )

    def watch(self, agents: Iterable[Any]) -> int:
        """Count the crashes of every agent given (Faust's ``on_error`` hook of each);
        returns how many agents are newly watched. Watching one again is a no-op."""
        watched = 0
        for agent in agents:
            previous: Any = getattr(agent, "_on_error", None)
            if getattr(previous, "counts_crashes", False):
                continue
            agent._on_error = self._counter(previous)
            self.counter.labels(agent=agent.name)
            watched += 1
        return watched

    def _counter(self, previous: Any) -> Any:
        async def on_error(agent: Any, exc: BaseException) -> None:
            await self.note(agent.name, exc)
            if previous is not None:
                await previous(agent, exc)

        on_error.counts_crashes = True  # type: ignore[attr-defined]
        return on_error

    async def note(self, agent: str, exc: BaseException) -> None:
        """Count a crash of ``agent``; raise ``agent_crash_loop`` at once if it now loops."""
        now = time.time()
        crashes = self.runtime.agent_crashes
        crashes.note(agent, now)
        self.counter.labels(agent=agent).inc()
        recent = crashes.recent(now).get(agent, 0)
        log.error(
            "agent %s crashed (%d in %g s): %s: %s",
            agent,
            recent,
            crashes.window,
            type(exc).__name__,
            exc,
        )
        if recent >= crashes.threshold:
            await self.publish.alerts(self.loop_alerts(now))

    def loop_alerts(self, now: float) -> list[AlertTransition]:
        """The ``agent_crash_loop`` transitions as of ``now``, one subject per agent."""
        runtime = self.runtime
        if ALERT_KIND in runtime.settings.disabled_alerts:
            return []
        crashes = runtime.agent_crashes
        recent = crashes.recent(now)
        out: list[AlertTransition] = []
        for agent in crashes.total:
            n = recent.get(agent, 0)
            out += runtime.alerts.check(
                ALERT_KIND,
                agent,
                n >= crashes.threshold,
                ts=now,
                value=n,
                threshold=crashes.threshold,
                severity="critical",
                summary=f"agent {agent} crashed {n} times in {crashes.window:g} s",
                clear=n == 0,
                for_seconds=0,
            )
        firing = runtime.alerts.firing_kinds().get(ALERT_KIND, 0)
        runtime.metrics.alerts_firing.labels(kind=ALERT_KIND).set(firing)
        return out
