"""``/health`` at many served models, the probes, the control token, and an agent that
crash-loops: real workers on the broker."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.partitioning import partition_for
from tests.integration.harness import Worker, namespace, produce, topic, usage, wait_for
from tests.ops.workers import AlertLog, ModuleWorker

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0
TOKEN = "health-token-5f1c2a9e"
MODELS = 600
CAP = 40


def get(worker: Worker, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET ``path``; with ``token`` as a bearer token, or none at all."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


@pytest.fixture(scope="module")
def crowded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker with a control token and a small listing cap, holding ``MODELS`` served
    models: model ``i`` had ``i % 97 + 1`` requests, the last at ``T0 + i``."""
    workdir = tmp_path_factory.mktemp("crowded")
    worker = Worker(
        kafka_bootstrap,
        workdir,
        namespace(),
        policy="fixed:10",
        control_token=TOKEN,
        health_list_max=CAP,
    )
    worker.start()
    try:
        events = [
            usage(f"model-{i:04d}", T0 + i, count=i % 97 + 1, cold_start=i % 5 == 0)
            for i in range(MODELS)
        ]
        envelopes: list[tuple[bytes | None, bytes]] = []
        for partition in (0, 1):
            mine = [e for e in events if partition_for(e["model_id"], 2) == partition]
            for k in range(0, len(mine), 100):
                batch = mine[k : k + 100]
                envelopes.append((batch[0]["model_id"].encode(), orjson.dumps(batch)))
        asyncio.run(produce(kafka_bootstrap, topic(worker.namespace, "usage"), envelopes))
        wait_for(
            lambda: worker.health()["tracked_models"] == MODELS, 60, f"{MODELS} tracked models"
        )
        yield worker
    finally:
        worker.stop()


def naive(key: Any, n: int) -> list[str]:
    """The first ``n`` model ids by ``key`` over everything sent, highest first."""
    models = [
        {"model_id": f"model-{i:04d}", "requests_total": i % 97 + 1, "last_seen": T0 + i}
        for i in range(MODELS)
    ]
    models.sort(key=lambda m: (m[key], m["model_id"]), reverse=True)
    return [m["model_id"] for m in models[:n]]


def test_a_listing_answers_with_at_most_the_cap_in_rank_order(crowded: Worker) -> None:
    doc = wait_for(
        lambda: (d := crowded.health())["listing_complete"] and d, 30, "a complete listing"
    )
    status, doc = get(crowded, "/health?limit=1000000&sort=requests_total", TOKEN)
    assert status == 200 and doc["limit"] == CAP
    assert [m["model_id"] for m in doc["models"]] == naive("requests_total", CAP)
    assert doc["models"][0]["windows"]["3600"]["requests"] > 0  # a full summary per model
    status, by_time = get(crowded, "/health?limit=10&offset=5&sort=last_seen", TOKEN)
    assert status == 200 and by_time["next_offset"] == 15
    assert [m["model_id"] for m in by_time["models"]] == naive("last_seen", 15)[5:]
    status, beyond = get(crowded, f"/health?offset={CAP}", TOKEN)
    assert status == 400 and "first 40 models" in beyond["error"]


def test_probes_stay_open_and_the_listing_wants_the_token(crowded: Worker) -> None:
    assert get(crowded, "/livez") == (200, {"live": True})
    status, ready = get(crowded, "/readyz")
    assert status == 200 and ready["ready"] is True and ready["reasons"] == []
    for path in ("/health", "/health?limit=5", "/health/models/model-0001"):
        status, refused = get(crowded, path)
        assert status == 401 and "bearer token" in refused["error"], path
        status, _ = get(crowded, path, token="not-" + TOKEN)
        assert status == 401, path
    status, one = get(crowded, "/health/models/model-0001", TOKEN)
    assert status == 200 and one["requests_total"] == 2


def same_partition(model_id: str, n: int) -> list[str]:
    """``n`` served model names that live on ``model_id``'s partition."""
    names = (f"{model_id}-{i}" for i in range(1000))
    return [m for m in names if partition_for(m, 2) == partition_for(model_id, 2)][:n]


def crashes(worker: Worker) -> float:
    return worker.metrics().get('warmcast_agent_crashes_total{agent="agents.usage.usage_agent"}', 0)


async def test_an_agent_crash_loop_makes_the_worker_not_ready_and_alerts(
    kafka_bootstrap: str, tmp_path: Any
) -> None:
    worker = ModuleWorker(
        kafka_bootstrap,
        tmp_path,
        namespace(),
        "tests.ops.standin",
        policy="warmcast",
        alert_check_seconds=0.5,
        alert_keep_firing_seconds=0.5,
        agent_crash_loop_crashes=3,
        agent_crash_loop_window_seconds=20,
    )
    worker.start()
    ns = worker.namespace
    try:
        assert get(worker, "/readyz")[0] == 200
        crash = {"model_id": "broken", "ts": time.time(), "name": "standin.crash", "value": 1}
        await produce(kafka_bootstrap, topic(ns, "metrics"), [(b"broken", orjson.dumps(crash))])
        wait_for(
            # a name the worker does not know is counted as "other"
            lambda: worker.metrics().get('warmcast_metric_events_total{name="other"}'),
            30,
            "the crash control to reach the policy",
        )
        async with AlertLog(kafka_bootstrap, topic(ns, "alerts")) as alerts:
            # one message at a time, each of a new model of the partition (the policy is
            # asked about a model's first request in a minute): each crashes the agent
            for n, model_id in enumerate(same_partition("broken", 3), start=1):
                event = orjson.dumps(usage(model_id, time.time()))
                await produce(kafka_bootstrap, topic(ns, "usage"), [(model_id.encode(), event)])
                await asyncio.to_thread(
                    wait_for, lambda n=n: crashes(worker) >= n, 60, f"usage agent crash {n}"
                )
            await alerts.wait(lambda a: "firing" in a.states("agent_crash_loop"), "a crash loop")
            firing = next(a for a in alerts.alerts if a.kind == "agent_crash_loop")
            assert firing.subject == "agents.usage.usage_agent" and firing.severity == "critical"
            status, ready = get(worker, "/readyz")
            assert status == 503 and ready["state"] == "failing"
            assert any("agents.usage.usage_agent crashed" in r for r in ready["reasons"])
            status, health = get(worker, "/health")
            assert status == 503 and health["status"] == "failing" and not health["ready"]
            assert get(worker, "/livez")[0] == 200  # alive: it answers, it is just not ready

            crash["value"], crash["ts"] = 0, time.time()
            await produce(kafka_bootstrap, topic(ns, "metrics"), [(b"broken", orjson.dumps(crash))])
            await alerts.wait(
                lambda a: a.fired_and_resolved("agent_crash_loop"), "the loop's end", timeout=90
            )
        await asyncio.to_thread(
            wait_for, lambda: get(worker, "/readyz")[0] == 200, 30, "ready again"
        )
    finally:
        worker.stop()
