"""The health keeper called as the worker's timers and commit hooks call it: snapshots of
the models that changed, on the health topic keyed by model, as of their partition's event
time; the changelog written before a commit (the producer records; no broker)."""

from __future__ import annotations

import time

import orjson

from agents.health import FENCE_KEY
from schemas.health import HealthSnapshot
from streams.partitioning import partition_for
from tests.agents.recording import Worker, event, recording_worker, settled
from tests.agents.test_usage import owned_by

USAGE = "warmcast.usage.v1"
HEALTH = "warmcast.health.v1"


async def feed(w: Worker, partition: int, offset: int, events: list[dict[str, object]]) -> None:
    """Usage events of one message on ``partition``, processed and sent."""
    body = orjson.dumps(events)
    await w.parts.usage.process([event(w.app, USAGE, partition, offset, body)])
    await settled(w.app)


async def publish(w: Worker) -> list[dict[str, object]]:
    """One round of the snapshot timer; the snapshots it published."""
    before = len(w.producer.on(HEALTH))
    await w.parts.health.publish_snapshots()
    await settled(w.app)
    return [orjson.loads(r.value or b"") for r in w.producer.on(HEALTH)[before:]]


def snapshots_counted(w: Worker) -> float:
    return w.app.runtime.metrics.health_snapshots._value.get()


async def test_a_round_publishes_each_changed_model_once_keyed_by_it() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    a, b = owned_by(1), owned_by(2)
    now = time.time()
    await feed(w, 1, 0, [{"model_id": a, "ts": now - 30}, {"model_id": a, "ts": now, "count": 2}])
    await feed(w, 2, 0, [{"model_id": b, "ts": now}])
    published = await publish(w)
    by_model = {s["model_id"]: s for s in published}
    assert len(published) == 2 and set(by_model) == {a, b}
    assert by_model[a]["requests_total"] == 3 and by_model[b]["requests_total"] == 1
    assert {r.key for r in w.producer.on(HEALTH)} == {a.encode(), b.encode()}
    for s in published:
        HealthSnapshot.model_validate(s)  # the health topic's contract
    assert snapshots_counted(w) == 2


async def test_a_round_with_no_change_publishes_nothing() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    await feed(w, 0, 0, [{"model_id": owned_by(0), "ts": time.time()}])
    assert len(await publish(w)) == 1
    assert await publish(w) == []
    assert snapshots_counted(w) == 1


async def test_only_the_models_changed_since_the_last_round_are_published_again() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    a, b = owned_by(1), owned_by(3)
    now = time.time()
    await feed(w, 1, 0, [{"model_id": a, "ts": now - 60}])
    await feed(w, 3, 0, [{"model_id": b, "ts": now - 60}])
    assert len(await publish(w)) == 2
    await feed(w, 1, 1, [{"model_id": a, "ts": now}])
    [again] = await publish(w)
    assert again["model_id"] == a and again["requests_total"] == 2


async def test_a_snapshot_is_as_of_its_partitions_event_time() -> None:
    # model a went quiet long before its partition's newest event (model c's): its
    # snapshot is as of the partition's event time, not of its own last request
    w = recording_worker(partitions=4, policy="fixed:10")
    a = owned_by(1)
    c = next(f"c{i}" for i in range(1000) if partition_for(f"c{i}", 4) == 1)
    now = time.time()
    # (a jump in event time counts once the next event confirms it)
    later = [{"model_id": c, "ts": now - d} for d in (60, 30, 0)]
    await feed(w, 1, 0, [{"model_id": a, "ts": now - 3600}, *later])
    by_model = {s["model_id"]: s for s in await publish(w)}
    partition_time = w.app.runtime.partition_event_time[1]
    assert by_model[a]["last_seen"] == now - 3600
    assert by_model[a]["ts"] == partition_time > now - 3600
    assert by_model[c]["ts"] == now


async def test_a_commit_first_writes_the_changed_health_to_the_changelog() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    a = owned_by(2)
    await feed(w, 2, 0, [{"model_id": a, "ts": time.time(), "count": 5}])
    changelog = w.app.model_health.changelog_topic.get_topic_name()
    w.parts.health.queue_for_commit()
    await settled(w.app)
    await w.parts.health.fence_changelog()
    records = w.producer.on(changelog)
    written = [r for r in records if r.key != FENCE_KEY]
    assert written and all(r.partition == 2 for r in written)
    assert orjson.loads(written[-1].value or b"")  # the model's health, not a tombstone
    fences = [r for r in records if r.key == FENCE_KEY]
    assert [(f.partition, f.value) for f in fences] == [(2, None)]
    assert w.parts.health.unfenced == set()


async def test_nothing_changed_writes_no_changelog_record_and_no_fence() -> None:
    w = recording_worker(partitions=4, policy="fixed:10")
    changelog = w.app.model_health.changelog_topic.get_topic_name()
    w.parts.health.queue_for_commit()
    await settled(w.app)
    await w.parts.health.fence_changelog()
    assert w.producer.on(changelog) == []
