"""Kafka client settings and topic creation, shared by the worker and the tools."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from streams.security import ssl_context
from streams.settings import WarmcastSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    max_message_bytes: int | None = None  # the broker's default when None


def topic_specs(settings: WarmcastSettings) -> list[TopicSpec]:
    """Every topic warmcast reads or writes, with its dead-letter topics.

    >>> [t.name for t in topic_specs(WarmcastSettings())][:3]
    ['warmcast.usage.v1', 'warmcast.usage.v1.dlq', 'warmcast.metrics.v1']
    """
    n = settings.partitions
    specs: list[TopicSpec] = []
    for name in ("usage", "metrics", "control"):
        specs.append(TopicSpec(settings.topic(name), n))
        specs.append(TopicSpec(settings.topic(name) + ".dlq", n))
    specs.append(TopicSpec(settings.topic("warmup"), n))
    specs.append(TopicSpec(settings.topic("warmup") + ".dlq", n))  # the executor's refusals
    specs.append(TopicSpec(settings.topic("alerts"), n))
    specs.append(TopicSpec(settings.topic("health"), n, compacted=True))
    # Checkpoints of learned state, keyed by usage partition (see streams/checkpoint.py).
    room = settings.checkpoint_max_bytes + 64 * 1024
    specs.append(
        TopicSpec(settings.topic("checkpoints"), n, compacted=True, max_message_bytes=room)
    )
    return specs


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """Kafka topic configs of a new topic.

    >>> topic_configs(TopicSpec("t", 1, compacted=True, max_message_bytes=2048))
    {'cleanup.policy': 'compact', 'max.message.bytes': '2048'}
    """
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    if spec.max_message_bytes is not None:
        configs["max.message.bytes"] = str(spec.max_message_bytes)
    return configs


def client_kwargs(settings: WarmcastSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured cluster (security included)."""
    if not settings.kafka_bootstrap_servers:
        raise ValueError("no Kafka bootstrap servers configured")
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def history_reader(settings: WarmcastSettings) -> AIOKafkaConsumer:
    """A consumer outside any group that reads a topic from its first record and commits
    nothing: how a worker and an executor read the control topic's history, then follow
    it (not started; the caller assigns its partitions)."""
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )


async def ensure_topics(settings: WarmcastSettings, timeout: float = 30.0) -> dict[str, int]:
    """Create missing topics (idempotent); return every topic's partition count."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        specs = topic_specs(settings)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        new = [
            NewTopic(
                s.name,
                s.partitions,
                settings.replication_factor,
                topic_configs=topic_configs(s),
            )
            for s in missing
        ]
        if new:
            response = await admin.create_topics(new)
            created = []
            for name, code, message in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TOPIC_ALREADY_EXISTS:
                    raise RuntimeError(f"could not create topic {name}: {message} (error {code})")
            log.info("created topics: %s", ", ".join(created))
        described = await admin.describe_topics([s.name for s in specs])
        return {t["topic"]: len(t["partitions"]) for t in described if t["partitions"]}
    finally:
        await admin.close()


async def topic_message_limits(settings: WarmcastSettings) -> dict[str, int]:
    """``max.message.bytes`` of warmcast's topics, where the broker reports it (a broker
    that reports none, or cannot be asked, gives an empty answer: the producer's request
    limit alone then applies)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    names = [s.name for s in topic_specs(settings)]
    wanted = {"max.message.bytes": None}
    resources = [ConfigResource(ConfigResourceType.TOPIC, n, wanted) for n in names]
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    limits: dict[str, int] = {}
    try:
        await admin.start()
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                _, _, _, name, entries = resource[:5]
                for entry in entries:
                    if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                        limits[name] = int(entry[1])
    except Exception as exc:  # an answer we cannot read is no limit learnt
        log.info("could not read the topics' max.message.bytes: %r", exc)
    finally:
        await admin.close()
    return limits


def last_answer(consumer: Any, partitions: Iterable[Any]) -> float | None:
    """Wall time (s) of ``consumer``'s latest fetch response for any of ``partitions``
    (``None``: none yet)."""
    stamps = [consumer.last_poll_timestamp(tp) for tp in partitions]
    known = [s for s in stamps if s is not None]
    return max(known) / 1000 if known else None


async def topic_partitions(consumer: Any, topic: str, timeout: float = 30.0) -> list[int]:
    """The partitions of ``topic``, for a consumer that assigns them by hand.

    A consumer learns a topic's partitions from a metadata request that asks for it (or
    for every topic): Apache Kafka answers its first, bootstrap request, which names no
    topic, with none. Raises ``LookupError`` if the topic is not there within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.2)


async def allow_larger_records(
    settings: WarmcastSettings, kinds: Iterable[str], max_bytes: int
) -> bool:
    """Let the topics of ``kinds`` (``"usage"``, ``"metrics"``) take records of up to
    ``max_bytes``, as an operator does for producers that send large messages (Apache
    Kafka refuses a record over about 1 MiB by default). Returns whether the broker took
    the change; a broker without topic configs (the embedded one has no such limit)
    leaves them as they are."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    specs = {spec.name: spec for spec in topic_specs(settings)}
    resources = []
    for kind in kinds:
        spec = specs[settings.topic(kind)]
        configs = {**topic_configs(spec), "max.message.bytes": str(max_bytes)}
        resources.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, configs))
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        try:
            answers = await admin.alter_configs(resources)
        except Exception as exc:  # an unsupported request: the broker keeps its own limits
            log.info("the broker did not take max.message.bytes=%d: %r", max_bytes, exc)
            return False
        errors = [r for answer in answers for r in answer.resources if r[0] != 0]
        if errors:
            log.info("the broker refused max.message.bytes=%d: %s", max_bytes, errors)
            return False
        wanted = [
            ConfigResource(ConfigResourceType.TOPIC, r.name, {"max.message.bytes": None})
            for r in resources
        ]
        await _until_described(admin, wanted, str(max_bytes))
        return True
    finally:
        await admin.close()


async def _until_described(
    admin: AIOKafkaAdminClient, wanted: list[Any], max_bytes: str, timeout: float = 15.0
) -> None:
    """Wait until the broker describes ``max.message.bytes`` of every topic of ``wanted``
    as ``max_bytes``: a broker takes a config change from the controller a moment after
    the change is acknowledged, and refuses a larger record until then."""
    topics = [r.name for r in wanted]
    deadline = time.monotonic() + timeout
    while True:
        answers = await admin.describe_configs(wanted)
        values = {
            (r[3], entry[0]): entry[1]
            for answer in answers
            for r in answer.resources
            for entry in r[4]
        }
        if all(values.get((t, "max.message.bytes")) == max_bytes for t in topics):
            return
        if time.monotonic() > deadline:
            log.warning("max.message.bytes=%s not yet in effect on %s", max_bytes, topics)
            return
        await asyncio.sleep(0.1)
