"""Faust's processing guarantees on Apache Kafka with warmcast's agents: duplicates after a
worker is killed with SIGKILL mid-stream and started again.

Each usage event names a served model of its own, so each must come out as one warm
command. The stream runs through a worker with Faust's ``at_least_once`` (warmcast's) and
then with ``exactly_once``; the worker is killed ``KILL_AFTER`` seconds into the stream and
started again at once. The commands are read twice, ``read_uncommitted`` and
``read_committed``; on the health topic, each served model's health changes once, so a
second snapshot of a model is a duplicate. Each run prints its figures.

Under both guarantees no command may be missing. Only the figures say whether
``exactly_once`` removes the duplicates: warmcast's agents publish through their own
sender (``streams/sending.py``), outside the transactions Faust opens per partition.

These tests run only when the run's broker is Apache Kafka (``WARMCAST_TEST_BROKER=kafka``):
the guarantee is measured where users run it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.integration.harness import Worker, namespace, topic, usage, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.environ.get("WARMCAST_TEST_BROKER", "").lower() != "kafka",
        reason="measured on Apache Kafka (WARMCAST_TEST_BROKER=kafka)",
    ),
]

T0 = 1_700_000_040.0
RATE = 100  # usage events per second
EVENTS = RATE * 20
KILL_AFTER = 8.0  # seconds into the stream
PARTITIONS = 2  # the harness's workers' (WARMCAST_PARTITIONS)


@dataclass
class Figures:
    guarantee: str
    sent: int
    commands: dict[str, tuple[int, int]]  # isolation -> (records, distinct command ids)
    missing: dict[str, int]  # isolation -> models without a command
    health: tuple[int, int]  # (records, served models)

    def __str__(self) -> str:
        parts = [f"{self.guarantee}: {self.sent} events"]
        for isolation, (records, ids) in self.commands.items():
            parts.append(
                f"{isolation}: {ids} commands in {records} records ({records - ids} duplicates, "
                f"{self.missing[isolation]} missing)"
            )
        records, distinct = self.health
        parts.append(f"health: {records} records ({records - distinct} duplicates)")
        return "; ".join(parts)


async def send(bootstrap: str, usage_topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        start = time.monotonic()
        pending = []
        for i in range(EVENTS):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            model = f"m{i}"
            event = orjson.dumps(usage(model, T0 + i / RATE))
            pending.append(await producer.send(usage_topic, event, key=model.encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, name: str, isolation: str) -> list[tuple[bytes, bytes]]:
    """Every record of ``name`` up to its end (under ``isolation``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[tuple[bytes, bytes]] = []
    try:
        parts = [TopicPartition(name, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + 120

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            assert time.monotonic() < deadline, f"{name} not read to its end in 120 s"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                values.extend((r.key, r.value) for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


async def run(bootstrap: str, tmp_path: Path, guarantee: str) -> Figures:
    ns = namespace()
    tmp_path.mkdir(parents=True, exist_ok=True)

    def worker() -> Worker:
        return Worker(
            bootstrap,
            tmp_path,
            ns,
            module="tests.integration.guaranteed_worker",
            environment={"GUARANTEE": guarantee},
            policy="fixed:10",
            health_flush_seconds=1,
            health_snapshot_seconds=1,
        )

    first = worker().start()
    sender = asyncio.ensure_future(send(bootstrap, topic(ns, "usage")))
    try:
        await asyncio.sleep(KILL_AFTER)
    finally:
        first.stop(signal.SIGKILL)
    second = worker().start()
    try:
        await asyncio.wait_for(sender, 120)
        wait_for(
            lambda: (
                second.metrics().get("warmcast_consumer_lag_messages", 1) == 0
                and second.metrics().get("warmcast_usage_events_total", 0) > 0
            ),
            180,
            "the second worker to catch up",
        )
        models = {f"m{i}" for i in range(EVENTS)}
        commands: dict[str, tuple[int, int]] = {}
        missing: dict[str, int] = {}
        for isolation in ("read_uncommitted", "read_committed"):

            async def decoded(iso: str = isolation) -> list[dict[str, str]]:
                return [
                    orjson.loads(v) for _, v in await read_all(bootstrap, topic(ns, "warmup"), iso)
                ]

            got = await decoded()
            if isolation == "read_uncommitted":  # the second worker may still be writing
                deadline = time.monotonic() + 120
                while models - {c["model_id"] for c in got} and time.monotonic() < deadline:
                    await asyncio.sleep(1.0)
                    got = await decoded()
            commands[isolation] = (len(got), len({c["command_id"] for c in got}))
            missing[isolation] = len(models - {c["model_id"] for c in got})
        health = await read_all(bootstrap, topic(ns, "health"), "read_uncommitted")
        keys = {key for key, _ in health}
        return Figures(guarantee, EVENTS, commands, missing, (len(health), len(keys)))
    finally:
        second.stop()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_duplicates_after_a_killed_worker(
    kafka_bootstrap: str, tmp_path: Path, guarantee: str
) -> None:
    figures = await run(kafka_bootstrap, tmp_path / guarantee, guarantee)
    print("\n" + str(figures))
    assert figures.missing["read_uncommitted"] == 0, "a command is missing"
