"""Which partition owns a served model: the Kafka default partitioner on ``model_id``."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)
def partition_for(model_id: str, partitions: int) -> int:
    """The partition a producer keying by ``model_id`` writes to (murmur2, as Java's).

    >>> partition_for("llama-8b", 4) == partition_for("llama-8b", 4)
    True
    >>> 0 <= partition_for("llama-8b", 4) < 4
    True
    """
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions
