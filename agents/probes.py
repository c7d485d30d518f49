"""Probes of a worker: ``/livez`` and ``/readyz``, in constant time, always open.

``/livez``   200 while the worker's event loop answers at all
``/readyz``  200 when the worker is ready: it has joined its group and recovered its
             tables, is not rebalancing, and no agent crash-loops; 503 otherwise, with
             the reasons (a worker whose settings do not hold never starts: they are
             checked before anything else)

Every agent's crashes are counted (``warmcast_agent_crashes_total{agent}``): Faust
restarts an agent whose loop raises, so an agent raising at every message would otherwise
leave a worker that looks alive. ``WARMCAST_AGENT_CRASH_LOOP_CRASHES`` crashes within
``WARMCAST_AGENT_CRASH_LOOP_WINDOW_SECONDS`` make the worker not ready and raise
``agent_crash_loop`` (critical, subject: the agent), resolved once the agent has gone a
whole window without a crash.

Also here: the bearer-token check of the health listing and model views
(:func:`refused`), which the probes never ask for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import Counter, Gauge

from engine.alerting import AlertTransition
from streams.app import app
from streams.security import token_matches

log = logging.getLogger(__name__)

runtime = app.runtime
settings = runtime.settings
ALERT_KIND = "agent_crash_loop"


class ProbeMetrics:
    def __init__(self) -> None:
        r = runtime.metrics.registry
        self.crashes = Counter(
            "warmcast_agent_crashes_total",
            "agent loops that raised (Faust restarts them)",
            ["agent"],
            registry=r,
        )
        self.ready = Gauge("warmcast_ready", "1 while /readyz says ready", registry=r)


metrics = ProbeMetrics()


def readiness(now: float) -> tuple[bool, str, list[str]]:
    """Whether the worker is ready, its state (``ready``, ``starting`` or ``failing``)
    and why not; a few attribute reads, whatever the worker holds."""
    failing = []
    window = settings.agent_crash_loop_window_seconds
    for agent, n in runtime.agent_crashes.looping(now).items():
        failing.append(f"agent {agent} crashed {n} times in {window:g} s")
    starting = []
    if not runtime.started:
        starting.append("starting: joining the consumer group and recovering tables")
    if app.rebalancing:
        starting.append("rebalancing")
    if app.in_recovery:
        starting.append("recovering tables")
    state = "failing" if failing else "starting" if starting else "ready"
    metrics.ready.set(1 if state == "ready" else 0)
    return state == "ready", state, failing + starting


def refused(view: View, request: Request) -> Response | None:
    """The answer to a request without the control token, when one is configured
    (``None``: the request may go on). The comparison takes constant time."""
    token = settings.control_token
    if token is None:
        return None
    if token_matches(request.headers.get("Authorization"), token.get_secret_value()):
        return None
    return view.json(
        {"error": "a valid bearer token is needed (Authorization: Bearer $WARMCAST_CONTROL_TOKEN)"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="warmcast"'},
    )


@app.page("/livez")
class LiveView(View):
    async def get(self, request: Request) -> Response:
        return self.json({"live": True})


@app.page("/readyz")
class ReadyView(View):
    async def get(self, request: Request) -> Response:
        ready, state, reasons = readiness(time.time())
        return self.json(
            {"ready": ready, "state": state, "reasons": reasons}, status=200 if ready else 503
        )


# -- agent crashes -------------------------------------------------------------------


def watch_agents() -> int:
    """Count the crashes of every agent registered on the app (Faust's ``on_error``
    hook of each); returns how many agents are newly watched. Calling it again is safe."""
    watched = 0
    for agent in app.agents.values():
        previous: Any = getattr(agent, "_on_error", None)
        if getattr(previous, "counts_crashes", False):
            continue
        agent._on_error = _crash_counter(previous)
        metrics.crashes.labels(agent=agent.name)
        watched += 1
    return watched


def _crash_counter(previous: Any) -> Any:
    async def on_error(agent: Any, exc: BaseException) -> None:
        await note_crash(agent.name, exc)
        if previous is not None:
            await previous(agent, exc)

    on_error.counts_crashes = True  # type: ignore[attr-defined]
    return on_error


async def note_crash(agent: str, exc: BaseException) -> None:
    """Count a crash of ``agent``; raise ``agent_crash_loop`` at once if it now loops."""
    now = time.time()
    crashes = runtime.agent_crashes
    crashes.note(agent, now)
    metrics.crashes.labels(agent=agent).inc()
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
        await publish(crash_loop_alerts(now))


def crash_loop_alerts(now: float) -> list[AlertTransition]:
    """The ``agent_crash_loop`` transitions as of ``now``, one subject per agent."""
    if ALERT_KIND in settings.disabled_alerts:
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


async def publish(alerts: list[AlertTransition]) -> None:
    from agents.alerts import publish_alert

    for alert in alerts:
        try:
            await publish_alert(alert)
        except Exception:  # the alert stays firing on /health; the timer publishes no repeat
            log.exception("could not publish %s on %s", alert.kind, alert.subject)


@app.timer(interval=settings.alert_check_seconds)
async def check_crash_loops() -> None:
    now = time.time()
    readiness(now)  # keeps warmcast_ready current between probes
    await publish(crash_loop_alerts(now))


@app.task
async def watch_late_agents() -> None:
    """Agents registered after this module was imported are watched too."""
    watch_agents()


watch_agents()
