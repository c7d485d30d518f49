"""Publishing warmup commands: one record batch per partition and message, not a send each.

A message of usage events can cause a command per event; building the records into one
batch per warmup partition costs a fraction of producing them one by one.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for


class CommandEmitter:
    """Sends commands keyed by ``model_id`` to the partition a keyed producer would use."""

    def __init__(self, producer: Any, topic: str, partitions: int) -> None:
        self.producer = producer  # aiokafka.AIOKafkaProducer
        self.topic = topic
        self.partitions = partitions

    async def publish(self, commands: list[Command]) -> None:
        """Queue the commands for delivery (the producer flushes before offsets commit)."""
        producer, topic = self.producer, self.topic
        batches: dict[int, Any] = {}
        dumps = orjson.dumps
        for command in commands:
            partition = partition_for(command.model_id, self.partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            key = command.model_id.encode()
            value = dumps(command.to_dict())
            timestamp = int(command.issued_at * 1000)
            if batch.append(key=key, value=value, timestamp=timestamp) is None:
                await producer.send_batch(batch, topic, partition=partition)
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=timestamp)
        for partition, batch in batches.items():
            await producer.send_batch(batch, topic, partition=partition)
