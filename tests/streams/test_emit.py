"""CommandEmitter against a real broker: every queued command arrives, keyed, on its
owning partition and in order; ``drain`` returns only once the producer holds them all."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.lease import Command, command_id
from streams.emit import CommandEmitter
from streams.partitioning import partition_for
from streams.sending import Sender

PARTITIONS = 3


def command(i: int) -> Command:
    model_id = f"model-{i % 40}"
    start = 60.0 * (i + 1)
    return Command(
        command_id=command_id(model_id, "warm", start, start + 600, "test/1"),
        model_id=model_id,
        action="warm",
        issued_at=60.0 * i,
        start=start,
        end=start + 600,
        priority=2,
        probability=None,
        confidence=None,
        reason="x" * (i % 7),
        policy_version="test/1",
    )


async def emit_and_read(bootstrap: str, commands: list[list[Command]]) -> tuple[list, int]:
    topic = f"emit-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16 * 1024)
    await producer.start()
    failures: list[int] = []
    sender = Sender(lambda: producer, 1_000_000)
    sender.on_failure = lambda delivery, exc: failures.append(delivery.records)
    emitter = CommandEmitter(sender, topic, PARTITIONS)
    try:
        deliveries = []
        for batch in commands:  # several messages' worth, without waiting in between
            deliveries += emitter.publish(batch)
        await emitter.drain()
        assert emitter.queued == 0 and not emitter.pending
        await producer.flush()
        await asyncio.wait_for(asyncio.gather(*(d.done for d in deliveries)), 30)
    finally:
        await producer.stop()
    total = sum(len(b) for b in commands)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(30):
            while len(records) < total:
                for got in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(got)
    finally:
        await consumer.stop()
    assert not failures
    return records, emitter.batches


def test_every_command_arrives_on_its_partition_in_order(kafka_bootstrap: str) -> None:
    # 2,000 commands of ~300 bytes overflow a 16 KiB batch many times over.
    commands = [[command(i) for i in range(j, j + 50)] for j in range(0, 2000, 50)]
    published = int(time.time() * 1000)
    records, batches = asyncio.run(emit_and_read(kafka_bootstrap, commands))
    read = int(time.time() * 1000)
    assert len(records) == 2000
    assert batches < 2000  # shipped in record batches, not one request per command
    sent_order: dict[int, list[str]] = {}
    for c in (c for batch in commands for c in batch):
        sent_order.setdefault(partition_for(c.model_id, PARTITIONS), []).append(c.command_id)
    got_order: dict[int, list[str]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        doc = orjson.loads(r.value)
        assert r.key == doc["model_id"].encode()
        assert r.partition == partition_for(doc["model_id"], PARTITIONS)
        # stamped when published, not at its (here 1970) event time, which Kafka's
        # time-based retention would delete at once
        assert published <= r.timestamp <= read
        got_order.setdefault(r.partition, []).append(doc["command_id"])
    assert got_order == sent_order
