"""Record batches written as bytes: compressed with each codec, or damaged on purpose
(a codec the payload does not match, codec bits no client knows, a wrong CRC), sent with
a plain ProduceRequest so that the broker stores them as they are."""

from __future__ import annotations

import struct
from typing import Literal

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.errors import for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

#: Kafka's codec ids (the low three bits of a batch's attributes).
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
ATTRIBUTES_AT = 21  # base offset, length, leader epoch, magic, CRC come first
CRC_AT = 17

Damage = Literal["codec_mismatch", "unknown_codec", "bad_crc"]


def record_batch(
    values: list[bytes], keys: list[bytes | None] | None = None, codec: str = "none"
) -> bytearray:
    """A v2 record batch of ``values`` (timestamped now), compressed with ``codec``."""
    builder = DefaultRecordBatchBuilder(2, CODECS[codec], 0, -1, -1, -1, 1 << 24)
    keys = keys or [None] * len(values)
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        builder.append(i, None, key, value, [])
    return builder.build()


def damaged(batch: bytearray, how: Damage) -> bytes:
    """``batch`` (uncompressed) made undecodable: its attributes name snappy over a
    payload that is not snappy, or codec 6 (no such codec), with the CRC recomputed; or
    its CRC left wrong after a byte of its records changed."""
    out = bytearray(batch)
    if how == "bad_crc":
        out[-1] ^= 0xFF
        return bytes(out)
    (attributes,) = struct.unpack_from(">h", out, ATTRIBUTES_AT)
    codec = CODECS["snappy"] if how == "codec_mismatch" else 6
    struct.pack_into(">h", out, ATTRIBUTES_AT, (attributes & ~0x07) | codec)
    struct.pack_into(">I", out, CRC_AT, calc_crc32c(bytes(out[ATTRIBUTES_AT:])))
    return bytes(out)


async def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Send one record batch as it is; returns the base offset the broker gave it (raises
    the broker's error if it refused the batch)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        tp = TopicPartition(topic, partition)
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(tp)
        request = ProduceRequest(
            transactional_id=None,
            required_acks=-1,
            timeout=10_000,
            topics=[(topic, [(partition, bytes(batch))])],
        )
        response = await client.send(leader, request)
        for _, partitions in response.topics:
            for answer in partitions:
                error = for_code(answer[1])
                if error.errno != 0:
                    raise error(f"{topic}[{partition}]: the broker refused the batch")
                return int(answer[2])
        raise AssertionError("no answer for the partition")
    finally:
        await client.close()
