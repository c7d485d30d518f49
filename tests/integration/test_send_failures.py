"""A send the broker refuses: tried again, its input partition held (paused, its offset not
committed past the message, an alert naming it) while the other partitions go on, and
resumed once the broker takes it; a stop while held ends in bounded time and the message
is read again afterwards.

The refusal is the broker's answer to a client that may not write a topic
(``TopicAuthorizationFailedError``), given to the worker's real producer by
``tests/integration/faulty_worker.py`` while a switch file exists.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import Worker, consume, namespace, produce, topic, usage
from tests.integration.test_send_limits import STOP_WAIT, owned
from tests.integration.test_worker import two_partition_topics

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0
BAD = b"{not json"


async def committed(bootstrap: str, group: str, topic_name: str) -> dict[int, int]:
    """The group's committed offset of each of the two partitions of ``topic_name``
    (-1: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic_name, p) for p in (0, 1)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp.partition: m.offset for tp, m in offsets.items()}


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)
    return value


def faulty(
    bootstrap: str, tmp_path: Path, ns: str, switch: Path, refused: str | None = None
) -> Worker:
    """A worker whose dead letters of usage (or ``refused``) the broker refuses while
    ``switch`` exists."""
    refused = refused or topic(ns, "usage") + ".dlq"
    return Worker(
        bootstrap,
        tmp_path,
        ns,
        module="tests.integration.faulty_worker",
        environment={"FAULT_TOPICS": refused, "FAULT_SWITCH": str(switch)},
        policy="fixed:10",
        send_attempts=2,
        send_retry_max_seconds=1,
        shutdown_timeout_seconds=20,
    )


def event(model_id: str) -> tuple[bytes, bytes]:
    return model_id.encode(), orjson.dumps(usage(model_id, T0))


def models(records: list[Any]) -> set[str]:
    return {orjson.loads(r.value)["model_id"] for r in records}


def delivery_alerts(records: list[Any], subject: str) -> list[dict[str, Any]]:
    found = [orjson.loads(r.value) for r in records]
    return [a for a in found if a["kind"] == "delivery_failed" and a["subject"] == subject]


async def test_a_refused_send_holds_its_partition_and_the_other_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns, bootstrap = namespace(), kafka_bootstrap
    await two_partition_topics(bootstrap, ns)
    usage_topic, group = topic(ns, "usage"), f"{ns}-app"
    dlq, held_subject = usage_topic + ".dlq", f"{usage_topic}/0"
    a, b = owned("a", 0, 3), owned("b", 1, 3)
    switch = tmp_path / "refuse"
    switch.touch()
    worker = faulty(bootstrap, tmp_path, ns, switch).start()
    try:
        # partition 0: a good event, the bad one (offset 1), a good one; partition 1: two
        await produce(bootstrap, usage_topic, [event(a[0]), (a[0].encode(), BAD), event(a[1])])
        await produce(bootstrap, usage_topic, [event(b[0]), event(b[1])])
        alerts = await consume(
            bootstrap,
            [topic(ns, "alerts")],
            until=lambda rs: bool(delivery_alerts(rs, held_subject)),
        )
        alert = delivery_alerts(alerts, held_subject)[0]
        assert alert["state"] == "firing" and alert["value"] <= 1
        assert "offset 1" in alert["summary"] and dlq in alert["summary"]

        # the other partition goes on, and its offsets are committed
        await consume(bootstrap, [topic(ns, "warmup")], until=lambda rs: models(rs) >= set(b[:2]))
        await until(
            lambda: _at_least(bootstrap, group, usage_topic, 1, 2), 60, "partition 1's commit"
        )
        assert (await committed(bootstrap, group, usage_topic)).get(0, 0) <= 1

        # later events: partition 1's is taken, partition 0's waits (the partition pauses)
        await produce(bootstrap, usage_topic, [event(a[2])])
        await produce(bootstrap, usage_topic, [event(b[2])])
        commands = await consume(
            bootstrap, [topic(ns, "warmup")], until=lambda rs: b[2] in models(rs)
        )
        assert a[2] not in models(commands)
        await until(
            lambda: _at_least(bootstrap, group, usage_topic, 1, 3), 60, "partition 1's commit"
        )
        assert (await committed(bootstrap, group, usage_topic)).get(0, 0) <= 1
        metrics = worker.metrics()
        assert metrics["warmcast_input_partitions_held"] == 1
        assert metrics[f'warmcast_input_holds_total{{topic="{usage_topic}"}}'] >= 1
        assert metrics[f'warmcast_send_failures_total{{topic="{dlq}"}}'] >= 2

        # the broker takes it again: the dead letter goes, the partition resumes
        switch.unlink()
        letters = await consume(bootstrap, [dlq], until=lambda rs: len(rs) >= 1)
        assert [dict(r.headers)["warmcast.original-offset"] for r in letters] == [b"1"]
        assert letters[0].value == BAD
        await consume(bootstrap, [topic(ns, "warmup")], until=lambda rs: a[2] in models(rs))
        await until(
            lambda: _at_least(bootstrap, group, usage_topic, 0, 4), 60, "partition 0's commit"
        )
        alerts = await consume(
            bootstrap,
            [topic(ns, "alerts")],
            until=lambda rs: any(
                x["state"] == "resolved" for x in delivery_alerts(rs, held_subject)
            ),
        )
        assert worker.metrics()["warmcast_input_partitions_held"] == 0
        assert "Crashed reason" not in worker.log.read_text()
    finally:
        code = worker.stop(timeout=STOP_WAIT)
    assert code != -signal.SIGKILL, "SIGTERM did not end the worker"


async def _at_least(bootstrap: str, group: str, topic_name: str, partition: int, n: int) -> bool:
    return (await committed(bootstrap, group, topic_name)).get(partition, -1) >= n


async def test_a_stop_while_held_ends_in_bounded_time_and_the_message_is_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns, bootstrap = namespace(), kafka_bootstrap
    await two_partition_topics(bootstrap, ns)
    usage_topic = topic(ns, "usage")
    dlq = usage_topic + ".dlq"
    a, b = owned("a", 0, 1), owned("b", 1, 1)
    switch = tmp_path / "refuse"
    switch.touch()
    first = faulty(bootstrap, tmp_path, ns, switch).start()
    try:
        await produce(bootstrap, usage_topic, [event(a[0]), (a[0].encode(), BAD), event(b[0])])
        await consume(
            bootstrap,
            [topic(ns, "alerts")],
            until=lambda rs: bool(delivery_alerts(rs, f"{usage_topic}/0")),
        )
    finally:
        code = first.stop(timeout=STOP_WAIT)
    assert code != -signal.SIGKILL, "SIGTERM did not end the held worker"
    log = first.log.read_text()
    assert "not delivered: 1 record(s)" in log and dlq in log

    # nothing committed past the message the stop let go
    assert (await committed(bootstrap, f"{ns}-app", usage_topic)).get(0, -1) <= 1
    switch.unlink()
    second = Worker(bootstrap, tmp_path, ns, policy="fixed:10").start()
    try:
        letters = await consume(bootstrap, [dlq], until=lambda rs: len(rs) >= 1)
        assert [dict(r.headers)["warmcast.original-offset"] for r in letters] == [b"1"]
    finally:
        second.stop()


async def test_refused_warmup_commands_are_sent_again_not_dropped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The broker refuses warmup partition 0: the commands of partition 0's models wait and
    # are sent again, usage partition 0 is held meanwhile; partition 1 goes on.
    ns, bootstrap = namespace(), kafka_bootstrap
    await two_partition_topics(bootstrap, ns)
    usage_topic, warmup, group = topic(ns, "usage"), topic(ns, "warmup"), f"{ns}-app"
    a, b = owned("a", 0, 2), owned("b", 1, 2)
    switch = tmp_path / "refuse"
    switch.touch()
    worker = faulty(bootstrap, tmp_path, ns, switch, refused=f"{warmup}:0").start()
    try:
        await produce(bootstrap, usage_topic, [event(a[0]), event(a[1]), event(b[0])])
        alerts = await consume(
            bootstrap,
            [topic(ns, "alerts")],
            until=lambda rs: bool(delivery_alerts(rs, f"{usage_topic}/0")),
        )
        assert f"{warmup} partition 0" in delivery_alerts(alerts, f"{usage_topic}/0")[0]["summary"]
        await produce(bootstrap, usage_topic, [event(b[1])])
        commands = await consume(bootstrap, [warmup], until=lambda rs: set(b) <= models(rs))
        assert not set(a) & models(commands)
        await until(
            lambda: _at_least(bootstrap, group, usage_topic, 1, 2), 60, "partition 1's commit"
        )
        assert (await committed(bootstrap, group, usage_topic)).get(0, 0) <= 0
        assert worker.metrics()["warmcast_command_publish_failures_total"] >= 2

        switch.unlink()
        commands = await consume(bootstrap, [warmup], until=lambda rs: set(a) <= models(rs))
        assert {r.partition for r in commands if orjson.loads(r.value)["model_id"] in a} == {0}
        await until(
            lambda: _at_least(bootstrap, group, usage_topic, 0, 2), 60, "partition 0's commit"
        )
        assert worker.metrics()["warmcast_input_partitions_held"] == 0
    finally:
        code = worker.stop(timeout=STOP_WAIT)
    assert code != -signal.SIGKILL, "SIGTERM did not end the worker"


async def test_a_worker_whose_broker_is_gone_stops_within_its_bound(tmp_path: Path) -> None:
    # A broker of its own, stopped under the worker: whatever the stop waits on, it ends
    # within the worker's bound (here 10 s) rather than waiting for the broker.
    from streams.broker import EmbeddedBroker

    ns = namespace()
    with EmbeddedBroker() as broker:
        worker = Worker(
            broker.bootstrap, tmp_path, ns, policy="fixed:10", shutdown_timeout_seconds=10
        ).start()
        try:
            await produce(broker.bootstrap, topic(ns, "usage"), [event("llama")])
            await consume(
                broker.bootstrap, [topic(ns, "warmup")], until=lambda rs: "llama" in models(rs)
            )
            broker.stop()
        finally:
            code = worker.stop(timeout=STOP_WAIT)
    assert code != -signal.SIGKILL, "SIGTERM did not end the worker"
