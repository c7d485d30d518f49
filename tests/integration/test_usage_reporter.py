"""``warmcast.UsageReporter`` on a real broker: reports arrive as envelopes of usage
events, each on the partition Kafka's Java client picks for its model (murmur2); a full
buffer drops and counts, never blocks."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka.partitioner import murmur2

import warmcast
from schemas.envelope import decode
from schemas.usage import UsageEvent
from streams.kafka import ensure_topics
from streams.settings import WarmcastSettings
from tests.integration.harness import consume, namespace


def java_partition(model_id: str, partitions: int) -> int:
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions


async def test_reports_arrive_in_envelopes_on_their_models_partitions(
    kafka_bootstrap: str,
) -> None:
    ns = namespace()
    settings = WarmcastSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_namespace=ns)
    await ensure_topics(settings)
    topic = settings.topic("usage")
    models = [f"model-{i}" for i in range(12)]
    async with warmcast.UsageReporter(
        kafka_bootstrap, topic=topic, batch_events=50, flush_seconds=0.2
    ) as reporter:
        for i in range(600):
            assert reporter.report(models[i % len(models)], cold_start=i < 12, latency=0.1)
        # reporting only buffers: 600 calls take no network round trip
        assert reporter.buffered + reporter.sent <= 600
        await asyncio.wait_for(_sent(reporter, 600), 60)
    records = await consume(
        kafka_bootstrap,
        [topic],
        lambda rs: sum(len(orjson.loads(r.value)) for r in rs) >= 600,
        timeout=60,
    )
    partitions = settings.partitions
    events = 0
    for record in records:
        decoded = decode(record.value, UsageEvent)
        assert decoded.envelope
        assert not decoded.errors
        assert len(decoded.events) <= 50
        for event in decoded.events:
            assert java_partition(event.model_id, partitions) == record.partition
        assert java_partition(record.key.decode(), partitions) == record.partition
        events += len(decoded.events)
    assert events == 600
    assert reporter.dropped == 0


async def _sent(reporter: warmcast.UsageReporter, n: int) -> None:
    while reporter.sent < n:
        await asyncio.sleep(0.05)


async def test_a_full_buffer_drops_and_counts(kafka_bootstrap: str) -> None:
    reporter = warmcast.UsageReporter(kafka_bootstrap, max_buffered=10)
    # not started (no broker round trip at all): reports fill the buffer, then drop
    results = [reporter.report("m") for _ in range(25)]
    assert results.count(True) == 10 and results.count(False) == 15
    assert reporter.dropped == 15 and reporter.buffered == 10
