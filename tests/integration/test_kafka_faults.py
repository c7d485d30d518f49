"""Faults on a three-node Apache Kafka cluster (replication factor 3, min.insync.replicas 2).

A worker is killed with SIGKILL and restarted; two workers split and hand back the
partitions; the leader of a usage partition, then of a warmup partition, is killed with
SIGKILL mid-stream; all three brokers are restarted one after the other under load. The
worker's topics are replicated three times (``WARMCAST_REPLICATION_FACTOR=3``).

In the streamed faults every usage event names a served model of its own, so each one
must come out as exactly one warm command: none may be missing, and what arrives twice
is counted. The pause of a fault is the longest time from an event's hand-off to the
producer to its command's arrival, among the events sent from the fault on. Each test
prints its figures.

These tests run only when the run's broker is Apache Kafka (``WARMCAST_TEST_BROKER=kafka``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka_broker import KafkaCluster
from tests.integration import test_reliability as reliability
from tests.integration.harness import Worker, namespace, topic, usage, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),  # a cluster of three JVMs on a loaded machine: minutes per test
    pytest.mark.skipif(
        os.environ.get("WARMCAST_TEST_BROKER", "").lower() != "kafka",
        reason="faults on three brokers need Apache Kafka (WARMCAST_TEST_BROKER=kafka)",
    ),
]

T0 = 1_700_000_040.0
RATE = 100  # usage events per second while streaming
LEAD = 5.0  # seconds of streaming before the first fault


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(nodes=3) as started:
        yield started


@pytest.fixture
def replicated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by the test create their topics with three replicas."""
    monkeypatch.setenv("WARMCAST_REPLICATION_FACTOR", "3")


@pytest.fixture(autouse=True)
def healthy(cluster: KafkaCluster) -> Iterator[None]:
    """Every node up and every partition in sync before and after each test."""
    cluster.wait_brokers({n.node_id for n in cluster.nodes})
    cluster.wait_in_sync()
    yield
    for node in cluster.nodes:
        if node.process is None:
            cluster.restart(node.node_id)
    cluster.wait_in_sync()


async def test_killed_worker_resumes_on_three_brokers(
    cluster: KafkaCluster, replicated: None, tmp_path: Path
) -> None:
    await reliability.test_killed_worker_resumes_with_its_learned_state(cluster.bootstrap, tmp_path)


async def test_two_workers_rebalance_on_three_brokers(
    cluster: KafkaCluster, replicated: None, tmp_path: Path
) -> None:
    await reliability.test_two_workers_split_the_partitions_and_hand_them_back(
        cluster.bootstrap, tmp_path
    )


@dataclass
class Stream:
    """Usage events of new served models at ``RATE`` per second, and their commands."""

    bootstrap: str
    ns: str
    sent: dict[str, float] = field(default_factory=dict)  # model -> hand-off time
    arrived: dict[str, float] = field(default_factory=dict)  # model -> first command
    records: int = 0
    ids: set[str] = field(default_factory=set)
    done_sending: bool = False

    async def send(self, count: int) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=120_000,
        )
        await producer.start()
        try:
            start = time.monotonic()
            pending = []
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
                model = f"m{i}"
                event = orjson.dumps(usage(model, T0 + i / RATE))
                self.sent[model] = time.monotonic()
                pending.append(
                    await producer.send(topic(self.ns, "usage"), event, key=model.encode())
                )
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
            self.done_sending = True

    async def read(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            topic(self.ns, "warmup"),
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                for records in batch.values():
                    for record in records:
                        command = orjson.loads(record.value)
                        self.records += 1
                        self.ids.add(command["command_id"])
                        self.arrived.setdefault(command["model_id"], now)
        finally:
            await consumer.stop()

    def waits(self, since: float, until: float | None = None) -> list[float]:
        """Hand-off -> command times of the events sent in [since, until)."""
        return sorted(
            self.arrived[m] - t
            for m, t in self.sent.items()
            if t >= since and (until is None or t < until) and m in self.arrived
        )

    def complete(self) -> bool:
        return self.done_sending and set(self.sent) <= set(self.arrived)


async def stream_through(
    cluster: KafkaCluster, tmp_path: Path, count: int, faults: Any
) -> tuple[Stream, Worker, list[tuple[str, float]]]:
    """Stream ``count`` events through a worker while ``faults(stream)`` runs (a
    coroutine that returns its (name, moment) marks); wait for every command."""
    ns = namespace()
    worker = Worker(cluster.bootstrap, tmp_path, ns, policy="fixed:10").start()
    stream = Stream(cluster.bootstrap, ns)
    stop = asyncio.Event()
    reader = asyncio.ensure_future(stream.read(stop))
    try:
        sender = asyncio.ensure_future(stream.send(count))
        await asyncio.sleep(LEAD)
        marks = await faults(stream)
        await asyncio.wait_for(sender, 300)
        await asyncio.to_thread(wait_for, stream.complete, 180, "a command for every event")
        wait_for(
            lambda: worker.metrics().get("warmcast_usage_events_total", 0) >= count,
            60,
            "the worker to count every event",
        )
    finally:
        stop.set()
        await reader
    return stream, worker, marks


def figures(stream: Stream, worker: Worker, marks: list[tuple[str, float]]) -> str:
    """What was sent, processed and received; the steady latency before the faults and
    the pause of each fault (the longest wait of the events sent from a second before
    it until a second before the next)."""
    metrics = worker.metrics()
    dead = sum(v for k, v in metrics.items() if k.startswith("warmcast_dead_letters_total{"))
    lines = [
        f"events sent {len(stream.sent)}, processed "
        f"{metrics.get('warmcast_usage_events_total', 0):.0f}, dead-lettered {dead:.0f}, "
        f"commands {len(stream.ids)} ({stream.records} records, "
        f"{stream.records - len(stream.ids)} duplicates)"
    ]
    steady = stream.waits(min(stream.sent.values()), marks[0][1] - 1.0)
    if steady:
        lines.append(
            f"before the faults: event -> command p50 {steady[len(steady) // 2] * 1000:.0f} ms,"
            f" max {steady[-1] * 1000:.0f} ms"
        )
    for i, (name, moment) in enumerate(marks):
        until = marks[i + 1][1] - 1.0 if i + 1 < len(marks) else None
        waits = stream.waits(moment - 1.0, until)
        lines.append(f"{name}: pause {max(waits, default=0.0):.2f}s")
    return "\n".join(lines)


def check(stream: Stream, worker: Worker) -> None:
    assert set(stream.sent) <= set(stream.arrived), "a command is missing"
    assert len(stream.ids) == len(stream.sent), "one command per event, by id"
    metrics = worker.metrics()
    assert not any(v for k, v in metrics.items() if k.startswith("warmcast_dead_letters_total{"))
    assert worker.process is not None and worker.process.poll() is None


async def test_partition_leaders_killed_mid_stream(
    cluster: KafkaCluster, replicated: None, tmp_path: Path
) -> None:
    """SIGKILL the leader of usage partition 0, bring it back; then the leader of warmup
    partition 0: every event still becomes its command."""

    async def faults(stream: Stream) -> list[tuple[str, float]]:
        marks = []
        for name in ("usage", "warmup"):
            leader = await asyncio.to_thread(cluster.leader, topic(stream.ns, name), 0)
            assert leader is not None
            marks.append(
                (f"kill -9 of node {leader}, leader of {name} partition 0", time.monotonic())
            )
            cluster.kill(leader)
            await asyncio.to_thread(
                wait_for,
                lambda n=leader, t=name: cluster.leader(topic(stream.ns, t), 0) not in (n, None),
                60,
                f"a new leader of {name} partition 0",
            )
            await asyncio.sleep(3.0)  # streaming on two brokers
            await asyncio.to_thread(cluster.restart, leader)
            await asyncio.to_thread(cluster.wait_in_sync, None, 120)
        return marks

    stream, worker, marks = await stream_through(cluster, tmp_path, RATE * 90, faults)
    try:
        print("\n" + figures(stream, worker, marks))
        check(stream, worker)
    finally:
        worker.stop()


async def test_rolling_restart_under_load(
    cluster: KafkaCluster, replicated: None, tmp_path: Path
) -> None:
    """Each broker stopped cleanly and started again in turn, while events stream: every
    event becomes its command."""

    async def faults(stream: Stream) -> list[tuple[str, float]]:
        marks = []
        for node in cluster.nodes:
            marks.append((f"restart of node {node.node_id}", time.monotonic()))
            await asyncio.to_thread(cluster.stop_node, node.node_id)
            await asyncio.to_thread(cluster.restart, node.node_id)
            await asyncio.to_thread(cluster.wait_in_sync, None, 120)
        return marks

    stream, worker, marks = await stream_through(cluster, tmp_path, RATE * 90, faults)
    try:
        print("\n" + figures(stream, worker, marks))
        check(stream, worker)
    finally:
        worker.stop()
