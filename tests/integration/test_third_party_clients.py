"""Producers and consumers other than warmcast's own: confluent-kafka (librdkafka) and kcat.

Usage goes in through each client, warm commands come out through each, on the run's
broker. A librdkafka producer keys with CRC32 (``consistent_random``) unless told
``partitioner=murmur2_random``: the events it puts on a partition that does not own their
served model are forwarded by the worker to the owner and counted in
``warmcast_forwarded_events_total``; with murmur2 none are. Either way every event is
processed once.

Debian's kcat cannot read the embedded broker's ApiVersions reply, so the kcat tests run
on Apache Kafka only; without the binary they are skipped (where ``CI`` is set, they fail).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from schemas.warmup import WarmupCommand
from streams.partitioning import partition_for
from tests.integration.harness import Worker, namespace, topic, usage, wait_for
from tests.needs import need

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0  # the start of a minute: every event below is one request in it
PARTITIONS = 4
MODELS = 40  # served models per test, each with one event: one warm command each
#: kcat's producer: ``key|value`` lines, keyed with murmur2 as warmcast expects
MURMUR2_KEYED = ("-K", "|", "-X", "partitioner=murmur2_random")
#: kcat's consumer: every partition from its beginning to its end, a JSON line per record
AS_JSON = ("-o", "beginning", "-e", "-J", "-q")


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(
        kafka_bootstrap,
        tmp_path_factory.mktemp("third-party"),
        namespace(),
        policy="fixed:10",
        partitions=PARTITIONS,
    )
    yield w.start()
    w.stop()


@pytest.fixture(scope="module")
def kcat(broker_kind: str) -> str:
    if broker_kind == "tansu":
        pytest.skip("Debian's kcat cannot read the embedded broker's ApiVersions reply")
    return need(
        shutil.which("kcat"),
        "kcat is not installed (Debian: apt-get install kcat; .ci/run does)",
        "CI must check a kcat producer and consumer",
    )


def models(prefix: str) -> list[str]:
    return [f"{prefix}-{i}" for i in range(MODELS)]


def forwarded(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("warmcast_forwarded_events_total{"))


def processed(worker: Worker, before: dict[str, float], count: int) -> dict[str, float]:
    """The worker's metrics once it has processed ``count`` more usage events."""
    target = before.get("warmcast_usage_events_total", 0) + count
    return dict(
        wait_for(
            lambda: (m := worker.metrics()).get("warmcast_usage_events_total", 0) >= target and m,
            120,
            f"{count} usage events to be processed",
        )
    )


def confluent_produce(
    bootstrap: str, topic_name: str, names: list[str], **config: Any
) -> list[int]:
    """Send one usage event per served model, keyed by it; the partitions they went to."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **config})
    partitions: dict[str, int] = {}
    errors: list[Any] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error)
        else:
            partitions[message.key().decode()] = message.partition()

    for name in names:
        value = orjson.dumps(usage(name, T0))
        producer.produce(topic_name, value, key=name.encode(), on_delivery=delivered)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver every event in 60 s"
    assert not errors, errors
    return [partitions[name] for name in names]


def confluent_consume(bootstrap: str, topic_name: str, names: set[str]) -> list[WarmupCommand]:
    """Read warm commands of ``names`` with a confluent-kafka consumer, decoded."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{namespace()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic_name])
    commands: list[WarmupCommand] = []
    try:
        deadline = time.monotonic() + 120
        while {c.model_id for c in commands} < names:
            assert time.monotonic() < deadline, f"only {len(commands)} commands read in 120 s"
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            command = WarmupCommand.model_validate_json(message.value())
            assert message.key() == command.model_id.encode()
            if command.model_id in names:
                commands.append(command)
    finally:
        consumer.close()
    return commands


def check_commands(commands: list[WarmupCommand], names: list[str]) -> None:
    """One warm command per served model, its lease the minute after ``T0`` on."""
    assert sorted(c.model_id for c in commands) == sorted(names)
    for command in commands:
        assert (command.action, command.start, command.end) == ("warm", T0 + 60, T0 + 660)


@pytest.mark.parametrize("partitioner", ["murmur2_random", None], ids=["murmur2", "default"])
def test_confluent_kafka_producer_and_consumer(worker: Worker, partitioner: str | None) -> None:
    names = models(f"ck-{partitioner or 'default'}")
    config = {"partitioner": partitioner} if partitioner else {}
    before = worker.metrics()
    went = confluent_produce(worker.bootstrap, topic(worker.namespace, "usage"), names, **config)

    murmur2 = [partition_for(name, PARTITIONS) for name in names]
    if partitioner:
        assert went == murmur2  # the partitions warmcast's own producers pick
    else:  # librdkafka's consistent_random: CRC32 of the key
        assert went == [zlib.crc32(name.encode()) % PARTITIONS for name in names]
    elsewhere = sum(a != b for a, b in zip(went, murmur2, strict=True))
    if not partitioner:
        assert elsewhere > 0  # CRC32 and murmur2 disagree on some of 40 keys

    after = processed(worker, before, len(names))
    assert after["warmcast_usage_events_total"] == before["warmcast_usage_events_total"] + MODELS
    assert forwarded(after) - forwarded(before) == elsewhere

    commands = confluent_consume(worker.bootstrap, topic(worker.namespace, "warmup"), set(names))
    check_commands(commands, names)


def test_kcat_producer_and_consumer(worker: Worker, kcat: str) -> None:
    names = models("kcat")
    before = worker.metrics()
    lines = b"".join(name.encode() + b"|" + orjson.dumps(usage(name, T0)) + b"\n" for name in names)
    produced = subprocess.run(
        [
            kcat,
            "-b",
            worker.bootstrap,
            "-t",
            topic(worker.namespace, "usage"),
            "-P",
            *MURMUR2_KEYED,
        ],
        input=lines,
        capture_output=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr.decode()

    after = processed(worker, before, len(names))
    assert after["warmcast_usage_events_total"] == before["warmcast_usage_events_total"] + MODELS
    assert forwarded(after) == forwarded(before)  # murmur2: every event on its owner

    wanted = set(names)
    commands: list[WarmupCommand] = []

    def read() -> bool:
        done = subprocess.run(
            [kcat, "-b", worker.bootstrap, "-t", topic(worker.namespace, "warmup"), "-C", *AS_JSON],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        commands.clear()
        for line in done.stdout.splitlines():
            record = orjson.loads(line)
            command = WarmupCommand.model_validate_json(record["payload"])
            assert record["key"] == command.model_id
            assert record["partition"] == partition_for(command.model_id, PARTITIONS)
            if command.model_id in wanted:
                commands.append(command)
        return {c.model_id for c in commands} >= wanted

    wait_for(read, 120, "kcat to read a warm command of every model", every=1.0)
    check_commands(commands, names)
