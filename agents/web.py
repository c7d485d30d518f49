"""Web views: the status page, ``/health`` and its parts, and ``/metrics`` (Prometheus).

``/health``               the worker: readiness, score, checks, alerts, its models
``/health/components``    the seven components under the running policy
``/health/models/{id}``   one served model, answered by the worker that owns it
``/policies``             the active policy and the shadow candidates, scored side by side
``/``                     a status page that refreshes itself from the above

The probes (``/livez``, ``/readyz``) are in :mod:`agents.probes`. ``/health`` lists at most
``WARMCAST_HEALTH_LIST_MAX`` served models, taken from rankings kept as the models change
(:class:`streams.healthstore.HealthRankings`): what a request costs is what it lists, and
the reply is built a few models at a time, letting the agents run in between. With
``WARMCAST_CONTROL_TOKEN`` set, ``/health`` and ``/health/models/{id}`` want it as a bearer
token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from agents.health import HealthKeeper
from agents.probes import Probes
from agents.status_page import STATUS_PAGE
from engine.alerting import AlertTransition
from engine.capabilities import PredictsLoadTime
from engine.healthscore import CheckResult
from streams.app import WarmcastApp
from streams.healthstore import RANKED
from streams.partitioning import partition_for
from streams.publishers import alert_record

#: Prometheus text format 0.0.4 (aiohttp sets the charset itself).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"

#: What ``/health?sort=`` may order models by.
SORT_KEYS = RANKED
#: Models of a listing summarised between two turns of the event loop (about 50 us each).
LIST_STEP_MODELS = 20


def alert_document(alert: AlertTransition, maintenance: str | None = None) -> dict[str, Any]:
    """An alert as ``/health`` lists it: its record on the alerts topic (in the maintenance
    window of id ``maintenance``, if given), with the time it fired as ``since`` while it
    fires."""
    document = alert_record(alert, maintenance)
    document["since" if alert.state == "firing" else "ts"] = document.pop("ts")
    return document


def model_summary(health_doc: dict[str, Any]) -> dict[str, Any]:
    """A listed model: totals and rates, its rolling windows and warmups."""
    return {
        "model_id": health_doc["model_id"],
        "requests_total": health_doc["requests_total"],
        "cold_starts_total": health_doc["cold_starts_total"],
        "errors_total": health_doc["errors_total"],
        "request_rate": health_doc["request_rate"],
        "cold_start_rate": health_doc["cold_start_rate"],
        "latency_mean": health_doc["latency_mean"],
        "last_seen": health_doc["last_seen"],
        "windows": health_doc["windows"],
        "warmups": {k: health_doc[f"warmups_{k}_total"] for k in ("issued", "used", "wasted")},
    }


def check_document(check: CheckResult) -> dict[str, Any]:
    return {
        "name": check.name,
        "status": check.status,
        "value": check.value,
        "threshold": check.threshold,
        "severity": check.severity,
        "summary": check.summary,
    }


def listing_query(request: Request, most: int) -> tuple[str, int, int] | str:
    """``sort``, ``limit`` and ``offset`` of a listing (``limit`` cut to the ``most`` a
    listing may hold), or what is wrong with them."""
    query = request.query
    sort = query.get("sort", "requests_total")
    limit, offset = query.get("limit", "100"), query.get("offset", "0")
    if sort not in SORT_KEYS:
        return f"sort by one of {', '.join(SORT_KEYS)}"
    if not limit.isdigit() or not offset.isdigit():
        return "limit and offset are whole numbers of models"
    if int(offset) >= most:
        return f"a listing holds the first {most} models (WARMCAST_HEALTH_LIST_MAX)"
    return sort, min(int(limit), most - int(offset)), int(offset)


class HealthDocuments:
    """The documents the health views answer with."""

    def __init__(self, app: WarmcastApp, keeper: HealthKeeper, probes: Probes) -> None:
        self.app = app
        self.keeper = keeper
        self.probes = probes

    def is_ready(self) -> bool:
        return self.probes.readiness(time.time())[0]

    def assigned_partitions(self) -> list[int]:
        """The usage partitions this worker owns now."""
        app = self.app
        usage = app.runtime.settings.topic("usage")
        return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == usage)

    async def listed_models(
        self, sort: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """The models ranked ``offset`` to ``offset + limit`` by ``sort``, summarised a
        few at a time; and whether the ranking is exact (not while the worker
        rebalances)."""
        await self.keeper.rankings_now()
        store = self.app.health_store
        rankings = store.rankings
        complete = rankings.complete(sort, limit, offset)
        ranked = rankings.ranked(sort, limit, offset)
        out: list[dict[str, Any]] = []
        for i, (model_id, _) in enumerate(ranked):
            if i and i % LIST_STEP_MODELS == 0:
                await asyncio.sleep(0)
            health = store.detached(model_id)
            if health is not None:
                out.append(model_summary(self.keeper.snapshot_of(health)))
        return out, complete

    async def health(
        self, limit: int = 100, sort: str = "requests_total", offset: int = 0
    ) -> dict[str, Any]:
        app = self.app
        runtime = app.runtime
        now = time.time()
        runtime.assess(now)
        ready, state, reasons = self.probes.readiness(now)
        marked = runtime.in_maintenance
        firing = [alert_document(a, marked.get(fp)) for fp, a in runtime.alerts.firing.items()]
        models, complete = await self.listed_models(sort, limit, offset)
        listed = runtime.settings.health_list_max
        more = complete and len(models) == limit and offset + limit < listed
        return {
            "status": ("degraded" if firing else "ok") if ready else state,
            "ready": ready,
            "reasons": reasons,
            "ts": now,
            "worker": str(app.conf.canonical_url),
            "policy": runtime.settings.policy,
            "engine_partitions": sorted(runtime.engines),
            "assigned_partitions": self.assigned_partitions(),
            "tracked_models": app.health_store.count(),
            "window_seconds": runtime.settings.health_window_seconds,
            "score": runtime.score,
            "score_min": runtime.settings.health_score_min,
            "checks": [check_document(c) for c in runtime.checks],
            "alerts_firing": firing,
            "recent_alerts": [alert_document(a) for a in reversed(runtime.alerts.recent)],
            "sort": sort,
            "offset": offset,
            "limit": limit,
            "listing_complete": complete,
            "next_offset": offset + limit if more else None,
            "models": models,
        }

    def components(self) -> dict[str, Any]:
        app = self.app
        runtime = app.runtime
        runtime.assess(time.time())
        return {
            "ready": self.is_ready(),
            "ts": time.time(),
            "worker": str(app.conf.canonical_url),
            "policy": runtime.settings.policy,
            "score": runtime.score,
            "components": [c.to_dict() for c in runtime.components],
            "checks": [check_document(c) for c in runtime.checks],
        }

    def model(self, model_id: str) -> dict[str, Any] | None:
        """One served model's health and anomalies (``None``: not known here)."""
        app = self.app
        document = self.keeper.snapshot(model_id, app.health_store.get(model_id))
        if document is None:
            return None
        anomalies = [a for w in app.runtime.anomalies.values() for a in w.of_model(model_id)]
        document["anomalies"] = [
            {"metric": a.metric, "value": a.value, "score": a.score, "ts": a.ts} for a in anomalies
        ]
        document["served_by"] = str(app.conf.canonical_url)
        step = app.runtime.steps.get(partition_for(model_id, app.runtime.usage_partitions))
        if step is not None and isinstance(step.engine.policy, PredictsLoadTime):
            document["predicted_load_seconds"] = step.engine.policy.predicted_load_seconds(model_id)
        return document


def register(app: WarmcastApp, keeper: HealthKeeper, probes: Probes) -> HealthDocuments:
    """Register the web views on ``app``; returns what they answer with."""
    documents = HealthDocuments(app, keeper, probes)
    register_metrics(app, probes)
    register_health(app, documents, probes)
    register_pages(app)
    return documents


def register_metrics(app: WarmcastApp, probes: Probes) -> None:
    """``/metrics`` (Prometheus) and ``/policies`` (the active policy and the shadows)."""
    runtime = app.runtime

    @app.page("/metrics")
    class MetricsView(View):
        """Every series, or only those named by ``name[]`` query parameters (as
        prometheus_client's own exporter allows:
        ``/metrics?name[]=warmcast_usage_events_total``), which is cheap enough to poll
        often."""

        async def get(self, request: Request) -> Response:
            runtime.metrics.tracked_models.set(runtime.tracked_models())
            runtime.metrics.sync()
            registry: Any = runtime.metrics.registry
            query: Any = request.query  # aiohttp's: a parameter may repeat
            names = query.getall("name[]", [])
            if names:
                registry = registry.restricted_registry(names)
            return self.bytes(generate_latest(registry), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/policies")
    class PoliciesView(View):
        """The active policy and the shadow candidates (``WARMCAST_SHADOW_POLICIES``),
        scored side by side as the backtest scores them."""

        async def get(self, request: Request) -> Response:
            denied = probes.refused(self, request)
            if denied is not None:
                return denied
            if not runtime.settings.shadow_policies.strip():
                off = "no shadow policies: set WARMCAST_SHADOW_POLICIES (e.g. hybrid,fixed:1)"
                return self.json({"error": off, "policy": runtime.settings.policy}, status=404)
            return self.json({"ts": time.time(), **runtime.policy_scores()})


def register_health(app: WarmcastApp, documents: HealthDocuments, probes: Probes) -> None:
    """``/health``, ``/health/components`` and ``/health/models/{id}``."""
    runtime = app.runtime

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            denied = probes.refused(self, request)
            if denied is not None:
                return denied
            asked = listing_query(request, runtime.settings.health_list_max)
            if isinstance(asked, str):
                return self.json({"error": asked}, status=400)
            sort, limit, offset = asked
            document = await documents.health(limit, sort, offset)
            return self.bytes(
                orjson.dumps(document),
                content_type="application/json",
                status=200 if document["ready"] else 503,
            )

    @app.page("/health/components")
    class ComponentsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(documents.components())

    @app.topic_route(topic=app.worker_topics.usage, match_info="model_id")
    async def model_health_view(
        view: View, request: Request, *args: Any, **kwargs: Any
    ) -> Response:
        """One served model's health; asked of the worker that owns its usage partition."""
        model_id = request.match_info["model_id"]
        document = documents.model(model_id)
        if document is None:
            return view.json({"error": f"no health for served model {model_id!r}"}, status=404)
        return view.json(document)

    @app.page("/health/models/{model_id}")
    class ModelView(View):
        async def get(self, request: Request, model_id: str) -> Response:
            return probes.refused(self, request) or await model_health_view(self, request)


def register_pages(app: WarmcastApp) -> None:
    """The status page, and the task that marks the worker started."""
    runtime = app.runtime

    @app.page("/")
    class StatusPage(View):
        async def get(self, request: Request) -> Response:
            return self.html(STATUS_PAGE)

    @app.task
    async def mark_started() -> None:
        """Tasks start once the worker has its partitions and has recovered its tables."""
        runtime.started = True
