"""Learned state survives: a worker killed with SIGKILL, partitions moving between
workers, checkpoints that are tampered with, and hostile input.

Usage is the shipped Azure Functions excerpt (150 served models, 4 hours, about 11,400
usage events), published in envelopes to the partition that owns their models, so that
each partition's engine sees its events in a known order. The reference is the same
engine run offline, uninterrupted, over each partition's events: a worker's commands
(deduplicated by ``command_id``) must be exactly those.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from engine.checkpoint import MAGIC, CheckpointHeader, pack, restore, seal, unseal
from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.partitioning import partition_for
from tests.integration.harness import Worker, consume, namespace, topic, wait_for
from tools.traces import load_azure

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"
T0 = 1_563_177_600.0  # 2019-07-15: a replay of history, far from the wall clock
KEY = "checkpoint key of the reliability tests"
TOKEN = "control token of the reliability tests"
PARTITIONS = 2
ENVELOPE = 40

Event = tuple[float, str, int]


def trace_events() -> list[Event]:
    return list(load_azure(SAMPLE, t0=T0).events)


def by_partition(events: Iterable[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = defaultdict(list)
    for ev in events:
        out[partition_for(ev[1], PARTITIONS)].append(ev)
    return out


def envelopes(events: list[Event]) -> dict[int, list[bytes]]:
    """Each partition's events, in order, in envelopes of ``ENVELOPE`` events."""
    out: dict[int, list[bytes]] = {}
    for partition, evs in by_partition(events).items():
        out[partition] = [
            orjson.dumps(
                [{"model_id": m, "ts": ts, "count": c} for ts, m, c in evs[i : i + ENVELOPE]]
            )
            for i in range(0, len(evs), ENVELOPE)
        ]
    return out


async def publish(bootstrap: str, topic_name: str, events: list[Event]) -> dict[int, int]:
    """Publish envelopes to their owning partitions; returns messages per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    counts: dict[int, int] = {}
    try:
        for partition, values in envelopes(events).items():
            for value in values:
                await producer.send(topic_name, value, key=b"envelope", partition=partition)
            counts[partition] = len(values)
        await producer.flush()
    finally:
        await producer.stop()
    return counts


def reference(spec: str, *phases: list[Event]) -> set[str]:
    """Command ids of one uninterrupted engine per partition over all phases."""
    ids: set[str] = set()
    engines: dict[int, WarmupEngine] = {}
    for events in phases:
        for partition, evs in by_partition(events).items():
            engine = engines.get(partition)
            if engine is None:
                knobs = {"knob": 1.0} if spec == "warmcast" else {}
                engine = engines[partition] = WarmupEngine(make_policy(spec, **knobs))
            for ts, model_id, count in evs:
                ids.update(c.command_id for c in engine.observe(model_id, ts, count))
    return ids


async def command_ids(bootstrap: str, ns: str, expected: set[str]) -> set[str]:
    """Every command id on the warmup topic, once all of ``expected`` are there."""
    records = await consume(
        bootstrap,
        [topic(ns, "warmup")],
        until=lambda rs: expected <= {orjson.loads(r.value)["command_id"] for r in rs},
        timeout=60,
    )
    return {orjson.loads(r.value)["command_id"] for r in records}


def diff_share(got: set[str], expected: set[str]) -> float:
    return len(got ^ expected) / max(len(expected), 1)


def health(worker: Worker) -> dict[str, Any]:
    """``/health``, also while the worker is not ready (503)."""
    try:
        return worker.health()
    except urllib.error.HTTPError as exc:
        return dict(orjson.loads(exc.read()))


def metric(worker: Worker, name: str) -> float:
    return worker.metrics().get(name, 0.0)


def control_status(worker: Worker) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}/control", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(orjson.loads(response.read()))


def checkpointed(worker: Worker, messages: dict[int, int]) -> bool:
    """Whether the worker's latest checkpoints cover exactly ``messages`` per partition."""
    latest = control_status(worker)["checkpoints"]["latest"]
    return all(
        latest.get(str(p), {}).get("offsets", {}).get("usage") == n for p, n in messages.items()
    )


async def committed(bootstrap: str, ns: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic(ns, "usage"), p) for p in range(PARTITIONS)]
        offsets = await admin.list_consumer_group_offsets(f"{ns}-app", partitions=tps)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float, what: str
) -> None:
    """Poll an asynchronous probe until it returns ``expected``."""
    deadline = time.monotonic() + timeout
    while (got := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {got} != {expected}")
        await asyncio.sleep(0.25)


def worker(bootstrap: str, tmp_path: Path, ns: str, **settings: Any) -> Worker:
    options: dict[str, Any] = {
        "checkpoint_key": KEY,
        "control_token": TOKEN,
        "partitions": PARTITIONS,
    }
    options.update(settings)
    return Worker(bootstrap, tmp_path, ns, **options)


async def test_killed_worker_resumes_with_its_learned_state(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL after a checkpoint and after more messages were committed: the next
    worker takes the checkpoint back, replays what came after it, and then decides
    exactly as a worker that never stopped."""
    events = trace_events()
    a, b = len(events) // 2, 3 * len(events) // 4
    phase1, phase2, phase3 = events[:a], events[a:b], events[b:]
    ns = namespace()
    usage = topic(ns, "usage")
    first = worker(
        kafka_bootstrap, tmp_path, ns, policy="warmcast", checkpoint_interval_seconds=15
    ).start()
    try:
        sent1 = await publish(kafka_bootstrap, usage, phase1)
        wait_for(lambda: checkpointed(first, sent1), 40, "a checkpoint covering phase 1")
        sent2 = await publish(kafka_bootstrap, usage, phase2)
        total = {p: sent1[p] + sent2[p] for p in sent1}
        wait_for(
            lambda: metric(first, "warmcast_usage_events_total") == len(phase1) + len(phase2),
            30,
            "phase 2 to be processed",
        )
        await eventually(
            lambda: committed(kafka_bootstrap, ns), total, 30, "the group to commit phase 2"
        )
        assert checkpointed(first, sent1), "a checkpoint was written after phase 2"
    finally:
        first.stop(signal.SIGKILL)

    second = worker(kafka_bootstrap, tmp_path, ns, policy="warmcast").start()
    try:
        assert metric(second, 'warmcast_restores_total{outcome="restored"}') == PARTITIONS
        assert metric(second, "warmcast_replayed_messages_total") == sum(sent2.values())
        await publish(kafka_bootstrap, usage, phase3)
        wait_for(
            lambda: metric(second, "warmcast_usage_events_total") == len(phase3),
            30,
            "phase 3 to be processed (and phase 2 not again)",
        )
        expected = reference("warmcast", phase1, phase2, phase3)
        got = await command_ids(kafka_bootstrap, ns, expected)
    finally:
        second.stop()
    forgetful = reference("warmcast", phase1, phase2) | reference("warmcast", phase3)
    assert len(expected) > 5000
    assert got == expected, (
        f"{diff_share(got, expected):.2%} of commands differ from an uninterrupted run "
        f"(a restart without the checkpoint: {diff_share(forgetful, expected):.2%})"
    )
    assert diff_share(forgetful, expected) > 0.02  # the learned state matters


async def test_tampered_checkpoints_are_refused_and_a_newer_one_skips_what_it_covers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A tampered checkpoint and an unsigned pickle are refused (never unpickled: the
    pickle would create a file), an alert fires, the partitions restore from their
    previous good checkpoints; and a good checkpoint ahead of the group's commit makes
    the worker start after the messages it covers."""
    events = trace_events()[:2000]
    ns = namespace()
    usage, checkpoints = topic(ns, "usage"), topic(ns, "checkpoints")
    first = worker(kafka_bootstrap, tmp_path, ns, policy="hybrid").start()
    try:
        sent = await publish(kafka_bootstrap, usage, events)
        wait_for(
            lambda: metric(first, "warmcast_usage_events_total") == len(events), 30, "processed"
        )
    finally:
        assert first.stop() == 0  # checkpoints at shutdown
    good = await latest_checkpoints(kafka_bootstrap, checkpoints)
    assert {p: h.offsets["usage"] for p, (h, _) in good.items()} == sent

    pwned = tmp_path / "pwned"
    bomb = pickle.dumps(Pwn(str(pwned)))
    _, record0 = good[0]
    tampered = bytearray(record0)
    tampered[-5] ^= 0xFF
    # The dead worker had also read two more messages of partition 1 and checkpointed
    # them, but not committed them: a checkpoint signed with the key, ahead of the commit.
    header1, record1 = good[1]
    ahead_events = [(T0 + 4 * 3600 + i, m, 1) for i, m in enumerate(models_of(1, 2))]
    _, payload = unseal(record1, KEY.encode())
    state = restore(payload)
    for ts, model_id, count in ahead_events:
        state.engine.observe(model_id, ts, count)
    ahead_header = CheckpointHeader(
        partition=1,
        offsets={"usage": header1.offsets["usage"] + 2},
        policy="hybrid",
        namespace=ns,
    )
    ahead = seal(pack(state), ahead_header, KEY.encode())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8 << 20)
    await producer.start()
    try:
        await producer.send_and_wait(checkpoints, bytes(tampered), key=b"0", partition=0)
        await producer.send_and_wait(checkpoints, bomb, key=b"1", partition=1)
        await producer.send_and_wait(checkpoints, MAGIC + b"\0" * 32 + bomb, key=b"1", partition=1)
        await producer.send_and_wait(checkpoints, ahead, key=b"1", partition=1)
        for ts, model_id, count in ahead_events:
            value = orjson.dumps({"model_id": model_id, "ts": ts, "count": count})
            await producer.send_and_wait(usage, value, key=model_id.encode(), partition=1)
    finally:
        await producer.stop()

    second = worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="hybrid",
        alert_check_seconds=0.5,
        alerts_disabled="insufficient_volume,health_degraded,stale_data",
    ).start()
    try:
        metrics = second.metrics()
        assert metrics['warmcast_checkpoints_rejected_total{reason="bad_signature"}'] == 2
        assert metrics['warmcast_checkpoints_rejected_total{reason="unsigned"}'] == 1
        assert metrics['warmcast_restores_total{outcome="restored"}'] == PARTITIONS
        alerts = await consume(
            kafka_bootstrap,
            [topic(ns, "alerts")],
            until=lambda rs: any(b"checkpoint_rejected" in r.value for r in rs),
        )
        fired = [orjson.loads(r.value) for r in alerts if b"checkpoint_rejected" in r.value]
        assert fired[0]["state"] == "firing" and fired[0]["severity"] == "critical"
        model = models_of(1, 3)[2]
        later = orjson.dumps({"model_id": model, "ts": T0 + 4 * 3600 + 60, "count": 1})
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(usage, later, key=model.encode(), partition=1)
        finally:
            await producer.stop()
        wait_for(
            lambda: metric(second, "warmcast_usage_events_total") >= 1, 30, "the later message"
        )
        assert metric(second, "warmcast_usage_events_total") == 1  # the two covered: skipped
    finally:
        second.stop()
    assert not pwned.exists(), "a checkpoint nobody signed was unpickled"


class Pwn:
    """Unpickling this creates a file: what a forged checkpoint would try."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def models_of(partition: int, n: int) -> list[str]:
    found = (f"ahead-{i}" for i in range(10_000))
    return [m for m in found if partition_for(m, PARTITIONS) == partition][:n]


async def latest_checkpoints(
    bootstrap: str, checkpoints: str
) -> dict[int, tuple[CheckpointHeader, bytes]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=32 << 20,
    )
    await consumer.start()
    out: dict[int, tuple[CheckpointHeader, bytes]] = {}
    try:
        tps = [TopicPartition(checkpoints, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    assert r.key is not None and r.value is not None
                    if b"@" not in r.key:
                        out[int(r.key)] = (unseal(r.value, KEY.encode())[0], r.value)
            if len(out) == PARTITIONS and not batch:
                break
    finally:
        await consumer.stop()
    return out


async def test_two_workers_split_the_partitions_and_hand_them_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A second worker takes one partition with its learned state; when it stops, the
    first takes it back with the state it learned meanwhile. Together they issue
    exactly the commands of one uninterrupted worker, and either answers for any
    served model."""
    events = trace_events()
    cuts = [len(events) // 3, 2 * len(events) // 3]
    phases = [events[: cuts[0]], events[cuts[0] : cuts[1]], events[cuts[1] :]]
    ns = namespace()
    usage = topic(ns, "usage")
    first = worker(kafka_bootstrap, tmp_path, ns, policy="hybrid").start()
    second = worker(kafka_bootstrap, tmp_path, ns, policy="hybrid")
    try:
        await publish(kafka_bootstrap, usage, phases[0])
        wait_for(
            lambda: metric(first, "warmcast_usage_events_total") == len(phases[0]), 30, "phase 1"
        )
        second.start()
        wait_for(
            lambda: (
                health(first)["assigned_partitions"] != health(second)["assigned_partitions"]
                and health(first)["ready"]
                and health(second)["ready"]
            ),
            60,
            "the partitions to be split",
        )
        owner = {p: w for w in (first, second) for p in health(w)["assigned_partitions"]}
        assert sorted(owner) == [0, 1]
        assert metric(second, 'warmcast_restores_total{outcome="restored"}') == 1

        await publish(kafka_bootstrap, usage, phases[1])
        done = len(phases[0]) + len(phases[1])
        wait_for(
            lambda: sum(metric(w, "warmcast_usage_events_total") for w in (first, second)) == done,
            30,
            "phase 2, split between the workers",
        )
        for partition, evs in by_partition(phases[1]).items():
            model_id = evs[-1][1]
            answers = [orjson.loads(w.get(f"/health/models/{model_id}")) for w in (first, second)]
            assert answers[0]["served_by"] == answers[1]["served_by"]
            assert answers[0]["served_by"].endswith(f":{owner[partition].port}")
        assert second.stop() == 0
        wait_for(
            lambda: health(first)["assigned_partitions"] == [0, 1] and health(first)["ready"],
            60,
            "the first worker to take both partitions back",
        )
        assert metric(first, 'warmcast_restores_total{outcome="restored"}') >= 1
        before = metric(first, "warmcast_usage_events_total")
        await publish(kafka_bootstrap, usage, phases[2])
        wait_for(
            lambda: metric(first, "warmcast_usage_events_total") == before + len(phases[2]),
            30,
            "phase 3",
        )
        assert metric(first, "warmcast_late_events_total") == 0, "a message was seen twice"
        expected = reference("hybrid", *phases)
        got = await command_ids(kafka_bootstrap, ns, expected)
    finally:
        second.stop()
        first.stop()
    assert got == expected, f"{diff_share(got, expected):.2%} of commands differ from one worker"


async def test_hostile_input_ends_processed_or_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Huge, deeply nested, non-finite, out-of-range and garbage messages, and a flood of
    never-seen served models: every item ends as an event processed or a dead letter,
    the tracked models stay under their cap, and the worker stays up."""
    ns = namespace()
    cap = 25
    w = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="hybrid",
        max_models_per_partition=cap,
        max_message_bytes=65_536,
        alert_check_seconds=0.5,
    ).start()
    usage = topic(ns, "usage")
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    deep_item = b'[{"model_id": "m", "ts": 60}, {"model_id": "m", "x": ' + b"[" * 300
    deep_item += b"]" * 300 + b"}]"
    hostile: list[tuple[bytes, int]] = [  # (message, items in it)
        (orjson.dumps({"model_id": "m", "ts": 60, "node": "x" * 100_000}), 1),
        (deep, 1),
        (deep_item, 2),
        (b'{"model_id": "m", "ts": NaN}', 1),
        (b'{"model_id": "m", "ts": 60, "latency": Infinity}', 1),
        (b'{"model_id": "m", "ts": "2300-01-01T00:00:00Z"}', 1),
        (b'{"model_id": "m", "ts": -5}', 1),
        (b'[{"model_id": "m", "ts": 61}, 7, null, "x", {"model_id": "", "ts": 1}]', 5),
        (b"\xff\xfe\x00garbage", 1),
        (b'{"events": {"not": "a list"}}', 1),
    ]
    home = partition_for("m", PARTITIONS)  # no event is forwarded
    flood = [(T0 + i, f"never-seen-{i}", 1) for i in range(4000)]
    flood_messages = envelopes(flood)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 << 20)
    await producer.start()
    try:
        for value, _ in hostile:
            await producer.send_and_wait(usage, value, key=b"m", partition=home)
        for partition, values in flood_messages.items():
            for value in values:
                await producer.send_and_wait(usage, value, key=b"f", partition=partition)
    finally:
        await producer.stop()
    items = sum(n for _, n in hostile) + len(flood)
    messages = len(hostile) + sum(len(v) for v in flood_messages.values())
    try:

        def accounted() -> dict[str, float] | None:
            m = w.metrics()
            consumed = m.get(f'warmcast_messages_consumed_total{{topic="{usage}"}}', 0)
            dead = sum(v for k, v in m.items() if k.startswith("warmcast_dead_letters_total{"))
            done = m.get("warmcast_usage_events_total", 0) + dead
            evicted = m.get("warmcast_models_evicted_total", 0)  # counted on a timer
            if consumed == messages and done == items and evicted >= len(flood) - 2 * cap:
                return m
            return None

        metrics = wait_for(accounted, 60, f"{messages} messages, {items} items accounted for")
        assert metrics["warmcast_usage_events_total"] == 2 + len(flood)
        assert metrics["warmcast_tracked_models"] <= cap * PARTITIONS
        assert metrics["warmcast_models_evicted_total"] >= len(flood) - cap * PARTITIONS
        health = wait_for(
            lambda: (h := w.health())["tracked_models"] <= cap * PARTITIONS and h,
            30,
            "the rolling health to follow the engines' evictions",
        )
        assert health["ready"]
        assert w.process is not None and w.process.poll() is None
        assert "checkpoints are off (no WARMCAST_CHECKPOINT_KEY)" in w.log.read_text()
    finally:
        w.stop()


def requests_of(worker: Worker, models: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for model in models:
        try:
            doc = orjson.loads(worker.get(f"/health/models/{model}"))
        except urllib.error.HTTPError:
            continue
        out[model] = int(doc["requests_total"])
    return out


async def test_rolling_health_counts_each_request_once_across_a_kill(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL while the worker's health is written out faster than it commits: the next
    worker reads again what was not committed, and every model's ``requests_total`` ends
    at exactly the requests sent, none lost and none counted twice."""
    events = trace_events()[:6000]
    a, b = len(events) // 3, 2 * len(events) // 3
    phase1, phase2, phase3 = events[:a], events[a:b], events[b:]
    sent_requests: dict[str, int] = defaultdict(int)
    for _, model, count in events:
        sent_requests[model] += count
    ns = namespace()
    usage = topic(ns, "usage")
    fast_health = {"health_flush_seconds": 0.2}
    first = worker(kafka_bootstrap, tmp_path, ns, policy="hybrid", **fast_health).start()
    try:
        sent1 = await publish(kafka_bootstrap, usage, phase1)
        await eventually(lambda: committed(kafka_bootstrap, ns), sent1, 60, "phase 1 committed")
        sent2 = await publish(kafka_bootstrap, usage, phase2)
        wait_for(
            lambda: metric(first, "warmcast_usage_events_total") == len(phase1) + len(phase2),
            60,
            "phase 2 to be processed",
        )
    finally:
        first.stop(signal.SIGKILL)
    second = worker(kafka_bootstrap, tmp_path, ns, policy="hybrid", **fast_health).start()
    try:
        sent3 = await publish(kafka_bootstrap, usage, phase3)
        ends = {p: sent1[p] + sent2[p] + sent3[p] for p in sent1}
        await eventually(lambda: committed(kafka_bootstrap, ns), ends, 90, "all committed")
        got = requests_of(second, sent_requests)
    finally:
        second.stop()
    wrong = {m: (got.get(m), n) for m, n in sent_requests.items() if got.get(m) != n}
    assert not wrong, f"{len(wrong)} of {len(sent_requests)} models (got, sent): {wrong}"
