"""Learned state that survives a crash, a rebalance and a stalled broker.

- **Checkpoints.** Each partition's state (its engine with policy, analyzers, learners and
  leases, and its anomaly learners) is sealed and signed (:mod:`engine.checkpoint`) and
  written to ``<ns>.checkpoints.v1`` (:mod:`streams.checkpoint`) every
  ``WARMCAST_CHECKPOINT_INTERVAL_SECONDS``, when partitions are revoked and at shutdown,
  with, per input topic, the next offset the state has not seen.
- **Restore.** When partitions are assigned, before their streams resume, the latest
  verified checkpoint of each new partition is taken back. Then the state is brought to
  the group's committed offset: messages between the checkpoint and the commit are
  replayed into the engine alone (their commands are published again: they are
  idempotent), and when the checkpoint is ahead of the commit, the commit is moved up to
  it so that nothing the state has seen reaches the engine twice.
- **Alerts.** ``checkpoint_rejected`` (a checkpoint that failed verification),
  ``broker_unreachable`` (no fetch response for ``WARMCAST_BROKER_STALL_SECONDS``) and
  ``consumer_lag`` (more than ``WARMCAST_MAX_CONSUMER_LAG`` usage messages behind).

Without ``WARMCAST_CHECKPOINT_KEY`` nothing is checkpointed, and the worker says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from aiokafka import TopicPartition
from faust.streams import current_event
from faust.types import TP
from mode.types.signals import BaseSignalT
from prometheus_client import Counter, Gauge

from engine.alerting import AlertTransition, RateWindow
from engine.checkpoint import (
    CheckpointHeader,
    CheckpointRejected,
    PartitionState,
    key_id,
    pack,
    restore,
    seal,
)
from engine.lease import Command
from streams import offsets as input_offsets
from streams.app import WarmcastApp
from streams.checkpoint import CheckpointStore
from streams.workarounds import commit_offsets

log = logging.getLogger(__name__)

#: Alert kinds of the reliability checks raised here (the control module adds ``control``).
#: The worker's own health alert kinds are :data:`streams.prometheus.ALERT_KINDS`.
RELIABILITY_ALERT_KINDS = ("checkpoint_rejected", "broker_unreachable", "consumer_lag")
#: Refusals that mean someone wrote what they should not have (``stale`` is ordinary).
HOSTILE = ("unsigned", "bad_signature", "malformed", "mismatch", "forbidden_class")


class ControlHistory(Protocol):
    """What recovery needs of the control topic's follower
    (:class:`streams.control_feed.ControlFeed`)."""

    async def wait_history(self, timeout: float) -> None: ...

    def broker_answered(self) -> float | None: ...

    async def stop(self) -> None: ...


class ReliabilityMetrics:
    def __init__(self, registry: Any) -> None:
        r = registry
        self.checkpoints = Counter(
            "warmcast_checkpoints_total", "checkpoints written", ["trigger"], registry=r
        )
        self.checkpoint_bytes = Gauge(
            "warmcast_checkpoint_bytes", "size of the latest checkpoint written", registry=r
        )
        self.checkpoint_failures = Counter(
            "warmcast_checkpoint_failures_total",
            "checkpoints that could not be written",
            registry=r,
        )
        self.rejected = Counter(
            "warmcast_checkpoints_rejected_total",
            "checkpoints refused (never deserialised)",
            ["reason"],
            registry=r,
        )
        for reason in HOSTILE:  # exposed from the start, so that a rule sees them rise
            self.rejected.labels(reason=reason)
        self.restores = Counter(
            "warmcast_restores_total", "partitions taken over, by outcome", ["outcome"], registry=r
        )
        self.replayed = Counter(
            "warmcast_replayed_messages_total",
            "messages replayed into an engine after a restore",
            registry=r,
        )
        self.lag = Gauge(
            "warmcast_consumer_lag_messages", "usage messages not yet read", registry=r
        )
        self.broker_answer = Gauge(
            "warmcast_broker_last_response_timestamp_seconds",
            "wall time of the latest answer from the broker",
            registry=r,
        )
        self.capped = Counter(
            "warmcast_models_evicted_total",
            "served models evicted to stay under WARMCAST_MAX_MODELS_PER_PARTITION",
            registry=r,
        )
        self.suppressed = Counter(
            "warmcast_warm_leases_withheld_total",
            "warm leases not issued during an emergency stop",
            registry=r,
        )


class Recovery:
    """Checkpoints out, restores in, for the partitions this worker owns."""

    def __init__(self, app: WarmcastApp, feed: ControlHistory) -> None:
        self.app = app
        self.runtime = runtime = app.runtime
        self.settings = settings = runtime.settings
        self.feed = feed
        self.usage_topic = settings.topic("usage")
        #: input kind -> its topic, and back
        self.inputs = {"usage": self.usage_topic, "metrics": settings.topic("metrics")}
        self.kinds = {topic: kind for kind, topic in self.inputs.items()}
        secret = settings.checkpoint_key
        self.key = secret.get_secret_value().encode() if secret else b""
        self.store = CheckpointStore(settings, self.key, self._rejected) if self.key else None
        self.metrics = ReliabilityMetrics(runtime.metrics.registry)
        self.owned: set[int] = set()
        self.pending: set[int] = set()
        self.written: dict[int, tuple[Any, ...]] = {}
        self.rejections = RateWindow(max(settings.dead_letter_window_seconds, 60.0))
        self.writer = f"{settings.app_id}@{settings.web_advertised_host or settings.web_host}"
        self.writer += f":{settings.web_port}"
        self._counted: dict[int, tuple[int, int]] = {}  # id(engine) -> (capped, withheld)
        self._started_wall = time.time()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    # -- checkpoints ----------------------------------------------------------------

    def offsets_of(self, partition: int) -> dict[str, int]:
        """Per input, the next offset the partition's state has not seen; no further than
        the offset a held input partition is held at (what the messages from there caused
        is not delivered yet, so a restore must read them again)."""
        out: dict[str, int] = {}
        for kind, topic in self.inputs.items():
            seen = self.runtime.positions.get((kind, partition))
            if seen is not None:
                held = self.app.gate.held_offset(topic, partition)
                out[kind] = seen + 1 if held is None else min(seen + 1, held)
        return out

    async def checkpoint(self, partitions: set[int], trigger: str, name: str = "") -> list[int]:
        """Write the state of ``partitions`` (those with any); returns those written."""
        if self.store is None:
            return []
        due: list[tuple[int, CheckpointHeader, bytes]] = []
        for partition in sorted(partitions):
            state = self.runtime.partition_state(partition)
            if state is None:
                continue
            offsets = self.offsets_of(partition)
            stats = state.engine.stats
            signature: tuple[Any, ...] = (sorted(offsets.items()), stats.events)
            signature += (stats.metric_events, stats.minutes_closed, stats.commands)
            signature += (self.runtime.safe_mode, self.runtime.lineup.generation)
            if trigger == "periodic" and self.written.get(partition) == signature:
                continue
            header = CheckpointHeader(
                partition=partition,
                offsets=offsets,
                policy=self.settings.policy,
                namespace=self.settings.topic_namespace,
                name=name,
                writer=self.writer,
                policy_version=self.runtime.lineup.version,
                generation=self.runtime.lineup.generation,
            )
            due.append((partition, header, pack(state)))  # here, where nothing else runs
            if not name:
                self.written[partition] = signature
        if not due:
            return []
        if trigger == "periodic":
            # What the state has seen is in the health table and on the warmup topic
            # before the checkpoint says so (a restore may skip those messages).
            self.app.health_store.flush()
            await self.app.producer.flush()
        done: list[int] = []
        for partition, header, pickled in due:
            try:
                sealed = await asyncio.to_thread(seal, pickled, header, self.key)
                await self.store.write(header, sealed)
            except Exception:
                self.written.pop(partition, None)
                self.metrics.checkpoint_failures.inc()
                log.exception("could not checkpoint partition %d (%s)", partition, trigger)
                continue
            self.metrics.checkpoints.labels(trigger=trigger).inc()
            self.metrics.checkpoint_bytes.set(len(sealed))
            done.append(partition)
        covered = {partition: header.offsets for partition, header, _ in due if partition in done}
        log.info("checkpointed %s (%s%s)", covered, trigger, f" {name!r}" if name else "")
        return done

    def _rejected(self, reason: str, detail: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        if reason in HOSTILE:
            self.rejections.add(time.time(), 1)

    # -- assignment and restore -----------------------------------------------------

    def assigned(self, partitions: set[int]) -> None:
        """A new assignment: forget what went away, restore what is new."""
        gone = self.owned - partitions
        new = partitions - self.owned
        self.runtime.forget_partitions(gone | new)
        for partition in gone:
            self.written.pop(partition, None)
        self.pending = (self.pending | new) & partitions
        self.owned = set(partitions)

    async def restore_pending(self) -> None:
        """Before the streams resume after a rebalance: take back the state of newly
        assigned partitions, and make sure kept ones do not see a message twice."""
        await self.feed.wait_history(timeout=30.0)  # an emergency stop holds from the start
        pending, self.pending = sorted(self.pending), set()
        kept = sorted(self.owned - set(pending))
        generation = self.app.consumer_generation_id
        try:
            await self.keep_in_step(kept)
        except Exception:
            log.exception("could not check the committed offsets of partitions %s", kept)
        if not pending or self.store is None:
            return
        try:
            await self.store.sync()
        except Exception:
            log.exception("could not read the checkpoints; partitions %s start afresh", pending)
            self.metrics.restores.labels(outcome="failed").inc(len(pending))
            return
        for partition in pending:
            if partition not in self.owned or self.app.consumer_generation_id != generation:
                continue
            try:
                outcome = await self.restore_partition(partition)
            except CheckpointRejected as exc:  # counted by restore_partition
                outcome = "rejected"
                log.error("checkpoint of partition %d refused: %s", partition, exc)
            except Exception:
                outcome = "failed"
                log.exception("could not restore partition %d; it starts afresh", partition)
            self.metrics.restores.labels(outcome=outcome).inc()

    async def keep_in_step(self, partitions: list[int]) -> None:
        """A partition this worker keeps across a rebalance keeps its engine; when the
        group's commit is behind what the engine has seen (a commit refused while the
        group was rebalancing), the commit moves up to it."""
        ahead: dict[TP, int] = {}
        for partition in partitions:
            committed = await self.committed_offsets(partition)
            for kind, seen in self.offsets_of(partition).items():
                if seen > committed.get(kind, seen):
                    ahead[TP(self.inputs[kind], partition)] = seen
        if ahead:
            await self.app.producer.flush()  # what they have seen is delivered first
            await commit_offsets(self.app, ahead)
            log.info("commit moved up to what the engines have seen: %s", ahead)

    async def restore_partition(self, partition: int, name: str = "") -> str:
        """Restore one partition from its latest checkpoint (or snapshot ``name``); a
        refused one raises :class:`CheckpointRejected`, counted by its reason."""
        try:
            return await self._restore_partition(partition, name)
        except CheckpointRejected as exc:
            self._rejected(exc.reason, str(exc))
            raise

    async def _restore_partition(self, partition: int, name: str) -> str:
        assert self.store is not None
        loaded = await self.store.load(partition, name)
        if loaded is None:
            what = f"snapshot {name!r}" if name else "checkpoint"
            log.info("partition %d has no %s: it learns afresh", partition, what)
            return "none"
        header, payload = loaded
        if header.policy != self.settings.policy:
            log.warning(
                "checkpoint of partition %d is of policy %r, this worker runs %r: not restored",
                partition,
                header.policy,
                self.settings.policy,
            )
            return "policy_changed"
        state = await asyncio.to_thread(restore, payload)
        stats = state.engine.stats  # counted by the worker that wrote the checkpoint
        self._counted[id(state.engine)] = (stats.capped_models, stats.suppressed_warm)
        if name:  # an operator's snapshot: its state, from where the streams are now
            self.runtime.install_state(partition, state)
            log.info("partition %d restored from snapshot %r", partition, name)
            return "restored"
        committed = await self.committed_offsets(partition)
        replay: dict[str, tuple[int, int]] = {}
        ahead: dict[TP, int] = {}
        for kind, start in header.offsets.items():
            end = committed.get(kind)
            if end is None or kind not in self.inputs:
                continue
            if start < end:
                replay[kind] = (start, end)
            elif start > end:
                ahead[TP(self.inputs[kind], partition)] = start
        state.engine.paused = self.runtime.paused
        commands: list[Command] = []
        if replay:
            commands, n = await self.replay_into(state, partition, replay)
            self.metrics.replayed.inc(n)
        if ahead:  # the state has seen more than was committed: start after it
            await commit_offsets(self.app, ahead)
        self.runtime.install_state(partition, state)
        for kind, start in header.offsets.items():
            if kind in self.inputs:
                self.runtime.positions[kind, partition] = max(start, committed.get(kind, 0)) - 1
        await self.app.publish.commands(commands)
        log.info(
            "partition %d restored from its checkpoint at %s (committed %s): replayed %s, "
            "moved commit to %s, %d commands again",
            partition,
            header.offsets,
            committed,
            replay,
            {tp.topic: o for tp, o in ahead.items()},
            len(commands),
        )
        return "restored"

    # -- alerts and metrics -----------------------------------------------------------

    def check(self, now: float) -> list[AlertTransition]:
        """Alert transitions of the reliability conditions, and gauges kept current."""
        out: list[AlertTransition] = []
        disabled = self.settings.disabled_alerts
        alerts = self.runtime.alerts
        rejected = self.rejections.count(now)
        if "checkpoint_rejected" not in disabled:
            out += alerts.check(
                "checkpoint_rejected",
                self.settings.topic("checkpoints"),
                rejected > 0,
                ts=now,
                value=rejected,
                threshold=0,
                severity="critical",
                summary=f"{rejected:.0f} checkpoints failed verification and were refused",
                for_seconds=0,
            )
        answers = [
            t for t in (self.feed.broker_answered(), self._store_answered()) if t is not None
        ]
        last = max(answers) if answers else None
        if last is not None:
            self.metrics.broker_answer.set(last)
        silent = now - (last if last is not None else self._started_wall)
        if "broker_unreachable" not in disabled:
            out += alerts.check(
                "broker_unreachable",
                self.settings.kafka_bootstrap_servers or "",
                silent > self.settings.broker_stall_seconds,
                ts=now,
                value=round(silent, 3),
                threshold=self.settings.broker_stall_seconds,
                severity="critical",
                summary=f"no answer from the broker for {silent:.0f}s",
                for_seconds=0,
            )
        lag = self.usage_lag()
        if lag is not None:
            self.metrics.lag.set(lag)
        if "consumer_lag" not in disabled and lag is not None:
            out += alerts.check(
                "consumer_lag",
                self.usage_topic,
                lag > self.settings.max_consumer_lag,
                ts=now,
                value=lag,
                threshold=self.settings.max_consumer_lag,
                summary=f"{lag} usage messages not yet read",
                clear=lag < self.settings.max_consumer_lag * (1 - self.settings.alert_hysteresis),
            )
        self._count_engines()
        firing = alerts.firing_kinds()
        for kind in (*RELIABILITY_ALERT_KINDS, "control"):
            self.runtime.metrics.alerts_firing.labels(kind=kind).set(firing.get(kind, 0))
        return out

    def _store_answered(self) -> float | None:
        return self.store.broker_answered() if self.store is not None else None

    def _count_engines(self) -> None:
        seen: dict[int, tuple[int, int]] = {}
        for engine in self.runtime.engines.values():
            now = (engine.stats.capped_models, engine.stats.suppressed_warm)
            before = self._counted.get(id(engine), (0, 0))
            self.metrics.capped.inc(max(now[0] - before[0], 0))
            self.metrics.suppressed.inc(max(now[1] - before[1], 0))
            seen[id(engine)] = now
        self._counted = seen

    async def committed_offsets(self, partition: int) -> dict[str, int]:
        """The group's committed offset of each input partition; its first offset when the
        group has none (where the worker will start)."""
        tps = [TopicPartition(topic, partition) for topic in self.inputs.values()]
        committed = await input_offsets.committed_offsets(self.settings, self.app.conf.id, tps)
        return {self.kinds[tp.topic]: offset for tp, offset in committed.items()}

    async def replay_into(
        self, state: PartitionState, partition: int, ranges: dict[str, tuple[int, int]]
    ) -> tuple[list[Command], int]:
        """Feed the messages of ``ranges`` ([start, end) per input) to a restored state as
        the agents would have, in the order they were written; returns the commands."""
        by_tp = {TopicPartition(self.inputs[kind], partition): r for kind, r in ranges.items()}
        records = await input_offsets.read_ranges(
            self.settings, by_tp, self.settings.max_message_bytes
        )
        written = input_offsets.written_order(records, self.kinds)
        commands = self.runtime.replay(state, partition, written)
        return commands, len(written)

    def usage_lag(self) -> int | None:
        """Usage messages this worker has not read yet, over its partitions."""
        consumer = self.app.consumer
        read = self.runtime.read_offsets
        total, known = 0, False
        try:
            assignment = consumer.assignment()
        except Exception:
            return None
        for tp in assignment:
            if tp.topic != self.usage_topic:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:
                continue
            if highwater is None:
                continue
            done = read.get(tp.partition)
            if done is None:
                done = self.runtime.positions.get(
                    ("usage", tp.partition)
                )  # restored, nothing read yet
            if done is None:
                continue
            total += max(highwater - (done + 1), 0)
            known = True
        return total if known else None

    def current_position(self) -> tuple[str, int, int] | None:
        """The input, partition and offset of the message being processed, if any."""
        event = current_event()
        if event is None:
            return None
        message = event.message
        kind = self.kinds.get(message.topic)
        return None if kind is None else (kind, message.partition, message.offset)


def register(app: WarmcastApp, recovery: Recovery) -> None:
    """Register checkpoints and restores on ``app``: at each rebalance, at shutdown and on
    a timer."""
    settings = app.runtime.settings
    usage = settings.topic("usage")
    app.runtime.position_source = recovery.current_position

    @app.task
    async def announce_checkpoints() -> None:
        if recovery.enabled:
            log.info(
                "checkpoints on: every %.0fs to %s, signed with key %s",
                settings.checkpoint_interval_seconds,
                settings.topic("checkpoints"),
                key_id(recovery.key),
            )
        else:
            log.warning(
                "checkpoints are off (no WARMCAST_CHECKPOINT_KEY): learned state is lost when "
                "this worker stops"
            )

    @app.on_partitions_revoked.connect
    async def _checkpoint_revoked(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        revoked: set[TP] = args[0]
        await recovery.checkpoint({tp.partition for tp in revoked if tp.topic == usage}, "revoke")

    @app.on_partitions_assigned.connect
    async def _note_assigned(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        assigned: set[TP] = args[0]
        recovery.assigned({tp.partition for tp in assigned if tp.topic == usage})

    @app.on_rebalance_complete.connect
    async def _restore_assigned(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        await recovery.restore_pending()

    @app.on_before_shutdown.connect
    async def _checkpoint_at_shutdown(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        try:
            await recovery.checkpoint(set(recovery.owned), "shutdown")
        finally:
            if recovery.store is not None:
                await recovery.store.stop()
            await recovery.feed.stop()

    @app.timer(interval=settings.checkpoint_interval_seconds)
    async def checkpoint_periodically() -> None:
        if recovery.enabled and not app.rebalancing:
            await recovery.checkpoint(set(recovery.owned), "periodic")

    @app.timer(interval=settings.alert_check_seconds)
    async def check_reliability() -> None:
        for alert in recovery.check(time.time()):
            await app.publish.alert(alert)
