"""Nobody forges a control: only records signed with the control key, fresh, used once and
on partition 0 are carried out; anything else is counted, dead-lettered and alerted. The
history a worker reads at start is taken in offset order, under the same rules. The HTTP
endpoints set ``issued_by`` themselves, refuse a re-used command id at once and answer 404
for a snapshot that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.control import ControlCommand
from streams.control_auth import SIGNATURE_HEADER, sign, signed
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

pytestmark = pytest.mark.integration

TOKEN = "a control token for the signing tests"
KEY = "a control key of the signing tests, 32+ bytes"
OTHER_KEY = "somebody else's key, also 32+ bytes long"
T0 = 1_700_000_040.0
YEAR_2100 = 4_102_444_800.0
#: A record: value, headers, partition, Kafka timestamp (ms; None: now).
Record = tuple[bytes, list[tuple[str, bytes]], int, int | None]


def start(bootstrap: str, tmp_path: Path, ns: str, **settings: Any) -> Worker:
    base: dict[str, Any] = {
        "policy": "hybrid",
        "control_token": TOKEN,
        "control_key": KEY,
        "alert_check_seconds": 0.5,
        "alerts_disabled": "insufficient_volume,health_degraded,stale_data",
    }
    chosen = {k: v for k, v in {**base, **settings}.items() if v is not None}
    return Worker(bootstrap, tmp_path, ns, **chosen).start()


def call(worker: Worker, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}{path}", data=data, method=method
    )
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(orjson.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(orjson.loads(exc.read()))


def command(action: str, key: str | None = KEY, **fields: Any) -> Record:
    """A control record of ``action``, signed with ``key`` (``None``: unsigned)."""
    cmd = ControlCommand.model_validate({"command": action, **fields})
    if key is None:
        return cmd.model_dump_json().encode(), [], 0, None
    value, headers = signed(cmd, key.encode())
    return value, headers, 0, None


async def send(bootstrap: str, ns: str, *records: Record, compression: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
    await producer.start()
    try:
        for value, headers, partition, timestamp_ms in records:
            await producer.send_and_wait(
                topic(ns, "control"),
                value,
                key=b"control",
                partition=partition,
                timestamp_ms=timestamp_ms,
                headers=headers,
            )
    finally:
        await producer.stop()


async def send_usage(bootstrap: str, ns: str, *events: tuple[str, float]) -> None:
    messages: list[tuple[bytes | None, bytes]] = [
        (m.encode(), orjson.dumps(usage(m, ts))) for m, ts in events
    ]
    await produce(bootstrap, topic(ns, "usage"), messages)


def refused(worker: Worker, reason: str) -> float:
    return worker.metrics().get(f'warmcast_control_rejected_total{{reason="{reason}"}}', -1.0)


def wait_refused(worker: Worker, **counts: int) -> None:
    for reason, n in counts.items():
        wait_for(lambda r=reason, n=n: refused(worker, r) == n, 60, f"{n} refused as {reason}")


def paused(worker: Worker) -> bool:
    return bool(call(worker, "GET", "/control")[1]["paused"])


def warmup_actions(records: list[Any]) -> list[tuple[str, str]]:
    return [(d["model_id"], d["action"]) for d in (orjson.loads(r.value) for r in records)]


def alert_states(records: list[Any], kind: str) -> list[str]:
    docs = (orjson.loads(r.value) for r in records)
    return [d["state"] for d in docs if d["kind"] == kind]


async def test_forged_emergency_stops_have_no_effect(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = namespace()
    worker = start(kafka_bootstrap, tmp_path, ns)
    warmup = [topic(ns, "warmup")]
    try:
        await send_usage(kafka_bootstrap, ns, ("llama", T0), ("sdxl", T0))
        await consume(kafka_bootstrap, warmup, lambda rs: len(rs) >= 2)

        await send(
            kafka_bootstrap,
            ns,
            command("emergency_stop", key=None, release=True),  # unsigned
            command("emergency_stop", key=OTHER_KEY, release=True),  # badly signed
        )
        wait_refused(worker, unsigned=1, bad_signature=1)
        assert not paused(worker)
        alerts = await consume(
            kafka_bootstrap,
            [topic(ns, "alerts")],
            lambda rs: "firing" in alert_states(rs, "control_rejected"),
        )
        assert alert_states(alerts, "control") == []  # nothing was carried out
        assert "control_rejected" in {a["kind"] for a in worker.health()["alerts_firing"]}

        await send_usage(kafka_bootstrap, ns, ("whisper", T0 + 60))
        seen = await consume(
            kafka_bootstrap, warmup, lambda rs: ("whisper", "warm") in warmup_actions(rs)
        )
        assert not [a for a in warmup_actions(seen) if a[1] == "release"]  # the worker warms on
        letters = await consume(
            kafka_bootstrap, [topic(ns, "control") + ".dlq"], lambda rs: len(rs) >= 2
        )
        reasons = sorted(dict(r.headers)["warmcast.error-reason"].decode() for r in letters)
        assert reasons == ["bad_signature", "unsigned"]
    finally:
        assert worker.stop() == 0


async def test_compressed_control_records_are_judged_as_plain_ones(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A gzip batch of control records: the signed stop in it is carried out, the forged
    and the replayed ones beside it are refused, as they would be uncompressed."""
    ns = namespace()
    worker = start(kafka_bootstrap, tmp_path, ns)
    try:
        stop = command("emergency_stop")
        await send(
            kafka_bootstrap,
            ns,
            command("emergency_stop", key=None, release=True),
            stop,
            stop,
            command("emergency_stop", key=OTHER_KEY, release=True),
            compression="gzip",
        )
        wait_for(lambda: paused(worker), 30, "the signed stop in the gzip batch")
        wait_refused(worker, unsigned=1, bad_signature=1, replayed=1)
        assert call(worker, "GET", "/control")[1]["commands_applied"] == 1
        history = await consume(kafka_bootstrap, [topic(ns, "control")], lambda rs: len(rs) >= 4)
        assert [r.value for r in history].count(stop[0]) == 2  # all four were on the topic
    finally:
        assert worker.stop() == 0


async def test_replayed_stale_and_misplaced_records_are_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    worker = start(kafka_bootstrap, tmp_path, ns)
    key_file = tmp_path / "control.key"
    key_file.write_text(KEY + "\n")
    try:
        cli = subprocess.run(
            [sys.executable, "-m", "tools.cli", "control", "emergency-stop"],
            cwd=REPO,
            env={
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "WARMCAST_TOPIC_NAMESPACE": ns,
                "WARMCAST_CONTROL_KEY_FILE": str(key_file),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert orjson.loads(cli.stdout)["issued_by"].startswith("cli ")
        wait_for(lambda: paused(worker), 30, "the CLI's emergency stop")
        status, doc = call(worker, "POST", "/control/resume")
        assert status == 200 and doc["applied"] and not paused(worker)

        history = await consume(kafka_bootstrap, [topic(ns, "control")], lambda rs: len(rs) >= 2)
        stop = next(r for r in history if b"emergency_stop" in r.value)
        assert dict(stop.headers)[SIGNATURE_HEADER] == sign(stop.value, KEY.encode())
        now = time.time()
        misplaced = command("emergency_stop")
        await send(
            kafka_bootstrap,
            ns,
            (stop.value, list(stop.headers), 0, None),  # the genuine record, once more
            command("emergency_stop", ts=now - 3600),
            command("emergency_stop", ts=YEAR_2100),
            (misplaced[0], misplaced[1], 1, None),
        )
        wait_refused(worker, replayed=1, stale=1, future=1, wrong_partition=1)
        assert not paused(worker)
        assert call(worker, "GET", "/control")[1]["commands_applied"] == 2
    finally:
        assert worker.stop() == 0


async def test_history_is_taken_in_offset_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    """After a restart the last genuine command holds: not a stop whose Kafka timestamp
    is later than the resume written after it (50 minutes ahead, which every broker
    accepts; year 2100 alike), nor a genuine stop written again after the resume."""
    ns = namespace()
    control = [topic(ns, "control")]
    worker = start(kafka_bootstrap, tmp_path, ns)
    try:
        status, doc = call(worker, "POST", "/control/emergency-stop")
        assert status == 200 and doc["applied"]
        first = (await consume(kafka_bootstrap, control, lambda rs: len(rs) >= 1))[0]
        genuine = command("emergency_stop")
        forged = command("emergency_stop", key=None, release=True)
        later_ms = int((time.time() + 3000) * 1000)
        await send(
            kafka_bootstrap,
            ns,
            (genuine[0], genuine[1], 0, later_ms),
            (forged[0], forged[1], 0, later_ms),
        )
        wait_for(lambda: call(worker, "GET", "/control")[1]["commands_applied"] == 2, 30, "2")
        wait_refused(worker, unsigned=1)
        status, doc = call(worker, "POST", "/control/resume")
        assert status == 200 and doc["applied"] and not paused(worker)
        await send(kafka_bootstrap, ns, (first.value, list(first.headers), 0, None))
        wait_refused(worker, replayed=1)
        assert not paused(worker)
    finally:
        assert worker.stop() == 0
    restarted = start(kafka_bootstrap, tmp_path, ns)
    try:
        assert not paused(restarted)
        assert refused(restarted, "unsigned") == refused(restarted, "replayed") == 1
        assert "control history: 5 records, 2 refused; stopped=False" in restarted.log.read_text()
    finally:
        restarted.stop()


async def test_http_controls_answer_plainly(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = namespace()
    worker = start(kafka_bootstrap, tmp_path, ns, checkpoint_key="a checkpoint key, 32+ bytes long")
    try:
        for field in ({"issued_by": "mallory"}, {"ts": 4_000_000_000}):
            status, doc = call(worker, "POST", "/control/emergency-stop", field)
            assert status == 422 and "set by the worker" in doc["error"]
        assert not paused(worker)

        status, doc = call(worker, "POST", "/control/emergency-stop", {"id": "op-1"})
        assert status == 200 and doc["applied"] and doc["id"] == "op-1"
        status, doc = call(worker, "POST", "/control/resume", {"id": "op-1"})
        assert status == 409 and doc["applied"] is False
        assert doc["earlier"]["command"] == "emergency_stop" and "used before" in doc["error"]
        assert paused(worker)  # the resume was not carried out

        status, doc = call(worker, "POST", "/control/restore", {"name": "never-taken"})
        assert status == 404 and doc["applied"] is False and "no snapshot" in doc["error"]

        alerts = await consume(
            kafka_bootstrap,
            [topic(ns, "alerts")],
            lambda rs: "firing" in alert_states(rs, "control"),
        )
        notes = [orjson.loads(r.value)["summary"] for r in alerts]
        assert any("by http 127.0.0.1" in n for n in notes), notes
        assert not any("mallory" in n for n in notes)
    finally:
        assert worker.stop() == 0


async def test_without_a_control_key_no_record_is_carried_out(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    worker = start(kafka_bootstrap, tmp_path, ns, control_key=None)
    try:
        assert call(worker, "GET", "/control")[0] == 200
        status, doc = call(worker, "POST", "/control/emergency-stop")
        assert status == 404 and "WARMCAST_CONTROL_KEY" in doc["error"]
        await send(kafka_bootstrap, ns, command("emergency_stop"), command("reset_to_safe", None))
        wait_refused(worker, no_key=2)
        doc = call(worker, "GET", "/control")[1]
        assert doc["paused"] is False and doc["safe_mode"] is False
        assert "operator controls are off (no WARMCAST_CONTROL_KEY)" in worker.log.read_text()
    finally:
        assert worker.stop() == 0
