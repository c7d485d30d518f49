"""Publishing warmup commands straight to the producer that Faust runs.

Commands are keyed by ``model_id`` and sent to the partition a keyed producer would use;
they join the producer's open record batch for that partition (no wait for delivery: the
producer is flushed before consumer offsets are committed).
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.lease import Command
from streams.partitioning import partition_for


class CommandEmitter:
    """Sends commands with the least work per command that the Kafka client allows."""

    def __init__(self, producer: Any, topic: str, partitions: int) -> None:
        self.producer = producer  # aiokafka.AIOKafkaProducer
        self.topic = topic
        self.partitions = partitions

    async def publish(self, commands: list[Command]) -> None:
        send, topic, n = self.producer.send, self.topic, self.partitions
        dumps = orjson.dumps
        for command in commands:
            await send(
                topic,
                dumps(command.to_dict()),
                key=command.model_id.encode(),
                partition=partition_for(command.model_id, n),
                timestamp_ms=int(command.issued_at * 1000),
            )
