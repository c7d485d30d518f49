"""The broker stops answering (SIGSTOP) and comes back (SIGCONT): the worker stays up,
raises ``broker_unreachable`` while the broker is away and resolves it after, and then
processes every usage event produced, those sent during the pause included.

The pause is ``WARMCAST_BROKER_PAUSE_SECONDS`` (8 s in the normal suite; 30 s for the
long run). This test runs a broker of its own, of the run's kind (``own_broker``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import LocalBroker
from streams.partitioning import partition_for
from tests.integration.harness import Worker, consume, namespace, topic, usage, wait_for

pytestmark = pytest.mark.integration

PAUSE = float(os.environ.get("WARMCAST_BROKER_PAUSE_SECONDS", "8"))
T0 = 1_700_000_040.0


def health(worker: Worker) -> dict[str, Any]:
    try:
        return worker.health()
    except urllib.error.HTTPError as exc:  # 503 while rebalancing
        return dict(orjson.loads(exc.read()))


def firing(worker: Worker) -> set[str]:
    return {a["kind"] for a in health(worker)["alerts_firing"]}


MODELS = {
    p: [m for m in (f"m{i}" for i in range(100)) if partition_for(m, 2) == p][:10] for p in (0, 1)
}


def batch(start: int, n: int) -> list[tuple[int, bytes]]:
    """``n`` envelopes of 10 usage events, each of the served models of one partition."""
    return [
        ((start + i) % 2, orjson.dumps([usage(m, T0 + start + i) for m in MODELS[(start + i) % 2]]))
        for i in range(n)
    ]


async def test_worker_rides_out_a_paused_broker(own_broker: LocalBroker, tmp_path: Path) -> None:
    broker = own_broker
    ns = namespace()
    usage_topic = topic(ns, "usage")
    worker = Worker(
        broker.bootstrap,
        tmp_path,
        ns,
        policy="hybrid",
        checkpoint_key="a checkpoint key of the broker pause test",
        checkpoint_interval_seconds=2,
        broker_stall_seconds=3,
        alert_check_seconds=0.5,
        alert_for_seconds=0,
        alert_keep_firing_seconds=0,
        alerts_disabled="insufficient_volume,health_degraded,stale_data",
    ).start()
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        request_timeout_ms=int((PAUSE + 60) * 1000),
        linger_ms=5,
    )
    await producer.start()
    try:
        before, during = batch(0, 100), batch(100, 100)
        for partition, value in before:
            await producer.send(usage_topic, value, partition=partition)
        await producer.flush()
        wait_for(
            lambda: worker.metrics().get("warmcast_usage_events_total") == 1000,
            30,
            "the events before the pause",
        )
        assert call_control(worker) == 404  # no token: the controls are off

        pids = broker.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            sending = asyncio.ensure_future(send_all(producer, usage_topic, during))
            await asyncio.to_thread(
                wait_for,
                lambda: "broker_unreachable" in firing(worker),
                PAUSE + 10,
                "broker_unreachable to fire while the broker is stopped",
            )
            noticed = time.monotonic() - stopped
            await asyncio.sleep(max(PAUSE - (time.monotonic() - stopped), 0))  # the fault
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(sending, PAUSE + 60)
    finally:
        await producer.stop()
    resumed = time.monotonic()
    assert noticed < PAUSE

    metrics = wait_for(
        lambda: (m := worker.metrics()).get("warmcast_usage_events_total") == 2000 and m,
        90,
        "every event, those sent during the pause included",
    )
    assert metrics[f'warmcast_messages_consumed_total{{topic="{usage_topic}"}}'] == 200
    assert not any(k.startswith("warmcast_dead_letters_total{") and v for k, v in metrics.items())
    caught_up = time.monotonic() - resumed
    wait_for(lambda: "broker_unreachable" not in firing(worker), 30, "the alert to resolve")
    print(
        f"broker paused {PAUSE:.0f}s: alert after {noticed:.1f}s, every event processed "
        f"{caught_up:.1f}s after it came back"
    )
    seen = await consume(
        broker.bootstrap,
        [topic(ns, "alerts")],
        lambda rs: ("broker_unreachable", "resolved") in transitions(rs),
    )
    states = [s for k, s in transitions(seen) if k == "broker_unreachable"]
    assert states == ["firing", "resolved"]
    assert worker.process is not None and worker.process.poll() is None
    worker.stop()


async def send_all(
    producer: AIOKafkaProducer, topic_name: str, values: list[tuple[int, bytes]]
) -> None:
    for partition, value in values:
        await producer.send(topic_name, value, partition=partition)
    await producer.flush()


def transitions(records: list[Any]) -> list[tuple[str, str]]:
    return [(d["kind"], d["state"]) for d in (orjson.loads(r.value) for r in records)]


def call_control(worker: Worker) -> int:
    try:
        worker.get("/control")
    except urllib.error.HTTPError as exc:
        assert b"operator controls are off" in exc.read()
        return exc.code
    return 200
