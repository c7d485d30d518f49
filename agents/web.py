"""Web views: ``/health`` (the rolling health table) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from streams.app import app, model_health

#: Prometheus text format 0.0.4 (aiohttp sets the charset itself).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"


@app.page("/metrics")
class MetricsView(View):
    async def get(self, request: Request) -> Response:
        runtime = app.runtime
        runtime.metrics.tracked_models.set(runtime.tracked_models())
        return self.bytes(
            generate_latest(runtime.metrics.registry), content_type=PROMETHEUS_CONTENT_TYPE
        )


def health_document(limit: int = 100) -> dict[str, Any]:
    runtime = app.runtime
    window = runtime.settings.health_window_seconds
    models = []
    for model_id, data in list(model_health.items()):
        if not data:
            continue
        models.append(
            {
                "model_id": model_id,
                "requests_total": data["requests_total"],
                "cold_starts_total": data["cold_starts_total"],
                "request_rate": data["weighted_requests"] / window,
                "cold_start_rate": (
                    data["weighted_cold"] / data["weighted_requests"]
                    if data["weighted_requests"] > 0
                    else 0.0
                ),
                "latency_mean": data.get("latency_mean"),
                "last_seen": data["last_seen"],
            }
        )
    models.sort(key=lambda m: m["requests_total"], reverse=True)
    firing = [
        {"kind": a.kind, "subject": a.subject, "since": a.ts, "summary": a.summary}
        for a in runtime.alerts.firing.values()
    ]
    ready = runtime.started and not app.rebalancing and not app.in_recovery
    return {
        "status": ("degraded" if firing else "ok") if ready else "starting",
        "ready": ready,
        "ts": time.time(),
        "policy": runtime.settings.policy,
        "engine_partitions": sorted(runtime.engines),
        "tracked_models": len(models),
        "window_seconds": window,
        "alerts_firing": firing,
        "models": models[:limit],
    }


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        limit = int(request.query.get("limit", 100))
        document = health_document(limit)
        return self.json(document, status=200 if document["ready"] else 503)


@app.task
async def mark_started() -> None:
    """Tasks start once the worker has its partitions and has recovered its tables."""
    app.runtime.started = True
