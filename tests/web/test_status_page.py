"""The web endpoints of two workers sharing the partitions, and the status page rendered
by a headless Chromium (a screenshot is left in artifacts/)."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.partitioning import partition_for
from tests.integration.harness import REPO, Worker, namespace, produce, topic, usage, wait_for
from tests.needs import need

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0  # the start of a minute, in the past: a replay
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts"


@pytest.fixture(scope="module")
def pair(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    """Two workers of one group, each owning one of the two usage partitions."""
    workdir = tmp_path_factory.mktemp("web")
    ns = namespace()
    workers = [Worker(kafka_bootstrap, workdir, ns, policy="fixed:10") for _ in range(2)]
    try:
        for w in workers:
            w.start()
        wait_for(
            lambda: sorted(p for w in workers for p in assigned(w)) == [0, 1],
            60,
            "the two workers to split the partitions",
        )
        yield workers
    finally:
        for w in workers:
            w.stop()


def assigned(worker: Worker) -> list[int]:
    try:
        health = worker.health()
    except (OSError, urllib.error.HTTPError):  # 503 while rebalancing
        return []
    return list(health["assigned_partitions"]) if health["ready"] else []


def owner_of(workers: list[Worker], model_id: str) -> Worker:
    partition = partition_for(model_id, 2)
    return next(w for w in workers if partition in assigned(w))


def get_json(worker: Worker, path: str) -> tuple[int, Any]:
    try:
        return 200, orjson.loads(worker.get(path))
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


@pytest.fixture(scope="module")
def traffic(pair: list[Worker]) -> dict[str, Worker]:
    """``llama``: four requests, two cold, one failed; three leases: one used, one wasted.
    Other models on the other partition, so both workers hold some."""
    bootstrap, ns = pair[0].bootstrap, pair[0].namespace
    events = [
        usage("llama", T0, cold_start=True, latency=4.0),
        usage("llama", T0 + 10, latency=0.2),  # the lease starts next minute: not used
        usage("llama", T0 + 70, latency=0.25),  # inside the first lease: used
        usage("llama", T0 + 2000, cold_start=True, latency=1.0, error=True),  # second wasted
    ]
    llama = partition_for("llama", 2)
    others = [m for m in (f"model-{i}" for i in range(20)) if partition_for(m, 2) != llama][:3]
    messages: list[tuple[bytes | None, bytes]] = [
        (e["model_id"].encode(), orjson.dumps(e)) for e in events
    ]
    for i, m in enumerate(others):
        messages += [(m.encode(), orjson.dumps(usage(m, T0 + 5, cold_start=i == 0)))]
    asyncio.run(produce(bootstrap, topic(ns, "usage"), messages))
    owners = {m: owner_of(pair, m) for m in ("llama", *others)}

    def counted(model_id: str, worker: Worker) -> bool:
        want = 4 if model_id == "llama" else 1
        # llama's last request comes 32 minutes after the others: its partition's event
        # time waits for the wall clock to confirm it before its lease is decided
        leases = 3 if model_id == "llama" else 1
        return any(
            m["model_id"] == model_id
            and m["requests_total"] == want
            and m["warmups"]["issued"] == leases
            for m in worker.health()["models"]
        )

    for model_id, worker in owners.items():
        wait_for(lambda: counted(model_id, worker), 30, f"{model_id} counted by its owner")  # noqa: B023
    return owners


def test_health_keeps_its_fields_and_adds_the_score(pair: list[Worker], traffic: Any) -> None:
    owner = traffic["llama"]
    health = owner.health()
    assert health["ready"] is True and health["tracked_models"] >= 1
    llama = next(m for m in health["models"] if m["model_id"] == "llama")
    assert (llama["requests_total"], llama["cold_starts_total"]) == (4, 2)
    assert llama["last_seen"] == T0 + 2000 and llama["errors_total"] == 1
    assert llama["warmups"] == {"issued": 3, "used": 1, "wasted": 1}
    assert isinstance(health["alerts_firing"], list)
    assert 0.0 <= health["score"] <= 1.0
    assert {c["name"] for c in health["checks"]} >= {"stale_data", "dead_letter_burst"}
    status, by_cold = get_json(owner, "/health?limit=1&sort=cold_starts_total")
    assert status == 200 and [m["model_id"] for m in by_cold["models"]] == ["llama"]
    status, error = get_json(owner, "/health?sort=model_id")
    assert status == 400 and "sort by" in error["error"]
    status, error = get_json(owner, "/health?limit=many")
    assert status == 400 and "limit" in error["error"]


def test_components_say_what_applies(pair: list[Worker], traffic: Any) -> None:
    status, doc = get_json(pair[0], "/health/components")
    assert status == 200 and doc["policy"] == "fixed:10"
    applies = {c["name"]: c["applicable"] for c in doc["components"]}
    assert applies == {
        "UsagePatternAnalyzer": True,
        "PredictionEngine": False,
        "WarmupScheduler": True,
        "ResourceManager": False,
        "WarmupQueue": False,
        "PerformancePredictor": False,
        "ModelWarmupMetrics": True,
    }


def test_model_health_is_answered_by_the_owner(pair: list[Worker], traffic: Any) -> None:
    owner = traffic["llama"]
    documents = [get_json(w, "/health/models/llama") for w in pair]
    assert [status for status, _ in documents] == [200, 200]
    first, second = (doc for _, doc in documents)
    assert first == second  # the same answer, whichever worker is asked
    assert first["served_by"] == f"http://127.0.0.1:{owner.port}"
    hour = first["windows"]["3600"]
    assert (hour["requests"], hour["events"], hour["warmups_issued"]) == (4, 4, 3)
    assert (hour["warmups_used"], hour["warmups_wasted"]) == (1, 1)
    assert (hour["cold_start_rate"], hour["error_rate"]) == (0.5, 0.25)
    assert hour["latency_p50"] == pytest.approx(0.25, rel=0.02)
    assert hour["latency_p95"] == pytest.approx(4.0, rel=0.02)
    assert first["windows"]["60"]["requests"] == 1  # only the request at T0 + 2000
    assert first["loaded_until"] == T0 + 1980 + 660
    for worker in pair:
        status, missing = get_json(worker, "/health/models/no-such-model")
        assert status == 404 and "no-such-model" in missing["error"]


def test_metrics_endpoint_is_prometheus_text(pair: list[Worker], traffic: Any) -> None:
    owner = traffic["llama"]
    metrics = owner.metrics()
    assert metrics['warmcast_warmup_outcomes_total{outcome="used"}'] == 1
    assert metrics['warmcast_warmup_outcomes_total{outcome="wasted"}'] == 1
    assert metrics["warmcast_request_errors_total"] == 1
    assert metrics["warmcast_request_latency_seconds_count"] == 4
    assert 'warmcast_health_check_failing{check="stale_data"}' in metrics


def test_metrics_endpoint_serves_only_the_series_asked_for(
    pair: list[Worker], traffic: Any
) -> None:
    owner = traffic["llama"]
    full = owner.metrics()
    text = owner.get(
        "/metrics?name[]=warmcast_request_errors_total&name[]=warmcast_usage_events_total"
    ).decode()
    names = {line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names == {"warmcast_request_errors_total", "warmcast_usage_events_total"}
    assert f"warmcast_request_errors_total {full['warmcast_request_errors_total']}" in text
    assert len(full) > 50  # unfiltered: every series


def test_status_page_is_served(pair: list[Worker]) -> None:
    page = pair[0].get("/").decode()
    assert page.startswith("<!doctype html>")
    assert "/health/components" in page and "setInterval" in page


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def test_status_page_renders_in_chromium(pair: list[Worker], traffic: Any, tmp_path: Path) -> None:
    need(
        str(CHROMIUM) if CHROMIUM.exists() else None, "needs Debian's chromium at /usr/bin/chromium"
    )
    owner = traffic["llama"]
    url = f"http://127.0.0.1:{owner.port}/"
    dom = chromium("--dump-dom", url, profile=tmp_path / "dom").stdout
    for text in ("UsagePatternAnalyzer", "ModelWarmupMetrics", "not applicable", "llama"):
        assert text in dom, text
    assert 'id="score">loading' not in dom and "&ndash;</div>" not in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", url, profile=tmp_path / "shot")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
