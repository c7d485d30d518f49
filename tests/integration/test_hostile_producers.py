"""Producers that misbehave, on a real broker: a clock an hour ahead, floods of metric names
and model ids, and a librdkafka client keying with CRC32."""

from __future__ import annotations

import asyncio
import random
import re
import time
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.alert import Alert
from streams.partitioning import partition_for
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("hostile"),
        namespace(),
        policy="warmcast",
        partitions=PARTITIONS,
        alert_check_seconds=0.25,
        alert_for_seconds=0,
        alert_keep_firing_seconds=0,
        alerts_disabled="stale_data,insufficient_volume,health_degraded",
    ).start()
    try:
        yield w
    finally:
        w.stop()


def same_partition(n: int, prefix: str) -> list[str]:
    """``n`` model ids that partition 0 owns."""
    ids = (f"{prefix}-{i}" for i in range(10_000))
    return [m for m in ids if partition_for(m, PARTITIONS) == 0][:n]


def counter(worker: Worker, name: str) -> float:
    return sum(v for k, v in worker.metrics().items() if re.fullmatch(rf"{name}(\{{.*\}})?", k))


async def test_an_event_an_hour_ahead_does_not_keep_other_models_cold(worker: Worker) -> None:
    a, outlier, b = same_partition(3, "clock")
    now = time.time()
    messages = [
        (a.encode(), orjson.dumps(usage(a, now))),
        (outlier.encode(), orjson.dumps(usage(outlier, now + 3500))),  # within the skew bound
        (b.encode(), orjson.dumps(usage(b, now + 11))),
    ]
    await produce(worker.bootstrap, topic(worker.namespace, "usage"), messages)
    records = await consume(
        worker.bootstrap,
        [topic(worker.namespace, "warmup")],
        lambda r: {orjson.loads(x.value)["model_id"] for x in r} >= {a, outlier, b},
    )
    starts = {orjson.loads(x.value)["model_id"]: orjson.loads(x.value)["start"] for x in records}
    assert starts[b] - now < 180, "the other model's lease starts in the far future"
    assert starts[outlier] - now < 180  # counted where the partition's time is
    assert counter(worker, "warmcast_future_events_total") == 1
    assert counter(worker, "warmcast_usage_events_total") >= 3


async def test_metric_name_and_model_id_floods_leave_metrics_and_state_bounded(
    worker: Worker,
) -> None:
    before = worker.get("/metrics")
    rng = random.Random(5)
    names = [f"custom_{rng.getrandbits(48):x}" for _ in range(5000)]
    events: list[dict[str, Any]] = [
        {"model_id": "probe", "ts": time.time(), "name": n, "value": 1.0} for n in names
    ]
    for i in range(50_000):
        ghost = f"ghost-{i}"
        events.append({"model_id": ghost, "ts": time.time(), "name": "load_time", "value": 2.0})
        events.append(
            {"model_id": ghost, "ts": time.time(), "name": "load_time_seconds", "value": 2.0}
        )
    sent = counter(worker, "warmcast_metric_events_total") + len(events)
    envelopes = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    await produce(
        worker.bootstrap,
        topic(worker.namespace, "metrics"),
        [(None, orjson.dumps(e)) for e in envelopes],
    )
    wait_for(
        lambda: counter(worker, "warmcast_metric_events_total") >= sent,
        120,
        "the worker to take every metric event",
        every=0.5,
    )
    text = worker.get("/metrics").decode()
    series = [line for line in text.splitlines() if line.startswith("warmcast_metric_events_")]
    assert len(series) <= 2 * 8  # _total and _created of the known names and "other"
    assert 'warmcast_metric_events_total{name="other"} 5000.0' in text
    assert len(text) < len(before) + 8192
    wait_for(  # the gauges are set by the alert check
        lambda: worker.metrics().get("warmcast_model_metric_state", 0) > 0, 30, "the state gauge"
    )
    state = worker.metrics()["warmcast_model_metric_state"]
    # per partition: load times and anomaly learners of at most 1,000 untracked models
    assert 0 < state <= PARTITIONS * 2 * 1001


async def test_events_keyed_by_a_crc32_partitioner_are_forwarded_counted_and_alerted(
    worker: Worker,
) -> None:
    def crc32_partition(model_id: str) -> int:  # librdkafka's default, consistent_random
        return zlib.crc32(model_id.encode()) % PARTITIONS

    candidates = [f"rd-{i}" for i in range(400)]
    wrong = [m for m in candidates if crc32_partition(m) != partition_for(m, PARTITIONS)][:33]
    right = [m for m in candidates if crc32_partition(m) == partition_for(m, PARTITIONS)][:7]
    forwarded_before = counter(worker, "warmcast_forwarded_events_total")
    processed = counter(worker, "warmcast_usage_events_total") + 40
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap)
    await producer.start()
    try:
        now = time.time()
        sends = [
            producer.send(
                topic(worker.namespace, "usage"),
                orjson.dumps(usage(m, now)),
                key=m.encode(),
                partition=crc32_partition(m),
            )
            for m in [*wrong, *right]
        ]
        await asyncio.gather(*(await asyncio.gather(*sends)))
    finally:
        await producer.stop()

    wait_for(
        lambda: counter(worker, "warmcast_usage_events_total") >= processed,
        60,
        "every event to be processed, forwarded or not",
    )
    metrics = worker.metrics()
    forwarded = {
        int(k.split('"')[1]): v
        for k, v in metrics.items()
        if k.startswith("warmcast_forwarded_events_total{")
    }
    assert sum(forwarded.values()) - forwarded_before == 33
    for partition in range(PARTITIONS):  # counted where they arrived
        arrived = sum(1 for m in wrong if crc32_partition(m) == partition)
        assert forwarded.get(partition, 0) >= arrived
    records = await consume(
        worker.bootstrap,
        [topic(worker.namespace, "alerts")],
        lambda r: any(b"forwarded_events" in x.value for x in r),
    )
    alert = next(
        Alert.model_validate_json(x.value) for x in records if b"forwarded_events" in x.value
    )
    assert alert.state == "firing" and alert.subject == topic(worker.namespace, "usage")
    assert alert.value is not None and alert.value > 0.1
    await consume(  # and each model got its lease from the partition that owns it
        worker.bootstrap,
        [topic(worker.namespace, "warmup")],
        lambda r: {orjson.loads(x.value)["model_id"] for x in r} >= {*wrong, *right},
    )
