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
from streams.app import WarmcastApp
from streams.healthstore import flush_in_steps, rank_in_steps, rebuild_rankings
from streams.partitioning import partition_for
from streams.workarounds import key_partitions

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
#: The key of the fence: a tombstone of a key that is never a served model's.
FENCE_KEY = b"\x00warmcast.fence"
#: Seconds between two rankings of the models changed meanwhile: a listing's order is at
#: most this old (its figures are current).
RANK_SECONDS = 0.5
#: Models ranked between two turns of the event loop (a few microseconds each).
RANK_STEP_MODELS = 1000
#: Least seconds between two rebuilds that no change of partitions asked for (models
#: evicted from the top of a ranking): each is a pass over every model.
RANK_REBUILD_SECONDS = 30.0


class HealthKeeper:
    """Writes the health table through to its changelog, publishes snapshots, keeps the
    listing's rankings (one per worker)."""

    def __init__(self, app: WarmcastApp) -> None:
        self.app = app
        self.store = app.health_store
        #: Changelog partitions written to since their last fence (:meth:`fence_changelog`).
        self.unfenced: set[int] = set()
        self._last_rebuild = 0.0
        self._rebuilding: asyncio.Task[bool] | None = None  # the rebuild under way, if any

    def snapshot(self, model_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """A model's health as of the newest event time of its partition."""
        if not stored:
            return None
        return self.snapshot_of(ModelHealth.from_dict(stored))

    def snapshot_of(self, health: ModelHealth) -> dict[str, Any]:
        runtime = self.app.runtime
        step = runtime.steps.get(partition_for(health.model_id, runtime.usage_partitions))
        now = health.last_seen if step is None or step.event_time is None else step.event_time
        return health.snapshot(now, runtime.settings.health_window_seconds)

    def write_through_changelog(self) -> None:
        """Health entries go straight into the table's storage and out to its changelog
        in record batches (one table write through Faust costs a changelog send of its
        own)."""
        store = self.store
        if store.writes_through:
            return
        app = self.app
        n = app.runtime.usage_partitions  # the table is partitioned as the usage topic
        emitter = app.emitter(app.model_health.changelog_topic.get_topic_name(), n)
        storage = app.model_health.data
        # The in-memory store drops the keys of partitions it no longer owns after a
        # rebalance; it learns a key's partition here, as it would from a changelog read.
        key_partition = key_partitions(storage)
        unfenced = self.unfenced

        def changelog(model_id: str, key: bytes, value: bytes | None) -> None:
            emitter.queue(model_id, value, int(time.time() * 1000))
            unfenced.add(partition_for(model_id, n))
            if key_partition is not None:
                if value is None:
                    key_partition.pop(key, None)
                else:
                    key_partition[key] = partition_for(model_id, n)

        store.write_through(storage, changelog)

    async def fence_changelog(self) -> None:
        """End each changelog partition written to with a record of its own, a tombstone
        of :data:`FENCE_KEY`: a broker that reports a partition's end as the first offset
        of its last record batch + 1 (the embedded Tansu) then reports it right, and a
        worker that recovers the table after a restart reads the health records before
        the fence too."""
        if not self.unfenced or not self.store.writes_through:
            return
        topic = self.app.model_health.changelog_topic.get_topic_name()
        sender = self.app.sender
        due = sorted(self.unfenced)
        self.unfenced.clear()
        deliveries = [await sender.send(topic, None, key=FENCE_KEY, partition=p) for p in due]
        await asyncio.wait([d.done for d in deliveries])  # an abandoned one is not waited for

    def queue_for_commit(self) -> None:
        """Before an offset commit: every changed model's health goes out to the
        changelog, so that the commit never moves past events whose health is not
        delivered (a restart then reads them again, and the health's ``offset`` keeps
        them from counting twice)."""
        self.write_through_changelog()
        self.store.flush()

    async def write_health(self) -> None:
        """Write changed rolling health to its table (and so to the changelog)."""
        self.write_through_changelog()
        await flush_in_steps(self.store, FLUSH_STEP_MODELS, FLUSH_PAUSE_SECONDS)

    async def publish_snapshots(self) -> None:
        """Publish the health of every model that changed since the last round, in steps
        that leave the event loop to the agents in between."""
        app = self.app
        runtime = app.runtime
        due, runtime.dirty = runtime.dirty, set()
        emitter = app.emitter(app.worker_topics.health.get_topic_name(), runtime.usage_partitions)
        now_ms = int(time.time() * 1000)
        for i, model_id in enumerate(sorted(due)):
            health = self.store.detached(model_id)  # a snapshot settles leases: a copy
            if health is None:
                continue
            emitter.queue(model_id, orjson.dumps(self.snapshot_of(health)), now_ms)
            runtime.metrics.health_snapshots.inc()
            if i % 200 == 199:
                await asyncio.sleep(0)

    async def rankings_now(self, rebuild_if_short: bool = False) -> None:
        """Bring the listing's rankings up to date: the models changed meanwhile ranked,
        and after a rebalance the one rebuild from the recovered tables done (a request
        waits for it, sharing it with the timer's), once the worker holds its partitions'
        tables (not while rebalancing or recovering). ``rebuild_if_short``: also rebuild,
        at most every :data:`RANK_REBUILD_SECONDS`, rankings that models leaving have
        left short."""
        app = self.app
        await rank_in_steps(self.store, RANK_STEP_MODELS)
        rankings = self.store.rankings
        if not app.runtime.started or app.rebalancing or app.in_recovery:
            return
        if self._rebuilding is not None and not self._rebuilding.done():
            await asyncio.shield(self._rebuilding)
            return
        if not rankings.stale:
            most = app.runtime.settings.health_list_max
            if not rebuild_if_short or not rankings.wants_rebuild(most):
                return
            if time.monotonic() - self._last_rebuild < RANK_REBUILD_SECONDS:
                return
        self._last_rebuild = time.monotonic()
        self._rebuilding = asyncio.ensure_future(rebuild_rankings(self.store, RANK_STEP_MODELS))
        await asyncio.shield(self._rebuilding)


def register(app: WarmcastApp) -> HealthKeeper:
    """Register the health timers and commit hooks on ``app``; returns its keeper."""
    keeper = HealthKeeper(app)
    settings = app.runtime.settings
    app.before_commit.append(keeper.queue_for_commit)
    app.after_drain.append(keeper.fence_changelog)

    @app.task
    async def hold_commits() -> None:
        """From the worker's start, each commit first delivers the changed health."""
        app.hold_commits()

    @app.timer(interval=settings.health_flush_seconds)
    async def write_health() -> None:
        await keeper.write_health()

    @app.timer(interval=settings.health_snapshot_seconds)
    async def publish_snapshots() -> None:
        await keeper.publish_snapshots()

    @app.timer(interval=RANK_SECONDS)
    async def keep_rankings() -> None:
        """Rank the models changed since the last round; rebuild the listing's rankings
        when they may miss models."""
        await keeper.rankings_now(rebuild_if_short=True)

    @app.on_rebalance_complete.connect
    async def _rank_afresh(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        """The recovered tables hold models the rankings were never told of."""
        app.health_store.rankings.stale = True

    return keeper
