"""Health snapshots: the rolling health of changed models, published periodically.

Snapshots go to the compacted health topic keyed by ``model_id``, so the topic holds the
latest health of every served model. Only models that saw events since the previous
round are published. The rankings of ``/health``'s listing are rebuilt here when they
fall short (after a rebalance, or once many ranked models have gone).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from mode.types.signals import BaseSignalT

from engine.health import ModelHealth
from streams.app import app, health_store, health_topic, model_health
from streams.healthstore import flush_in_steps, rank_in_steps, rebuild_rankings
from streams.partitioning import partition_for


def snapshot(model_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A model's health as of the newest event time of its partition."""
    if not stored:
        return None
    return snapshot_of(ModelHealth.from_dict(stored))


def snapshot_of(health: ModelHealth) -> dict[str, Any]:
    runtime = app.runtime
    partition = partition_for(health.model_id, runtime.usage_partitions)
    now = runtime.partition_event_time.get(partition, health.last_seen)
    return health.snapshot(now, runtime.settings.health_window_seconds)


def write_through_changelog() -> None:
    """Health entries go straight into the table's storage and out to its changelog in
    record batches (one table write through Faust costs a changelog send of its own)."""
    if health_store.writes_through:
        return
    runtime = app.runtime
    n = runtime.usage_partitions  # the table is partitioned as the usage topic
    emitter = app.emitter(model_health.changelog_topic.get_topic_name(), n)
    storage = model_health.data
    # The in-memory store drops the keys of partitions it no longer owns after a
    # rebalance; it learns a key's partition here, as it would from a changelog read.
    key_partition = getattr(storage, "_key_partition", None)

    def changelog(model_id: str, key: bytes, value: bytes | None) -> None:
        emitter.queue(model_id, value, int(time.time() * 1000))
        unfenced.add(partition_for(model_id, n))
        if key_partition is not None:
            if value is None:
                key_partition.pop(key, None)
            else:
                key_partition[key] = partition_for(model_id, n)

    health_store.write_through(storage, changelog)


#: The timer's flush goes in steps of this many models, with this pause between them: a
#: few thousand changed models then take a few hundred milliseconds to write, and the event
#: loop is never held long enough to keep the consumer from fetching (it waits for the
#: records of its last fetch to be taken before it fetches again).
FLUSH_STEP_MODELS = 100
FLUSH_PAUSE_SECONDS = 0.005
#: Past ``WARMCAST_HEALTH_PENDING_MAX`` changed models, a batch of usage writes at least
#: this many of those that have waited longest (a few milliseconds), not all of them at
#: once: a flood of new models keeps what waits bounded without stalling the events.
EARLY_FLUSH_MODELS = 500


#: Changelog partitions written to since their last fence (:func:`fence_changelog`).
unfenced: set[int] = set()
#: The key of the fence: a tombstone of a key that is never a served model's.
FENCE_KEY = b"\x00warmcast.fence"


async def fence_changelog() -> None:
    """End each changelog partition written to with a record of its own, a tombstone of
    :data:`FENCE_KEY`: a broker that reports a partition's end as the first offset of its
    last record batch + 1 (the embedded Tansu) then reports it right, and a worker that
    recovers the table after a restart reads the health records before the fence too."""
    if not unfenced or not health_store.writes_through:
        return
    topic = model_health.changelog_topic.get_topic_name()
    sender = app.sender
    due = sorted(unfenced)
    unfenced.clear()
    deliveries = [await sender.send(topic, None, key=FENCE_KEY, partition=p) for p in due]
    await asyncio.wait([d.done for d in deliveries])  # an abandoned one is not waited for


def queue_for_commit() -> None:
    """Before an offset commit: every changed model's health goes out to the changelog,
    so that the commit never moves past events whose health is not delivered (a restart
    then reads them again, and the health's ``offset`` keeps them from counting twice)."""
    write_through_changelog()
    health_store.flush()


app.before_commit.append(queue_for_commit)
app.after_drain.append(fence_changelog)


@app.task
async def hold_commits() -> None:
    """From the worker's start, each commit first delivers the changed health."""
    app.hold_commits()


@app.timer(interval=app.runtime.settings.health_flush_seconds)
async def write_health() -> None:
    """Write changed rolling health to its table (and so to the changelog)."""
    write_through_changelog()
    await flush_in_steps(health_store, FLUSH_STEP_MODELS, FLUSH_PAUSE_SECONDS)


@app.timer(interval=app.runtime.settings.health_snapshot_seconds)
async def publish_snapshots() -> None:
    """Publish the health of every model that changed since the last round, in steps
    that leave the event loop to the agents in between."""
    runtime = app.runtime
    due, runtime.dirty = runtime.dirty, set()
    emitter = app.emitter(health_topic.get_topic_name(), runtime.usage_partitions)
    now_ms = int(time.time() * 1000)
    for i, model_id in enumerate(sorted(due)):
        health = health_store.detached(model_id)  # a snapshot settles leases: a copy
        if health is None:
            continue
        emitter.queue(model_id, orjson.dumps(snapshot_of(health)), now_ms)
        runtime.metrics.health_snapshots.inc()
        if i % 200 == 199:
            await asyncio.sleep(0)


#: Seconds between two rankings of the models changed meanwhile: a listing's order is at
#: most this old (its figures are current).
RANK_SECONDS = 0.5
#: Models ranked between two turns of the event loop (a few microseconds each).
RANK_STEP_MODELS = 1000
#: Least seconds between two rebuilds that no change of partitions asked for (models
#: evicted from the top of a ranking): each is a pass over every model.
RANK_REBUILD_SECONDS = 30.0
_last_rebuild = [0.0]
_rebuilding: list[asyncio.Task[bool]] = []  # the rebuild under way, if any


@app.timer(interval=RANK_SECONDS)
async def keep_rankings() -> None:
    """Rank the models changed since the last round; rebuild the listing's rankings when
    they may miss models."""
    await rankings_now(rebuild_if_short=True)


async def rankings_now(rebuild_if_short: bool = False) -> None:
    """Bring the listing's rankings up to date: the models changed meanwhile ranked, and
    after a rebalance the one rebuild from the recovered tables done (a request waits for
    it, sharing it with the timer's), once the worker holds its partitions' tables (not
    while rebalancing or recovering). ``rebuild_if_short``: also rebuild, at most every
    :data:`RANK_REBUILD_SECONDS`, rankings that models leaving have left short."""
    await rank_in_steps(health_store, RANK_STEP_MODELS)
    rankings = health_store.rankings
    if not app.runtime.started or app.rebalancing or app.in_recovery:
        return
    if _rebuilding and not _rebuilding[0].done():
        await asyncio.shield(_rebuilding[0])
        return
    if not rankings.stale:
        if not rebuild_if_short or not rankings.wants_rebuild(app.runtime.settings.health_list_max):
            return
        if time.monotonic() - _last_rebuild[0] < RANK_REBUILD_SECONDS:
            return
    _last_rebuild[0] = time.monotonic()
    _rebuilding[:] = [asyncio.ensure_future(rebuild_rankings(health_store, RANK_STEP_MODELS))]
    await asyncio.shield(_rebuilding[0])


@app.on_rebalance_complete.connect
async def _rank_afresh(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    """The recovered tables hold models the rankings were never told of."""
    health_store.rankings.stale = True
