"""Web views: the status page, ``/health`` and its parts, and ``/metrics`` (Prometheus).

``/health``               the worker: readiness, score, checks, alerts, its models
``/health/components``    the seven components under the running policy
``/health/models/{id}``   one served model, answered by the worker that owns it
``/``                     a status page that refreshes itself from the above
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from agents.health import snapshot
from agents.status_page import STATUS_PAGE
from engine.alerting import AlertTransition
from engine.healthscore import CheckResult
from streams.app import app, health_store, usage_topic

#: Prometheus text format 0.0.4 (aiohttp sets the charset itself).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"

#: What ``/health?sort=`` may order models by.
SORT_KEYS = ("requests_total", "cold_starts_total", "errors_total", "last_seen")


@app.page("/metrics")
class MetricsView(View):
    """Every series, or only those named by ``name[]`` query parameters (as
    prometheus_client's own exporter allows: ``/metrics?name[]=warmcast_usage_events_total``),
    which is cheap enough to poll often."""

    async def get(self, request: Request) -> Response:
        runtime = app.runtime
        runtime.metrics.tracked_models.set(runtime.tracked_models())
        runtime.metrics.sync()
        registry: Any = runtime.metrics.registry
        query: Any = request.query  # aiohttp's: a parameter may repeat
        names = query.getall("name[]", [])
        if names:
            registry = registry.restricted_registry(names)
        return self.bytes(generate_latest(registry), content_type=PROMETHEUS_CONTENT_TYPE)


def is_ready() -> bool:
    return app.runtime.started and not app.rebalancing and not app.in_recovery


def alert_document(alert: AlertTransition) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "subject": alert.subject,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.threshold,
        "since" if alert.state == "firing" else "ts": alert.ts,
    }


def assigned_partitions() -> list[int]:
    """The usage partitions this worker owns now."""
    usage = app.runtime.settings.topic("usage")
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == usage)


def model_summary(model_id: str, data: dict[str, Any], window: float) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "requests_total": data["requests_total"],
        "cold_starts_total": data["cold_starts_total"],
        "errors_total": data.get("errors_total", 0),
        "request_rate": data["weighted_requests"] / window,
        "cold_start_rate": (
            data["weighted_cold"] / data["weighted_requests"]
            if data["weighted_requests"] > 0
            else 0.0
        ),
        "latency_mean": data.get("latency_mean"),
        "last_seen": data["last_seen"],
    }


def health_document(limit: int = 100, sort: str = "requests_total") -> dict[str, Any]:
    runtime = app.runtime
    runtime.assess(time.time())
    window = runtime.settings.health_window_seconds
    stored = [(m, d) for m, d in list(health_store.items()) if d]
    stored.sort(key=lambda item: item[1].get(sort, 0), reverse=True)
    models = [model_summary(m, d, window) for m, d in stored[:limit]]
    for doc, (model_id, data) in zip(models, stored, strict=False):
        snap = snapshot(model_id, data)
        if snap is not None:
            doc["windows"] = snap["windows"]
            doc["warmups"] = {k: snap[f"warmups_{k}_total"] for k in ("issued", "used", "wasted")}
    firing = [alert_document(a) for a in runtime.alerts.firing.values()]
    ready = is_ready()
    return {
        "status": ("degraded" if firing else "ok") if ready else "starting",
        "ready": ready,
        "ts": time.time(),
        "worker": str(app.conf.canonical_url),
        "policy": runtime.settings.policy,
        "engine_partitions": sorted(runtime.engines),
        "assigned_partitions": assigned_partitions(),
        "tracked_models": len(stored),
        "window_seconds": window,
        "score": runtime.score,
        "score_min": runtime.settings.health_score_min,
        "checks": [check_document(c) for c in runtime.checks],
        "alerts_firing": firing,
        "recent_alerts": [alert_document(a) for a in reversed(runtime.alerts.recent)],
        "models": models,
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


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        limit = request.query.get("limit", "100")
        sort = request.query.get("sort", "requests_total")
        if sort not in SORT_KEYS:
            return self.json({"error": f"sort by one of {', '.join(SORT_KEYS)}"}, status=400)
        if not limit.isdigit():
            return self.json({"error": "limit is a whole number of models"}, status=400)
        document = health_document(int(limit), sort)
        return self.json(document, status=200 if document["ready"] else 503)


@app.page("/health/components")
class ComponentsView(View):
    async def get(self, request: Request) -> Response:
        runtime = app.runtime
        runtime.assess(time.time())
        return self.json(
            {
                "ready": is_ready(),
                "ts": time.time(),
                "worker": str(app.conf.canonical_url),
                "policy": runtime.settings.policy,
                "score": runtime.score,
                "components": [c.to_dict() for c in runtime.components],
                "checks": [check_document(c) for c in runtime.checks],
            }
        )


@app.topic_route(topic=usage_topic, match_info="model_id")
async def model_health_view(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
    """One served model's health; asked of the worker that owns its usage partition."""
    runtime = app.runtime
    model_id = request.match_info["model_id"]
    document = snapshot(model_id, health_store.get(model_id))
    if document is None:
        return view.json({"error": f"no health for served model {model_id!r}"}, status=404)
    anomalies = [a for w in runtime.anomalies.values() for a in w.of_model(model_id)]
    document["anomalies"] = [
        {"metric": a.metric, "value": a.value, "score": a.score, "ts": a.ts} for a in anomalies
    ]
    document["served_by"] = str(app.conf.canonical_url)
    return view.json(document)


@app.page("/health/models/{model_id}")
class ModelView(View):
    get = model_health_view


@app.page("/")
class StatusPage(View):
    async def get(self, request: Request) -> Response:
        return self.html(STATUS_PAGE)


@app.task
async def mark_started() -> None:
    """Tasks start once the worker has its partitions and has recovered its tables."""
    app.runtime.started = True
