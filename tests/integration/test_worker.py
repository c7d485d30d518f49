"""The worker end to end on a real broker: usage in, commands and dead letters out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.kafka import ensure_topics
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tests.integration.harness import (
    Worker,
    consume,
    namespace,
    produce,
    topic,
    usage,
    wait_for,
)

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0  # the start of a minute, far enough in the past to be a replay


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(kafka_bootstrap, tmp_path, namespace(), policy="fixed:10", max_message_bytes=4096)
    yield w.start()
    w.stop()


async def test_usage_becomes_commands_and_bad_input_dead_letters(worker: Worker) -> None:
    ns, bootstrap = worker.namespace, worker.bootstrap
    good = [
        (b"llama", orjson.dumps(usage("llama", T0, cold_start=True, latency=4.0))),
        (b"llama", orjson.dumps(usage("llama", T0 + 10))),  # same minute: no new lease
        (b"sdxl", orjson.dumps({"events": [usage("sdxl", T0 + 5), {"model_id": "", "ts": T0}]})),
        (b"whisper", orjson.dumps([usage("whisper", "2023-11-14T22:14:30Z", count=3)])),
        (b"llama", orjson.dumps(usage("llama", T0 + 70))),  # next minute: the lease moves
        (b"not-json", b"{this is not json"),
        (b"big", orjson.dumps(usage("llama", T0, node="x" * 5000))),
        (b"schema", orjson.dumps({"model_id": "llama", "ts": "yesterday"})),
    ]
    await produce(bootstrap, topic(ns, "usage"), good)

    commands = await consume(
        bootstrap, [topic(ns, "warmup")], until=lambda records: len(records) >= 4
    )
    decoded = sorted(
        (c["model_id"], c["issued_at"], c["start"], c["end"])
        for c in (orjson.loads(r.value) for r in commands)
    )
    assert decoded == [
        ("llama", T0, T0 + 60, T0 + 660),
        ("llama", T0 + 60, T0 + 120, T0 + 720),
        ("sdxl", T0, T0 + 60, T0 + 660),
        ("whisper", T0, T0 + 60, T0 + 660),
    ]
    assert all(r.key == orjson.loads(r.value)["model_id"].encode() for r in commands)

    letters = await consume(
        bootstrap, [topic(ns, "usage") + ".dlq"], until=lambda records: len(records) >= 4
    )
    reasons = sorted(dict(r.headers)["warmcast.error-reason"].decode() for r in letters)
    assert reasons == ["malformed_json", "oversize", "schema_violation", "schema_violation"]
    for record in letters:
        headers = dict(record.headers)
        assert headers["warmcast.original-topic"] == topic(ns, "usage").encode()
        assert int(headers["warmcast.original-offset"]) >= 0
        assert headers["warmcast.error-class"] and headers["warmcast.error-message"]
    in_envelope = [r for r in letters if "warmcast.envelope-index" in dict(r.headers)]
    assert [dict(r.headers)["warmcast.envelope-index"] for r in in_envelope] == [b"1"]

    # Every message has been read, the three bad ones at the end too: the first
    # reliability check from now on (it also notes the broker's latest answer) finds no lag.
    answered = "warmcast_broker_last_response_timestamp_seconds"
    since = worker.metrics()[answered]
    after = wait_for(
        lambda: (m := worker.metrics())[answered] > since and m,
        30,
        "a reliability check after the last message was read",
    )
    assert after["warmcast_consumer_lag_messages"] == 0

    metrics = wait_for(
        lambda: (m := worker.metrics()).get("warmcast_usage_events_total") == 5 and m,
        30,
        "usage events to be counted",
    )
    assert metrics["warmcast_requests_total"] == 7
    assert metrics["warmcast_cold_starts_total"] == 1
    assert metrics['warmcast_warmup_commands_total{action="warm"}'] == 4
    dlq = f'topic="{topic(ns, "usage")}"'
    assert metrics[f'warmcast_dead_letters_total{{reason="schema_violation",{dlq}}}'] == 2
    assert metrics[f'warmcast_dead_letters_total{{reason="malformed_json",{dlq}}}'] == 1
    assert metrics[f'warmcast_dead_letters_total{{reason="oversize",{dlq}}}'] == 1

    health = worker.health()
    by_model = {m["model_id"]: m for m in health["models"]}
    assert by_model["llama"]["requests_total"] == 3
    assert by_model["llama"]["cold_starts_total"] == 1
    assert by_model["whisper"]["requests_total"] == 3
    assert by_model["llama"]["last_seen"] == T0 + 70


async def test_a_worker_does_not_fetch_its_own_changelog(worker: Worker) -> None:
    # It writes the health table's changelog (2 partitions) and reads it only to recover:
    # fetched, its records would never be taken, and the client would hold back the
    # fetches of usage events for its prefetch backoff after each first write.
    wait_for(
        lambda: worker.metrics().get("warmcast_consumer_paused_partitions") == 2,
        30,
        "the worker to pause its changelog partitions",
    )
    await produce(
        worker.bootstrap,
        topic(worker.namespace, "usage"),
        [(b"llama", orjson.dumps(usage("llama", T0)))],
    )
    commands = await consume(
        worker.bootstrap,
        [topic(worker.namespace, "warmup")],
        until=lambda records: len(records) >= 1,
    )
    assert [orjson.loads(r.value)["model_id"] for r in commands] == ["llama"]


async def test_events_on_a_foreign_partition_reach_the_owner(worker: Worker) -> None:
    """An unkeyed producer's envelope mixes models: each model still has one owner."""
    ns, bootstrap = worker.namespace, worker.bootstrap
    models = [f"model-{i}" for i in range(12)]
    envelope = orjson.dumps([usage(m, T0) for m in models])
    await produce(bootstrap, topic(ns, "usage"), [(None, envelope), (b"zzz", envelope)])
    commands = await consume(
        bootstrap, [topic(ns, "warmup")], until=lambda records: len(records) >= 12
    )
    ids = [orjson.loads(r.value)["model_id"] for r in commands]
    assert sorted(ids) == sorted(models)  # one lease per model, not one per partition
    health = wait_for(
        lambda: (
            (h := worker.health())["tracked_models"] == 12
            and all(m["requests_total"] == 2 for m in h["models"])
            and h
        ),
        30,
        "12 models with two requests each in /health",
    )
    assert sorted(m["model_id"] for m in health["models"]) == sorted(models)


async def test_a_flood_of_new_models_has_its_health_written_before_the_timer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The timer would write in 10 minutes; past 50 changed models the usage agent writes
    # those that waited longest itself, so at most 50 are left waiting after each batch.
    ns = namespace()
    flood = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="fixed:10",
        health_flush_seconds=600,
        health_pending_max=50,
    ).start()
    try:
        models = [f"new-{i}" for i in range(800)]
        owned: dict[int, list[str]] = {}
        for model_id in models:  # one envelope per owner partition: nothing is forwarded
            owned.setdefault(partition_for(model_id, 2), []).append(model_id)
        envelopes = [
            (ids[0].encode(), orjson.dumps([usage(m, T0) for m in ids])) for ids in owned.values()
        ]
        await produce(kafka_bootstrap, topic(ns, "usage"), envelopes)
        written = await consume(
            kafka_bootstrap,
            [f"{ns}-app-model-health-changelog"],
            until=lambda records: len({r.key for r in records}) >= len(models) - 50,
        )
        assert {r.key.decode() for r in written} <= set(models)
        wait_for(
            lambda: flood.metrics().get("warmcast_usage_events_total") == len(models),
            30,
            "the flood's events to be counted",
        )
    finally:
        flood.stop()


async def two_partition_topics(bootstrap: str, ns: str) -> None:
    """Create the namespace's topics, with two partitions, before anything is produced."""
    settings = WarmcastSettings(kafka_bootstrap_servers=bootstrap, topic_namespace=ns)
    await ensure_topics(settings.model_copy(update={"partitions": 2}))


def batches_once_counted(worker: Worker, events: int) -> dict[str, float]:
    """The usage-batch histogram (``count``, ``sum``, ``le=<bound>``), once the worker has
    counted ``events`` usage events."""
    metrics = wait_for(
        lambda: (m := worker.metrics()).get("warmcast_usage_events_total") == events and m,
        60,
        f"{events} usage events to be counted",
    )
    name = "warmcast_usage_batch_messages"
    out = {"count": metrics[f"{name}_count"], "sum": metrics[f"{name}_sum"]}
    for key, value in metrics.items():
        if key.startswith(f'{name}_bucket{{le="'):
            out["le=" + key.split('"')[1]] = value
    return out


async def test_a_backlog_is_taken_in_full_batches(kafka_bootstrap: str, tmp_path: Path) -> None:
    # 300 messages wait in each partition when the worker starts. Caught up, a batch would
    # wait 1 ms (a few messages); behind by a full batch or more, it waits until it holds
    # the most a batch may (100).
    ns = namespace()
    await two_partition_topics(kafka_bootstrap, ns)
    backlog = [
        (f"m{i % 40}".encode(), orjson.dumps(usage(f"m{i % 40}", T0 + i))) for i in range(600)
    ]
    await produce(kafka_bootstrap, topic(ns, "usage"), backlog)
    behind = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="fixed:10",
        usage_batch_messages=100,
        usage_batch_seconds=0.001,
        usage_catchup_batch_seconds=5,
    ).start()
    try:
        batches = batches_once_counted(behind, 600)
        assert batches["sum"] == 600
        large = batches["count"] - batches["le=50.0"]
        assert large >= 2, f"batches of more than 50 messages: {large}"
        assert batches["le=100.0"] == batches["count"]
    finally:
        behind.stop()


async def test_a_batch_of_envelopes_is_full_at_its_bytes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # 20 envelopes of about 40 events (1.5 kB each) wait; a batch may wait 2 s and hold
    # 100 messages, but is full at 4 kB: the envelopes go at most 3 at a time.
    ns = namespace()
    await two_partition_topics(kafka_bootstrap, ns)
    owned: dict[int, list[str]] = {}
    for i in range(800):  # each envelope of models its partition owns: nothing is forwarded
        owned.setdefault(partition_for(f"e-{i}", 2), []).append(f"e-{i}")
    envelopes = [
        (ids[k].encode(), orjson.dumps([usage(m, T0) for m in ids[k : k + 40]]))
        for ids in owned.values()
        for k in range(0, len(ids), 40)
    ]
    assert all(1400 < len(body) < 1600 for _, body in envelopes)
    await produce(kafka_bootstrap, topic(ns, "usage"), envelopes)
    bounded = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="fixed:10",
        usage_batch_messages=100,
        usage_batch_seconds=2,
        usage_batch_bytes=4096,
    ).start()
    try:
        batches = batches_once_counted(bounded, 800)
        assert batches["sum"] == len(envelopes)
        assert batches["count"] >= len(envelopes) / 3
        assert batches["le=5.0"] == batches["count"]
    finally:
        bounded.stop()


async def test_restarted_worker_recovers_health_table(
    kafka_bootstrap: str, broker_kind: str, tmp_path: Path
) -> None:
    ns = namespace()
    first = Worker(kafka_bootstrap, tmp_path, ns, policy="hybrid").start()
    events = [(b"llama", orjson.dumps(usage("llama", T0 + i, cold_start=i == 0))) for i in range(3)]
    # On the embedded broker, one event at a time: each table write then travels in a
    # record batch of its own. It reports a partition's end offset as the last batch's
    # first offset + 1, so a recovery would stop short of a batch holding several records.
    # Any other broker gets the three at once.
    steps = [[e] for e in events] if broker_kind == "tansu" else [events]
    try:
        sent = 0
        for step in steps:
            await produce(kafka_bootstrap, topic(ns, "usage"), step)
            sent += len(step)
            wait_for(
                lambda n=sent: any(m["requests_total"] == n for m in first.health()["models"]),
                30,
                f"the first worker to count {sent} requests",
            )
    finally:
        assert first.stop() == 0
    second = Worker(kafka_bootstrap, tmp_path, ns, policy="hybrid").start()
    try:
        # recovered, the table's changelog partitions (2) are no longer fetched
        wait_for(
            lambda: second.metrics().get("warmcast_consumer_paused_partitions") == 2,
            30,
            "the recovered worker to pause its changelog partitions",
        )
        models = {m["model_id"]: m for m in second.health()["models"]}
        assert models["llama"]["requests_total"] == 3
        assert models["llama"]["cold_starts_total"] == 1
        assert models["llama"]["last_seen"] == T0 + 2
        assert second.metrics().get("warmcast_usage_events_total", 0) == 0  # nothing re-read
    finally:
        second.stop()
