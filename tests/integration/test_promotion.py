"""Promotion and rollback on a broker: a shadow candidate clearly better than the active
policy (warmcast against a 1-minute keep-alive) is promoted on its own, an active policy
that never has a model warm is rolled back to the fallback, an operator promotes by a
signed control command; each change is on the alerts topic with the figures that
justify it."""

from __future__ import annotations

import asyncio
import random
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.alert import Alert
from tests.integration.harness import Worker, consume, namespace, topic, usage, wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0
TOKEN = "a control token for the promotion tests"
CONTROL_KEY = "a control key for the promotion tests, 32 bytes or more"
CHECKPOINT_KEY = "a checkpoint key for the promotion tests, 32 bytes"


def periodic(models: int, hours: float, seed: int = 1) -> list[tuple[float, str]]:
    """Each model requested every 4 to 7 minutes: a 1-minute keep-alive never finds one
    warm (it never warms a model in time), a policy that learns the idle times mostly
    does."""
    rng = random.Random(seed)
    events = []
    for i in range(models):
        t = 60.0 * rng.randint(0, 5) + rng.uniform(1, 50)
        while t < hours * 3600:
            events.append((T0 + t, f"model-{i}"))
            t += 60.0 * (4 + i % 4)
    return sorted(events)


async def send_usage(bootstrap: str, ns: str, events: list[tuple[float, str]]) -> None:
    """The events in order, keyed by model (as producers key them)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic(ns, "usage"), orjson.dumps(usage(m, ts)), key=m.encode())
            for ts, m in events
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def changes(records: list[Any]) -> list[Alert]:
    alerts = (Alert.model_validate_json(r.value) for r in records)
    return [a for a in alerts if a.kind in ("policy_promoted", "policy_rolled_back")]


def start(bootstrap: str, workdir: Path, ns: str, **settings: Any) -> Worker:
    workdir.mkdir()
    return Worker(
        bootstrap,
        workdir,
        ns,
        alert_check_seconds=0.5,
        promotion_min_requests=200,
        control_token=TOKEN,
        control_key=CONTROL_KEY,
        alerts_disabled="insufficient_volume,health_degraded,stale_data,low_accuracy",
        **settings,
    ).start()


def post(worker: Worker, path: str, body: Any, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=orjson.dumps(body), method="POST"
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


async def test_a_clearly_better_candidate_is_promoted_and_a_broken_policy_rolled_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    promoting, rolling = namespace(), namespace()
    better = start(
        kafka_bootstrap,
        tmp_path / "better",
        promoting,
        policy="fixed:1",
        shadow_policies="warmcast",
        promotion_auto="true",
        promotion_waste_tolerance=2.0,  # it keeps models about twice as long as fixed:1
        checkpoint_key=CHECKPOINT_KEY,
    )
    broken = start(
        kafka_bootstrap, tmp_path / "broken", rolling, policy="fixed:1", shadow_policies="hybrid"
    )
    try:
        events = periodic(models=40, hours=2.0)
        await asyncio.gather(
            send_usage(kafka_bootstrap, promoting, events),
            send_usage(kafka_bootstrap, rolling, events[: len(events) // 2]),
        )
        seen = await consume(
            kafka_bootstrap, [topic(promoting, "alerts")], lambda rs: bool(changes(rs)), 120
        )
        (promoted,) = changes(seen)
        assert promoted.kind == "policy_promoted" and promoted.severity == "info"
        assert promoted.details is not None
        d = promoted.details
        assert (d["policy"], d["replaced"], d["action"]) == ("warmcast", "fixed:1", "promote")
        assert d["p_value"] is not None and float(d["p_value"]) < 0.01  # type: ignore[arg-type]
        assert d["buckets"] is not None and float(d["buckets"]) >= 6  # type: ignore[arg-type]
        assert d["policy_requests"] == d["replaced_requests"]
        assert float(d["policy_cold_pct"]) + 50 < float(d["replaced_cold_pct"])  # type: ignore[arg-type]
        assert float(d["window_last_minute"]) > float(d["window_first_minute"])  # type: ignore[arg-type]
        assert "automatic" in promoted.summary
        assert promoted.value == d["p_value"] and promoted.threshold == 0.01
        policies = orjson.loads(better.get("/policies"))
        assert policies["active"]["policy"] == "warmcast" and policies["version"] == "warmcast#1"
        assert [c["policy"] for c in policies["candidates"]] == ["fixed:1"]
        assert policies["buckets"] and policies["changes"][0]["policy"] == "warmcast"
        recent = better.health()["recent_alerts"]
        assert [a["details"]["policy"] for a in recent if a["kind"] == "policy_promoted"] == [
            "warmcast"
        ]

        seen = await consume(
            kafka_bootstrap, [topic(rolling, "alerts")], lambda rs: bool(changes(rs)), 120
        )
        (rolled,) = changes(seen)
        assert rolled.kind == "policy_rolled_back" and rolled.severity == "warning"
        assert rolled.details is not None
        r = rolled.details
        assert (r["policy"], r["replaced"]) == ("hybrid", "fixed:1")
        assert r["replaced_cold_pct"] == 100.0  # never warm
        assert float(r["statistic"]) >= 15  # type: ignore[arg-type]  # regressed minutes
        assert rolled.value == r["statistic"] and rolled.threshold == 15
        assert orjson.loads(broken.get("/policies"))["active"]["policy"] == "hybrid"
        # every event read first: fixed:1 made active again in the middle of the backlog
        # would regress on what is left of it and be rolled back once more
        sent = len(events) // 2
        wait_for(
            lambda: broken.metrics().get("warmcast_usage_events_total") == sent, 120, "the backlog"
        )

        # an operator puts the broken one back: refused without the token, done with it
        assert post(broken, "/control/promote", {"policy": "fixed:1"}, token=None)[0] == 401
        status, answer = post(broken, "/control/promote", {"policy": "fixed:1"})
        assert status == 200 and answer["applied"] and answer["version"] == "fixed:1#2"
        status, answer = post(broken, "/control/promote", {"policy": "nosuch"})
        assert status == 409 and "no shadow candidate" in answer["error"]
        # the alerts topic has a partition per usage partition: read across them, the two
        # changes come in no set order
        seen = await consume(
            kafka_bootstrap, [topic(rolling, "alerts")], lambda rs: len(changes(rs)) >= 2, 60
        )
        assert sorted(c.kind for c in changes(seen)) == ["policy_promoted", "policy_rolled_back"]
        (manual,) = (c for c in changes(seen) if c.kind == "policy_promoted")
        assert "by an operator" in manual.summary
        assert manual.details is not None and manual.details["policy"] == "fixed:1"
        assert orjson.loads(broken.get("/policies"))["previous"] == "hybrid"

        # restarted, the promoted worker comes back with warmcast active and fixed:1 beside it
        assert better.stop() == 0
        better = Worker(kafka_bootstrap, better.workdir, promoting, **better.settings).start()
        wait_for(
            lambda: orjson.loads(better.get("/policies")).get("version") == "warmcast#1",
            60,
            "the restarted worker to restore the promoted lineup",
        )
        policies = orjson.loads(better.get("/policies"))
        assert policies["active"]["policy"] == "warmcast" and policies["previous"] == "fixed:1"
        assert [c["policy"] for c in policies["candidates"]] == ["fixed:1"]
    finally:
        better.stop()
        broken.stop()
