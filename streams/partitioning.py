"""Which partition owns a served model: the Kafka default partitioner on ``model_id``.

Hashing a key (murmur2, in Python) costs far more than the rest of a send; a worker sees
the same served models again and again, so the hash of recent keys is remembered.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=4096)
def key_hash(key: bytes) -> int:
    """murmur2 of ``key``, made non-negative, as Java's default partitioner uses it."""
    return murmur2(key) & 0x7FFFFFFF


@lru_cache(maxsize=65536)
def partition_for(model_id: str, partitions: int) -> int:
    """The partition a producer keying by ``model_id`` writes to (murmur2, as Java's).

    >>> partition_for("llama-8b", 4) == partition_for("llama-8b", 4)
    True
    >>> 0 <= partition_for("llama-8b", 4) < 4
    True
    """
    return key_hash(model_id.encode()) % partitions


def default_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """The Kafka client's default partitioner with :func:`key_hash`'s memory (what the
    worker's producer uses for table changelogs and any keyed send).

    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> key = b"llama-8b"
    >>> parts = [0, 1, 2]
    >>> default_partitioner(key, parts, parts) == DefaultPartitioner()(key, parts, parts)
    True
    """
    if key is None:
        return random.choice(list(available or all_partitions))
    return all_partitions[key_hash(key) % len(all_partitions)]
