"""Operator controls over HTTP and on the control topic: emergency stop (with release),
resume, reset to safe, snapshot and restore, each acknowledged on the alerts topic; the
mode survives a restart; bad commands are refused or dead-lettered (forged ones:
test_control_signing.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.control_auth import SIGNATURE_HEADER, sign
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage, wait_for

pytestmark = pytest.mark.integration

TOKEN = "a control token for the tests"
KEY = "a checkpoint key for the control tests"
CONTROL_KEY = "a control key for the control tests"
PASSWORD = "a SASL password for the tests"  # set, unused on a plaintext broker
T0 = 1_700_000_040.0


def call(
    worker: Worker, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, dict[str, Any]]:
    """An HTTP request to the worker: status and JSON answer."""
    data = body if isinstance(body, bytes) else (None if body is None else orjson.dumps(body))
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=data, method=method
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(orjson.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(orjson.loads(raw)) if raw.startswith(b"{") else {"raw": raw}


def commands(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def control_alerts(records: list[Any]) -> dict[str, list[str]]:
    """States of the control acknowledgements, in order per subject (one partition)."""
    out: dict[str, list[str]] = {}
    for doc in (orjson.loads(r.value) for r in records):
        if doc["kind"] == "control":
            out.setdefault(doc["subject"].split("/", 1)[1], []).append(doc["state"])
    return out


async def produce_signed(bootstrap: str, topic_name: str, values: list[bytes]) -> None:
    """Records on partition 0, each signed with the control key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            headers = [(SIGNATURE_HEADER, sign(value, CONTROL_KEY.encode()))]
            await producer.send_and_wait(topic_name, value, partition=0, headers=headers)
    finally:
        await producer.stop()


async def send_usage(bootstrap: str, ns: str, *events: tuple[str, float]) -> None:
    messages: list[tuple[bytes | None, bytes]] = [
        (m.encode(), orjson.dumps(usage(m, ts))) for m, ts in events
    ]
    await produce(bootstrap, topic(ns, "usage"), messages)


def start(bootstrap: str, tmp_path: Path, ns: str) -> Worker:
    return Worker(
        bootstrap,
        tmp_path,
        ns,
        policy="hybrid",
        control_token=TOKEN,
        checkpoint_key=KEY,
        control_key=CONTROL_KEY,
        kafka_sasl_password=PASSWORD,
        alert_check_seconds=0.5,
        alerts_disabled="insufficient_volume,health_degraded,stale_data",
    ).start()


async def test_operator_controls(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = namespace()
    bootstrap = kafka_bootstrap
    worker = start(bootstrap, tmp_path, ns)
    warmup, alerts = [topic(ns, "warmup")], [topic(ns, "alerts")]
    try:
        assert call(worker, "GET", "/control", token=None)[0] == 401
        assert call(worker, "GET", "/control", token="not the token")[0] == 401
        status, doc = call(worker, "GET", "/control")
        assert status == 200 and doc["paused"] is False and doc["checkpoints"]["enabled"]

        await send_usage(bootstrap, ns, ("llama", T0), ("sdxl", T0))
        await consume(bootstrap, warmup, lambda rs: len(rs) >= 2)

        status, doc = call(worker, "POST", "/control/emergency-stop", {"release": True})
        assert status == 200 and doc["applied"] and doc["paused"] and doc["released"] == 2
        await send_usage(bootstrap, ns, ("whisper", T0 + 60), ("llama", T0 + 60))
        wait_for(lambda: worker.metrics().get("warmcast_usage_events_total") == 4, 30, "4 events")
        status, doc = call(worker, "POST", "/control/resume")
        assert status == 200 and doc["paused"] is False
        await send_usage(bootstrap, ns, ("whisper", T0 + 120))
        seen = await consume(
            bootstrap,
            warmup,
            lambda rs: any(c["model_id"] == "whisper" for c in commands(rs)),
        )
        actions: dict[str, list[str]] = {}
        for c in commands(seen):  # in order per served model (one partition each)
            actions.setdefault(c["model_id"], []).append(c["action"])
        assert actions == {  # nothing warmed while stopped
            "llama": ["warm", "release"],
            "sdxl": ["warm", "release"],
            "whisper": ["warm"],
        }

        status, doc = call(worker, "POST", "/control/reset-to-safe")
        assert status == 200 and doc["safe_mode"] and doc["policy"] == "fixed:10"
        await send_usage(bootstrap, ns, ("phi", T0 + 180))
        seen = await consume(
            bootstrap, warmup, lambda rs: any(c["model_id"] == "phi" for c in commands(rs))
        )
        assert [c["policy_version"] for c in commands(seen) if c["model_id"] == "phi"] == [
            "fixed-10/1"
        ]
        call(worker, "POST", "/control/resume")
        await send_usage(bootstrap, ns, ("qwen", T0 + 240))
        seen = await consume(
            bootstrap, warmup, lambda rs: any(c["model_id"] == "qwen" for c in commands(rs))
        )
        assert [c["policy_version"] for c in commands(seen) if c["model_id"] == "qwen"] == [
            "hybrid/1"
        ]

        status, doc = call(worker, "POST", "/control/snapshot", {"name": "before-upgrade"})
        assert status == 200 and doc["written"] == doc["partitions"] == [0, 1]
        status, doc = call(worker, "POST", "/control/restore", {"name": "before-upgrade"})
        assert status == 200 and doc["restored"] == [0, 1] and doc["missing"] == []
        status, doc = call(worker, "POST", "/control/restore", {"name": "never-taken"})
        assert status == 404 and not doc["applied"] and doc["missing"] == [0, 1]
        assert call(worker, "GET", "/control")[1]["checkpoints"]["snapshots"] == ["before-upgrade"]

        assert call(worker, "POST", "/control/snapshot", {"name": "../etc"})[0] == 422
        assert call(worker, "POST", "/control/snapshot", {})[0] == 422
        assert call(worker, "POST", "/control/resume", {"release": "maybe"})[0] == 422
        assert call(worker, "POST", "/control/resume", b"[1, 2]")[0] == 400
        assert call(worker, "POST", "/control/resume", b"{not json")[0] == 400
        assert call(worker, "POST", "/control/resume", b" " * 5000)[0] == 413
        assert call(worker, "POST", "/control/self-destruct")[0] == 404
        assert call(worker, "POST", "/control/resume", token=None)[0] == 401

        garbage = [b"{not json", orjson.dumps({"command": "rm -rf"}), b"x" * 5000]
        await produce_signed(bootstrap, topic(ns, "control"), garbage)
        letters = await consume(bootstrap, [topic(ns, "control") + ".dlq"], lambda rs: len(rs) >= 3)
        reasons = sorted(dict(r.headers)["warmcast.error-reason"].decode() for r in letters)
        assert reasons == ["malformed_json", "oversize", "schema_violation"]

        seen = await consume(
            bootstrap,
            alerts,
            lambda rs: sum(map(len, control_alerts(rs).values())) >= 7,
        )
        assert control_alerts(seen) == {
            "emergency_stop": ["firing", "resolved", "resolved"],
            "safe_mode": ["firing", "resolved"],
            "snapshot/before-upgrade": ["resolved"],
            "restore/before-upgrade": ["resolved"],
        }
        assert call(worker, "POST", "/control/emergency-stop")[1]["paused"]
    finally:
        assert worker.stop() == 0

    restarted = start(bootstrap, tmp_path, ns)
    try:
        status, doc = call(restarted, "GET", "/control")
        assert doc["paused"] is True and doc["safe_mode"] is False  # the stop holds
        firing = [a["kind"] for a in restarted.health()["alerts_firing"]]
        assert "control" in firing
        await send_usage(bootstrap, ns, ("mistral", T0 + 300))
        wait_for(
            lambda: restarted.metrics().get("warmcast_usage_events_total") == 1, 30, "an event"
        )
        assert restarted.metrics()['warmcast_warmup_commands_total{action="warm"}'] == 0
        log = restarted.log.read_text() + worker.log.read_text()
        assert "checkpoints on" in log
        for secret in (TOKEN, KEY, CONTROL_KEY, PASSWORD):
            assert secret not in log
    finally:
        restarted.stop()
