"""Probes of a worker: ``/livez`` and ``/readyz``, in constant time, always open.

``/livez``   200 while the worker's event loop answers at all
``/readyz``  200 when the worker is ready: it has joined its group and recovered its
             tables, is not rebalancing, and no agent crash-loops; 503 otherwise, with
             the reasons (a worker whose settings do not hold never starts: they are
             checked before anything else)

Every agent's crashes are counted and a crash loop makes the worker not ready
(:mod:`streams.crashes`). Also here: the bearer-token check of the health listing and
model views (:meth:`Probes.refused`), which the probes never ask for.
"""

from __future__ import annotations

import time

from faust.web import Request, Response, View
from prometheus_client import Gauge

from streams.app import WarmcastApp
from streams.security import token_matches


class Probes:
    """Readiness and the health views' token check of one worker."""

    def __init__(self, app: WarmcastApp) -> None:
        self.app = app
        self.ready = Gauge(
            "warmcast_ready", "1 while /readyz says ready", registry=app.runtime.metrics.registry
        )

    def readiness(self, now: float) -> tuple[bool, str, list[str]]:
        """Whether the worker is ready, its state (``ready``, ``starting`` or ``failing``)
        and why not; a few attribute reads, whatever the worker holds."""
        app = self.app
        runtime = app.runtime
        failing = []
        window = runtime.settings.agent_crash_loop_window_seconds
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
        self.ready.set(1 if state == "ready" else 0)
        return state == "ready", state, failing + starting

    def refused(self, view: View, request: Request) -> Response | None:
        """The answer to a request without the control token, when one is configured
        (``None``: the request may go on). The comparison takes constant time."""
        token = self.app.runtime.settings.control_token
        if token is None:
            return None
        if token_matches(request.headers.get("Authorization"), token.get_secret_value()):
            return None
        return view.json(
            {
                "error": "a valid bearer token is needed "
                "(Authorization: Bearer $WARMCAST_CONTROL_TOKEN)"
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="warmcast"'},
        )


def register(app: WarmcastApp) -> Probes:
    """Register the probes on ``app`` and count the crashes of every agent registered
    (call it last: agents registered later are watched once the worker starts)."""
    probes = Probes(app)
    crashes = app.crashes

    @app.page("/livez")
    class LiveView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"live": True})

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            ready, state, reasons = probes.readiness(time.time())
            return self.json(
                {"ready": ready, "state": state, "reasons": reasons}, status=200 if ready else 503
            )

    @app.timer(interval=app.runtime.settings.alert_check_seconds)
    async def check_crash_loops() -> None:
        now = time.time()
        probes.readiness(now)  # keeps warmcast_ready current between probes
        await app.publish.alerts(crashes.loop_alerts(now))

    @app.task
    async def watch_late_agents() -> None:
        """Agents registered after the probes are watched too."""
        crashes.watch(app.agents.values())

    crashes.watch(app.agents.values())
    return probes
