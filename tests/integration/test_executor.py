"""``warmcast executor`` against a real MLServer (its own environment, from PyPI) and a real
broker: warmup commands on the topic become loads and unloads on the server; the server's
repository index follows the leases; the executor survives the server dying."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.control import ControlCommand
from schemas.warmup import WarmupCommand
from streams.control_auth import signed
from streams.executor.adapters import adapter_for
from streams.executor.service import Executor, serve_web
from streams.executor.settings import ExecutorSettings
from streams.settings import WarmcastSettings
from tests.integration.harness import consume, namespace, topic
from tools.mlserver import MLServer, MLServerUnavailable, ensure_venv

pytestmark = pytest.mark.integration

KEY = "the executor tests' control key, 32+ bytes"
LOAD_SECONDS = 0.3


@pytest.fixture(scope="module")
def mlserver_python() -> Any:
    """MLServer's own environment, installed from PyPI on first use (cached)."""
    try:
        return ensure_venv()
    except MLServerUnavailable as exc:
        if exc.offline:
            pytest.skip(f"PyPI is unreachable: MLServer cannot be installed ({exc})")
        raise


@pytest.fixture
def mlserver(mlserver_python: Any) -> Iterator[MLServer]:
    models = {f"m{i}": LOAD_SECONDS for i in range(6)}
    with MLServer(models) as server:
        yield server


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (which may block: it runs in a thread) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def settings(bootstrap: str, ns: str) -> WarmcastSettings:
    return WarmcastSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_namespace=ns,
        app_id=ns,
        control_key=KEY,
        partitions=2,
    )


OPTIONS = ExecutorSettings(
    resync_seconds=0.5,
    breaker_failures=2,
    breaker_cooldown_seconds=0.5,
    breaker_max_cooldown_seconds=2.0,
    attempts=2,
    retry_max_seconds=0.3,
    load_timeout_seconds=30,
    call_timeout_seconds=3,
    failed_retry_seconds=1,
    web_port=0,
)


@pytest.fixture
async def running(
    kafka_bootstrap: str, mlserver: MLServer
) -> AsyncIterator[tuple[Executor, WarmcastSettings, MLServer]]:
    ns = namespace()
    s = settings(kafka_bootstrap, ns)
    executor = Executor(adapter_for(mlserver.target), s, OPTIONS)
    await executor.start()
    try:
        await until(executor.control_read.is_set, 60, "the control history")
        yield executor, s, mlserver
    finally:
        await executor.stop()


def warm(model: str, start: float, end: float, cid: str | None = None) -> WarmupCommand:
    now = time.time()
    return WarmupCommand(
        command_id=cid or uuid.uuid4().hex,
        model_id=model,
        action="warm",
        issued_at=now,
        start=start,
        end=end,
        policy_version="test",
    )


def release(model: str) -> WarmupCommand:
    now = time.time()
    return WarmupCommand(
        command_id=uuid.uuid4().hex,
        model_id=model,
        action="release",
        issued_at=now,
        start=now,
        end=now,
        policy_version="test",
    )


async def send(s: WarmcastSettings, *commands: WarmupCommand) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    await producer.start()
    try:
        for c in commands:
            await producer.send_and_wait(
                s.topic("warmup"), c.model_dump_json().encode(), key=c.model_id.encode()
            )
    finally:
        await producer.stop()


async def control(s: WarmcastSettings, action: str, key: str | None = KEY, **kw: Any) -> None:
    cmd = ControlCommand.model_validate({"command": action, **kw})
    if key is None:
        value, headers = cmd.model_dump_json().encode(), []
    else:
        value, headers = signed(cmd, key.encode())
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(s.topic("control"), value, partition=0, headers=headers)
    finally:
        await producer.stop()


def count(executor: Executor, outcome: str) -> float:
    return float(executor.metrics.commands.labels(outcome=outcome)._value.get())


async def test_leases_become_loads_and_unloads(
    running: tuple[Executor, WarmcastSettings, MLServer],
) -> None:
    executor, s, server = running
    now = time.time()
    long_lease = warm("m0", now, now + 600, cid="long-m0")
    await send(
        s,
        long_lease,
        long_lease,  # a duplicate: ignored
        warm("m1", now, now + 4),  # ends soon: unloaded at its end
        warm("m2", now, now + 600),
        warm("m3", now + 3600, now + 7200),  # not yet: not loaded
    )
    await until(lambda: server.ready_models() == {"m0", "m1", "m2"}, 60, "m0, m1, m2 loaded")
    assert count(executor, "duplicate") == 1
    await send(s, release("m2"))
    await until(lambda: server.ready_models() == {"m0"}, 60, "m1 ended, m2 released")
    # the index sampled matches the leases in force
    assert server.ready_models() == executor.book.leased(time.time())
    assert executor.metrics.loads._value.get() == 3
    assert executor.metrics.unloads._value.get() == 2
    # every load's wall time is a metric event on the metrics topic
    records = await consume(
        s.kafka_bootstrap_servers or "",
        [s.topic("metrics")],
        lambda rs: len(rs) >= 3,
        timeout=60,
    )
    events = [orjson.loads(r.value) for r in records]
    assert {e["model_id"] for e in events} == {"m0", "m1", "m2"}
    assert {e["name"] for e in events} == {"load_time_seconds"}
    assert all(e["value"] >= LOAD_SECONDS for e in events)
    # and /metrics says so
    runner = await serve_web(executor, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    finally:
        await runner.cleanup()
    assert "warmcast_executor_loads_total 3.0" in text
    assert "warmcast_executor_load_seconds_count 3.0" in text
    assert "warmcast_executor_models_loaded 1.0" in text


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_unknown_model_is_a_failed_load_with_an_alert(
    running: tuple[Executor, WarmcastSettings, MLServer],
) -> None:
    executor, s, server = running
    now = time.time()
    await send(s, warm("not-in-the-repository", now, now + 600), warm("m4", now, now + 600))
    await until(lambda: server.ready_models() == {"m4"}, 60, "m4 loaded")
    records = await consume(
        s.kafka_bootstrap_servers or "",
        [s.topic("alerts"), s.topic("metrics")],
        lambda rs: (
            any(b"model_load_failed" in r.value for r in rs)
            and any(b"load_failures" in r.value for r in rs)
        ),
        timeout=60,
    )
    alert = next(orjson.loads(r.value) for r in records if b"model_load_failed" in r.value)
    assert alert["subject"] == "not-in-the-repository" and alert["state"] == "firing"
    assert executor.breaker.state == "closed"  # the server answered: it is not failing


@pytest.mark.timeout(600)  # a real server restarted beside a JVM broker: minutes when loaded
async def test_mlserver_killed_and_restarted(
    running: tuple[Executor, WarmcastSettings, MLServer],
) -> None:
    executor, s, server = running
    now = time.time()
    await send(s, warm("m0", now, now + 600))
    await until(lambda: server.ready_models() == {"m0"}, 60, "m0 loaded")
    await asyncio.to_thread(server.kill)
    await until(lambda: executor.breaker.state != "closed", 60, "the circuit to open")
    now = time.time()
    await send(s, warm("m1", now, now + 600))  # while the server is down
    await until(lambda: "m1" in executor.book.models, 60, "m1 booked")
    before, asked = executor.reconciles, executor.resyncs
    await until(lambda: executor.resyncs - asked >= 4, 60, "four looks at the index")
    # an open circuit is waited out, not spun on: a plan per probe or so, not thousands
    assert executor.reconciles - before < 100
    await asyncio.to_thread(server.start)
    # a restarted server holds nothing: both leases are carried out again
    await until(lambda: server.ready_models() == {"m0", "m1"}, 90, "m0 and m1 loaded again")
    await until(lambda: executor.breaker.state == "closed", 30, "the circuit to close")
    records = await consume(
        s.kafka_bootstrap_servers or "",
        [s.topic("alerts")],
        lambda rs: {orjson.loads(r.value)["state"] for r in rs} >= {"firing", "resolved"},
        timeout=60,
    )
    alerts = [orjson.loads(r.value) for r in records]
    circuit = [a for a in alerts if a["kind"] == "executor_circuit_open"]
    assert [a["state"] for a in circuit] == ["firing", "resolved"]
    assert circuit[0]["subject"] == server.target and circuit[0]["severity"] == "critical"
    assert server.ready_models() == executor.book.leased(time.time())


async def test_emergency_stop_only_when_signed(
    running: tuple[Executor, WarmcastSettings, MLServer],
) -> None:
    executor, s, server = running
    await control(s, "emergency_stop", key=None)  # unsigned: refused
    await control(s, "emergency_stop", key="somebody else's key, 32+ bytes long")
    await until(
        lambda: (
            executor.metrics.control_refused.labels(reason="unsigned")._value.get() == 1
            and executor.metrics.control_refused.labels(reason="bad_signature")._value.get() == 1
        ),
        60,
        "the forged stops refused",
    )
    assert not executor.stopped
    await control(s, "emergency_stop")
    await until(lambda: executor.stopped, 60, "the signed stop")
    now = time.time()
    await send(s, warm("m5", now, now + 600))
    await until(lambda: "m5" in executor.book.models, 60, "m5 booked")
    executor.reconcile_once()
    assert "m5" not in executor.in_flight and "m5" not in server.ready_models()
    await control(s, "resume")
    await until(lambda: server.ready_models() == {"m5"}, 60, "m5 loaded after resume")
    # a stop with release also unloads what the executor keeps loaded
    await control(s, "emergency_stop", release=True)
    await until(lambda: server.ready_models() == set(), 60, "m5 unloaded by the stop")
    assert executor.book.live("m5", time.time())  # its lease stands: loaded after resume


async def test_leases_rebuilt_after_a_restart(kafka_bootstrap: str, mlserver: MLServer) -> None:
    ns = namespace()
    s = settings(kafka_bootstrap, ns)
    first = Executor(adapter_for(mlserver.target), s, OPTIONS)
    await first.start()
    now = time.time()
    try:
        await send(s, warm("m0", now, now + 600), warm("m1", now, now + 600))
        await until(lambda: mlserver.ready_models() == {"m0", "m1"}, 60, "m0, m1 loaded")
    finally:
        await first.stop()
    await send(s, release("m1"))  # while no executor runs
    second = Executor(adapter_for(mlserver.target), s, OPTIONS)
    await second.start()
    try:
        await until(second.rebuilt.is_set, 60, "the leases rebuilt")
        await until(lambda: mlserver.ready_models() == {"m0"}, 60, "m1 unloaded, m0 kept")
        assert second.book.leased(time.time()) == {"m0"}
        assert second.metrics.loads._value.get() == 0  # m0 was loaded already: kept
    finally:
        await second.stop()
    assert topic(ns, "warmup") == s.topic("warmup")


async def test_undecodable_warmup_records_are_dead_lettered(
    running: tuple[Executor, WarmcastSettings, MLServer],
) -> None:
    executor, s, server = running
    bootstrap = s.kafka_bootstrap_servers or ""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(s.topic("warmup"), b"{not json", key=b"m5", partition=0)
        wrong = orjson.dumps({"model_id": "m5", "action": "explode"})
        await producer.send_and_wait(s.topic("warmup"), wrong, key=b"m5", partition=0)
    finally:
        await producer.stop()
    now = time.time()
    await send(s, warm("m5", now, now + 600))  # the executor goes on with the next command
    await until(lambda: server.ready_models() == {"m5"}, 60, "m5 loaded")
    letters = await consume(bootstrap, [s.topic("warmup") + ".dlq"], lambda rs: len(rs) >= 2)
    by_reason = {dict(r.headers)["warmcast.error-reason"].decode(): r for r in letters}
    assert set(by_reason) == {"malformed_json", "schema_violation"}
    assert by_reason["malformed_json"].value == b"{not json"
    assert by_reason["schema_violation"].value == wrong
    headers = dict(by_reason["schema_violation"].headers)
    assert headers["warmcast.original-topic"] == s.topic("warmup").encode()
    assert headers["warmcast.original-partition"] == b"0"
    assert b"action" in headers["warmcast.error-message"]
    assert count(executor, "invalid") == 2
    text = executor.metrics_text().decode()
    assert 'warmcast_executor_dead_letters_total{reason="malformed_json"} 1.0' in text
    assert 'warmcast_executor_dead_letters_total{reason="schema_violation"} 1.0' in text
