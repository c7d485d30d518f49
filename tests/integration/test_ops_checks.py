"""Every health check fires and resolves on the alerts topic, driven through the broker.

One worker runs a stand-in ``warmcast`` policy (tests/ops/standin.py) steered by metric
events, so that accuracy, queue, budget, drift and decision latency can be pushed past
their thresholds and back. Thresholds and windows are short; ``for`` and keep-firing
durations are half a second, so the tests also see that nothing flaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from schemas.health import HealthSnapshot
from streams.partitioning import partition_for
from tests.integration.harness import (
    REPO,
    Worker,
    consume,
    namespace,
    produce,
    topic,
    usage,
    wait_for,
)
from tests.ops.promql import (
    SCRAPE_SERIES,
    TARGET_LABELS,
    exposed_names,
    metric_names,
    selectors,
    series,
)
from tests.ops.workers import AlertLog, ModuleWorker

pytestmark = pytest.mark.integration

SETTINGS: dict[str, Any] = {
    "policy": "warmcast",
    "alert_check_seconds": 0.25,
    "alert_for_seconds": 0.5,
    "alert_keep_firing_seconds": 0.5,
    "stale_after_seconds": 2,
    "min_volume_events": 20,
    "volume_window_seconds": 600,
    "accuracy_min_samples": 100,
    "decision_latency_p95_max_seconds": 0.1,
    "decision_latency_window_seconds": 1.5,
    "dead_letter_burst": 3,
    "dead_letter_window_seconds": 3,
    "queue_overflow_window_seconds": 2,
    "anomaly_warmup": 10,
    "health_snapshot_seconds": 1,
}

POLICY_KINDS = ("low_accuracy", "queue_overflow", "budget_exhausted", "learner_drift")
KINDS = (
    "stale_data",
    "insufficient_volume",
    *POLICY_KINDS,
    "high_decision_latency",
    "dead_letter_burst",
    "metric_anomaly",
    "health_degraded",
)


@pytest.fixture(scope="module")
def ops_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    workdir = tmp_path_factory.mktemp("ops")
    worker = ModuleWorker(kafka_bootstrap, workdir, namespace(), "tests.ops.standin", **SETTINGS)
    yield worker.start()
    worker.stop()


def metric(model_id: str, name: str, value: float) -> tuple[bytes | None, bytes]:
    body = {"model_id": model_id, "ts": time.time(), "name": name, "value": value}
    return model_id.encode(), orjson.dumps(body)


def same_partition(model_id: str, n: int) -> list[str]:
    """``n`` served model names that live on ``model_id``'s partition."""
    owner = partition_for(model_id, 2)
    names = (f"{model_id}-{i}" for i in range(1000))
    return [m for m in names if partition_for(m, 2) == owner][:n]


@contextlib.asynccontextmanager
async def heartbeat(bootstrap: str, usage_topic: str) -> AsyncIterator[None]:
    """A usage event every 0.3 s while the block runs: the data is never stale."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()

    async def beat() -> None:
        while True:
            event = orjson.dumps(usage("heartbeat", time.time(), latency=0.05))
            await producer.send_and_wait(usage_topic, event, key=b"heartbeat")
            await asyncio.sleep(0.3)  # the pace of the traffic, not a synchronisation

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()


def metric_count(worker: Worker, name: str) -> float:
    return worker.metrics().get(f'warmcast_metric_events_total{{name="{name}"}}', 0.0)


async def test_every_check_fires_and_resolves(ops_worker: Worker) -> None:
    w, bootstrap, ns = ops_worker, ops_worker.bootstrap, ops_worker.namespace
    usage_topic, metrics_topic = topic(ns, "usage"), topic(ns, "metrics")
    async with AlertLog(bootstrap, topic(ns, "alerts")) as log:
        # nothing arrives: the data is stale, there is too little of it, health degrades
        await log.wait(
            lambda a: a.fired("stale_data", "insufficient_volume", "health_degraded"),
            "the checks of an idle worker",
        )
        async with heartbeat(bootstrap, usage_topic):
            bulk = [usage("bulk", time.time(), latency=0.1 + i / 100) for i in range(30)]
            await produce(bootstrap, usage_topic, [(b"bulk", orjson.dumps(bulk))])
            await log.wait(
                lambda a: a.fired_and_resolved("stale_data", "insufficient_volume"),
                "data to flow again",
            )

            # then everything goes wrong at once
            normal = [metric("llama", "load_time", 20.0 + (i % 5) * 0.4) for i in range(15)]
            await produce(bootstrap, metrics_topic, normal)
            controls = [
                ("precision", 0.5),
                ("recall", 0.9),
                ("discrimination", 0.5),
                ("queue_overflow", 3),
                ("budget_use", 1.0),
                ("drift", 1),
                ("decision_delay", 0.15),
            ]
            await produce(
                bootstrap, metrics_topic, [metric("probe", f"standin.{c}", v) for c, v in controls]
            )
            await produce(bootstrap, metrics_topic, [metric("llama", "load_time", 300.0)])
            wait_for(  # the controls are the only metric names the worker does not know
                lambda: metric_count(w, "other") == len(controls),
                30,
                "the stand-in to slow down",
            )
            slow: list[tuple[bytes | None, bytes]] = [
                (m.encode(), orjson.dumps(usage(m, time.time())))
                for m in same_partition("probe", 5)
            ]
            await produce(bootstrap, usage_topic, slow)
            await produce(bootstrap, usage_topic, [(b"bad", b"{not json")] * 3)
            await log.wait(lambda a: a.fired(*KINDS[2:]), "every check to fire", timeout=45)
            health = w.health()
            assert health["score"] < 0.8 and health["status"] == "degraded"
            failing = {c["name"] for c in health["checks"] if c["status"] == "failing"}
            assert {"low_accuracy", "budget_exhausted", "drift", "metric_anomaly"} <= failing
            components = {
                c["name"]: c for c in orjson.loads(w.get("/health/components"))["components"]
            }
            assert components["PredictionEngine"]["precision"] == 0.5
            assert components["ResourceManager"]["budget_use"] == 1.0
            assert components["WarmupQueue"]["queue_overflows"] == 3
            anomaly = next(a for a in log.alerts if a.kind == "metric_anomaly")
            assert anomaly.subject == "llama/load_time" and anomaly.value == 300.0

            # and recovers
            recover = [
                ("precision", 0.95),
                ("recall", 0.95),
                ("discrimination", 0.95),
                ("queue_depth", 0),
                ("budget_use", 0.5),
                ("drift", 0),
                ("decision_delay", 0),
            ]
            await produce(
                bootstrap, metrics_topic, [metric("probe", f"standin.{c}", v) for c, v in recover]
            )
            await produce(bootstrap, metrics_topic, [metric("llama", "load_time", 20.5)])
            await log.wait(
                lambda a: a.fired_and_resolved(*KINDS), "every alert to resolve", timeout=45
            )
            health = wait_for(
                lambda: (h := w.health())["score"] == 1.0 and h, 15, "a perfect score again"
            )
            assert health["alerts_firing"] == []

    for fp, states in log.by_fingerprint().items():  # deduplicated: never twice in a row
        assert all(a != b for a, b in itertools.pairwise(states)), (fp, states)
    assert all(key == a.fingerprint.encode() for key, a in zip(log.keys, log.alerts, strict=True))
    severities = {a.kind: a.severity for a in log.alerts}
    assert severities["queue_overflow"] == "critical" and severities["stale_data"] == "warning"
    metrics = w.metrics()
    assert metrics['warmcast_alerts_total{kind="metric_anomaly",state="firing"}'] >= 1
    assert metrics['warmcast_metric_anomalies_total{metric="load_time"}'] >= 1
    assert metrics["warmcast_warmup_queue_overflows_total"] == 3

    snapshots = await consume(
        bootstrap,
        [topic(ns, "health")],
        lambda r: {x.key for x in r} >= {b"bulk", b"heartbeat"},
    )
    bulk_health = [
        HealthSnapshot.model_validate_json(r.value) for r in snapshots if r.key == b"bulk"
    ]
    assert bulk_health[-1].requests_total == 30
    latest = orjson.loads([r for r in snapshots if r.key == b"bulk"][-1].value)
    assert latest["windows"]["300"]["requests"] == 30
    assert 0.1 <= latest["windows"]["300"]["latency_p50"] <= 0.3


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((REPO / "ops/prometheus/alerts.yml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = orjson.loads((REPO / "ops/grafana/dashboards/warmcast.json").read_bytes())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_alert_rules_and_dashboard_use_only_exposed_metrics(ops_worker: Worker) -> None:
    exposed = exposed_names(ops_worker.get("/metrics").decode())
    for source, expressions in (
        ("ops/prometheus/alerts.yml", rule_expressions()),
        ("ops/grafana/dashboards/warmcast.json", dashboard_expressions()),
    ):
        assert expressions, source
        for expr in expressions:
            names = metric_names(expr)
            assert names, f"{source}: no metric in {expr!r}"
            missing = names - exposed - SCRAPE_SERIES
            assert not missing, f"{source}: {sorted(missing)} not exposed by a worker ({expr!r})"


def matches(op: str, pattern: str, value: str) -> bool:
    if op in ("=~", "!~"):
        return bool(re.fullmatch(pattern, value)) == (op == "=~")
    return (value == pattern) == (op == "=")


def test_alert_rules_select_series_a_worker_exposes(ops_worker: Worker) -> None:
    """Every label matcher of a rule matches a series a worker exposes (a label value the
    worker never writes would keep the rule quiet for good); each alternative of a
    ``=~"a|b"`` matcher is such a value."""
    exposed = series(ops_worker.get("/metrics").decode())
    for expr in rule_expressions():
        for name, matchers in selectors(expr):
            own = [
                (label, op, value) for label, op, value in matchers if label not in TARGET_LABELS
            ]
            for label, op, value in own:
                alternatives = value.split("|") if op == "=~" else [value]
                for want in alternatives:
                    assert any(
                        n == name and matches(op, want, labels.get(label, ""))
                        for n, labels in exposed
                    ), f"no {name}{{{label}{op}{want!r}}} exposed by a worker ({expr!r})"


def test_rule_unit_tests_feed_series_as_a_worker_exposes_them(ops_worker: Worker) -> None:
    """The input series of ops/prometheus/alerts_test.yml are series of a worker: same
    name, same label names (besides those Prometheus adds)."""
    exposed: dict[str, set[frozenset[str]]] = {}
    for name, labels in series(ops_worker.get("/metrics").decode()):
        exposed.setdefault(name, set()).add(frozenset(labels))
    doc = yaml.safe_load((REPO / "ops/prometheus/alerts_test.yml").read_text())
    inputs = [s["series"] for group in doc["tests"] for s in group["input_series"]]
    assert inputs
    for text in inputs:
        ((name, labels),) = series(text)
        assert set(labels) >= TARGET_LABELS, text
        if name in SCRAPE_SERIES:
            continue
        assert name in exposed, f"{text}: no such series on a worker"
        own = frozenset(labels) - TARGET_LABELS
        seen = sorted(sorted(names) for names in exposed[name])
        assert own in exposed[name], f"{text}: a worker labels it {seen}"


def test_metric_names_follow_the_conventions(ops_worker: Worker) -> None:
    text = ops_worker.get("/metrics").decode()
    types = dict(
        line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE warmcast_")
    )
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        assert not any(unit in name for unit in ("_ms", "_milliseconds", "_percent")), name
    for line in text.splitlines():
        if line.startswith("warmcast_"):
            assert "model" not in line.partition("{")[2], f"a served model as a label: {line}"
