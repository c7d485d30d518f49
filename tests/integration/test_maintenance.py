"""A maintenance window on a running worker: added by control command, no warm-up starts
inside it, the models expected after it are warmed ahead of its end, the alerts of its
models raised inside it are marked, and it is still in force after a restart."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.harness import Worker, consume, namespace, produce, topic, usage, wait_for
from tests.integration.test_control import CONTROL_KEY, TOKEN, call

pytestmark = pytest.mark.integration

SETTINGS: dict[str, Any] = {
    "policy": "fixed:10",
    "control_token": TOKEN,
    "control_key": CONTROL_KEY,
    "alert_check_seconds": 0.25,
    "alert_for_seconds": 0.5,
    "anomaly_warmup": 10,
    "alerts_disabled": "insufficient_volume,health_degraded,stale_data",
    "maintenance": "cron=0 3 * * *,duration=1m,models=nothing-*,id=nightly",
}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metric(model_id: str, value: float) -> tuple[bytes | None, bytes]:
    body = {"model_id": model_id, "ts": time.time(), "name": "load_time", "value": value}
    return model_id.encode(), orjson.dumps(body)


def docs(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def test_a_maintenance_window_on_the_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns, bootstrap = namespace(), kafka_bootstrap
    # a 30-minute window that began ten minutes ago (in force on the wall clock throughout)
    start = math.floor(time.time() / 60) * 60 - 600.0
    end = start + 1800.0
    spec = f"from={iso(start)},until={iso(end)},models=llama-*,id=upgrade"
    worker = Worker(bootstrap, tmp_path, ns, **SETTINGS).start()
    try:
        status, doc = call(worker, "POST", "/control/maintenance-add", {"spec": "cron=0 2"})
        assert status == 422 and "5 fields" in doc["error"]
        status, doc = call(worker, "POST", "/control/maintenance-add", {"spec": spec})
        assert status == 200 and doc["applied"] and doc["window"] == "upgrade", doc

        # llama-7b is used every minute from 5 minutes before the window to after it,
        # sdxl (no window of its own) once inside it
        events = [(b"llama-7b", usage("llama-7b", start + 60.0 * m)) for m in range(-5, 32)]
        events.insert(10, (b"sdxl", usage("sdxl", start + 300.0)))
        await produce(bootstrap, topic(ns, "usage"), [(k, orjson.dumps(v)) for k, v in events])
        seen = await consume(
            bootstrap,
            [topic(ns, "warmup")],
            lambda rs: any(c["start"] >= end for c in docs(rs) if c["model_id"] == "llama-7b"),
        )
        warm = [c for c in docs(seen) if c["action"] == "warm"]
        llama = [c["start"] for c in warm if c["model_id"] == "llama-7b"]
        lead_from = end - 120.0  # the default lead: fixed:10 predicts no load time
        assert [s for s in llama if start <= s < lead_from] == []  # nothing starts inside
        assert min(s for s in llama if s >= start) == lead_from  # warmed ahead of the end
        assert any(s < start for s in llama)  # warmed as usual before the window
        assert [c["start"] for c in warm if c["model_id"] == "sdxl"] == [start + 360.0]

        # load-time anomalies of a model in the window and of one outside it
        normal = [metric(m, 20.0 + (i % 5) * 0.4) for i in range(15) for m in ("llama-7b", "sdxl")]
        await produce(bootstrap, topic(ns, "metrics"), normal)
        await produce(bootstrap, topic(ns, "metrics"), [metric("llama-7b", 300.0)])
        await produce(bootstrap, topic(ns, "metrics"), [metric("sdxl", 300.0)])
        alerts = await consume(
            bootstrap,
            [topic(ns, "alerts")],
            lambda rs: len([a for a in docs(rs) if a["kind"] == "metric_anomaly"]) >= 2,
        )
        marked = {
            a["subject"]: (a["maintenance"], a["maintenance_window"])
            for a in docs(alerts)
            if a["kind"] == "metric_anomaly" and a["state"] == "firing"
        }
        assert marked == {"llama-7b/load_time": (True, "upgrade"), "sdxl/load_time": (False, None)}
        wait_for(
            lambda: (
                worker.metrics().get('warmcast_alerts_in_maintenance{kind="metric_anomaly"}') == 1
            ),
            30,
            "the marked alert in the gauges",
        )
        figures = worker.metrics()
        assert figures['warmcast_alerts_firing{kind="metric_anomaly"}'] == 1  # sdxl's only
        assert figures["warmcast_metric_anomalies_in_maintenance"] == 1
        assert figures["warmcast_metric_anomalies_active"] == 2
        assert figures['warmcast_maintenance_windows_active{scope="pool"}'] == 1
        listed = {
            a["subject"]: a["maintenance_window"]
            for a in worker.health()["alerts_firing"]
            if a["kind"] == "metric_anomaly"
        }
        assert listed == {"llama-7b/load_time": "upgrade", "sdxl/load_time": None}
    finally:
        assert worker.stop() == 0

    restarted = Worker(bootstrap, tmp_path, ns, **SETTINGS).start()
    try:
        status, doc = call(restarted, "GET", "/control")
        assert [w["id"] for w in doc["maintenance"]] == ["nightly", "upgrade"]  # kept
        status, doc = call(restarted, "POST", "/control/maintenance-cancel", {"window": "upgrade"})
        assert status == 200 and doc["cancelled"]
        status, doc = call(restarted, "POST", "/control/maintenance-cancel", {"window": "upgrade"})
        assert status == 404 and not doc["applied"]
        assert [w["id"] for w in call(restarted, "GET", "/control")[1]["maintenance"]] == [
            "nightly"
        ]
    finally:
        assert restarted.stop() == 0
