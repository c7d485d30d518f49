"""The worker's Faust app, made from settings by :func:`create_app`.

The app holds what every agent shares: the runtime (engines per partition, health,
alerts), the topics, the health table, the sender and the publishers. Topics are created
at start if missing. Agents are not registered here: :func:`agents.build_app` makes the
app and registers them (``warmcast run``, or ``faust -A agents.main worker``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TP, TopicT
from mode.types.signals import BaseSignalT

from engine import native
from streams.collector import settle_garbage_collector
from streams.crashes import AgentCrashes
from streams.deadletters import DeadLetters
from streams.emit import RecordEmitter, drain_all, drain_before_flush
from streams.healthstore import HealthStore
from streams.holding import InputGate
from streams.kafka import ensure_topics, topic_message_limits
from streams.partitioning import default_partitioner, partition_for
from streams.publishers import Publishers
from streams.runtime import Runtime
from streams.security import broker_credentials
from streams.sending import Backoff, Sender
from streams.sensors import UnmonitoredApp
from streams.settings import WarmcastSettings, load_settings
from streams.shutdown import Deadline, start_watchdog
from streams.workarounds import (
    ensure_producer,
    forget_unacked,
    seek_uncommitted_to_beginning,
    stop_fetching_changelogs,
    switch_fetching,
    tune_consumer,
    unacked_messages,
    warn_if_off,
)

log = logging.getLogger(__name__)


class WarmcastApp(UnmonitoredApp):
    """A Faust app that creates warmcast's topics before it subscribes to them (and
    leaves Faust's Monitor out, see :mod:`streams.sensors`)."""

    runtime: Runtime
    worker_topics: Topics
    #: Rolling health per served model (bytes of ModelHealth by model id's bytes).
    model_health: Any
    health_store: HealthStore
    publish: Publishers
    crashes: AgentCrashes
    dead_letters: DeadLetters
    #: Record emitters by topic (see :meth:`emitter`).
    emitters: dict[str, RecordEmitter]
    #: Called before every offset commit, before the emitters are drained: each queues
    #: what must be delivered before the offsets read so far are committed.
    before_commit: list[Callable[[], None]]
    #: Awaited before every offset commit, once the emitters have delivered what they held.
    after_drain: list[Callable[[], Awaitable[None]]]
    #: Every record the agents publish goes through it (see :mod:`streams.sending`).
    sender: Sender
    #: Acknowledges input messages once what they caused is delivered.
    gate: InputGate
    #: Set once the worker stops: what is left of its time to do so.
    stopping: Deadline | None = None
    _commits_held = False

    def emitter(
        self,
        topic: str,
        partitions: int,
        kind: type[RecordEmitter] = RecordEmitter,
        **options: Any,
    ) -> RecordEmitter:
        """The emitter of ``topic``: made at first use (the producer is running by then),
        drained before every offset commit and at shutdown."""
        found = self.emitters.get(topic)
        if found is None:
            self.hold_commits()
            found = self.emitters[topic] = kind(self.sender, topic, partitions, **options)
        return found

    def hold_commits(self) -> None:
        """Make every offset commit first deliver what :attr:`before_commit` queues and
        what the emitters hold (once; the producer is running by then)."""
        if not self._commits_held:
            self._commits_held = True
            drain_before_flush(
                self.producer,
                self.emitters,
                self._flush_timeout,
                self._before_commit,
                self._after_drain,
            )

    def _before_commit(self) -> None:
        for queue in self.before_commit:
            queue()

    async def _after_drain(self) -> None:
        for step in self.after_drain:
            await step()

    def _flush_timeout(self) -> float:
        if self.stopping is not None:
            return self.stopping.left(0.8)
        return self.runtime.settings.send_timeout_seconds

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        """Before a rebalance or a stop, Faust waits until every message taken is
        acknowledged: wait a bounded time for the deliveries they wait for, then let go
        those of held partitions (and any still waiting), unacknowledged."""
        settings = self.runtime.settings
        if self.stopping is not None:
            bound = self.stopping.left(0.4)
        else:
            # a rebalance: twice this stays within the group's session timeout
            bound = min(settings.session_timeout_seconds / 4, settings.shutdown_timeout_seconds)
        await self.gate.wait_settled(bound)
        for let_go in self.gate.release():
            log.warning(
                "%d message(s) of %s partition %d from offset %d let go unacknowledged, to "
                "be read again from there; what they caused was not delivered:%s",
                let_go.messages,
                let_go.tp.topic,
                let_go.tp.partition,
                let_go.offset,
                "".join(f"\n  not delivered: {line}" for line in let_go.undelivered),
            )
        try:
            await asyncio.wait_for(super()._consumer_wait_empty(consumer, logger), bound)
        except TimeoutError:
            untaken = unacked_messages(consumer)
            log.warning(
                "%d message(s) taken but not processed within %.0fs; read again after this",
                len(untaken) if untaken is not None else 0,
                bound,
            )
            if untaken is not None:
                untaken.clear()

    async def on_stop(self) -> None:
        """Stop within ``shutdown_timeout_seconds`` (see :mod:`streams.shutdown`)."""
        seconds = self.runtime.settings.shutdown_timeout_seconds
        self.stopping = Deadline(seconds)
        start_watchdog(seconds, self.undelivered)
        try:
            await super().on_stop()
        finally:
            given_up = self.sender.close()
            lines = [d.describe() for d in given_up] + self._queued_lines()
            if lines:
                log.error(
                    "stopping with records not delivered (the input behind them is read "
                    "again from its committed offset):%s",
                    "".join(f"\n  not delivered: {line}" for line in lines),
                )

    def undelivered(self) -> list[str]:
        """What has not reached the broker: deliveries tried again, records queued."""
        lines = [d.describe() for d in list(self.sender.retrying) if not d.done.done()]
        return lines + self._queued_lines()

    def _queued_lines(self) -> list[str]:
        return [
            f"{e.queued} record(s) queued for {topic}"
            for topic, e in list(self.emitters.items())
            if e.queued
        ]

    async def on_first_start(self) -> None:
        await super().on_first_start()
        runtime = self.runtime
        settings = runtime.settings
        # Faust leaves the root logger at DEBUG whatever the level asked for; every
        # debug call on the hot path would then build a record only to drop it.
        logging.getLogger().setLevel(settings.log_level.upper())
        partitions = await ensure_topics(settings)
        self.sender.topic_limits.update(await topic_message_limits(settings))
        settle_garbage_collector(settings.gc_young_threshold)
        runtime.usage_partitions = partitions.get(settings.topic("usage"), settings.partitions)
        runtime.warmup_partitions = partitions.get(settings.topic("warmup"), settings.partitions)


def input_gate(app: WarmcastApp) -> InputGate:
    """The app's :class:`InputGate`: pauses and resumes partitions in its Kafka consumer."""

    async def pause(tps: set[TP]) -> None:
        await switch_fetching(app, tps, False)

    async def resume(tps: set[TP]) -> None:
        await switch_fetching(app, tps, True)

    return InputGate(
        ack=lambda event: event.ack(),
        forget=lambda event: forget_unacked(app, event.message),
        pause=pause,
        resume=resume,
        abandon=lambda delivery: app.sender.abandon(delivery),
    )


def faust_options(settings: WarmcastSettings) -> dict[str, Any]:
    """Faust settings derived from warmcast's."""
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers or '127.0.0.1:9092'}",
        "store": "memory://",
        "datadir": settings.data_dir,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "table_standby_replicas": 0,
        "broker_rebalance_timeout": settings.rebalance_timeout_seconds,
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": settings.session_timeout_seconds / 4,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_advertised_host or settings.web_host,
        "web_port": settings.web_port,
        "producer_linger_ms": settings.producer_linger_ms,
        "producer_max_batch_size": settings.producer_batch_bytes,
        "producer_request_timeout": settings.send_timeout_seconds,
        "producer_partitioner": default_partitioner,
    }
    if settings.producer_compression != "none":
        options["producer_compression_type"] = settings.producer_compression
    credentials = broker_credentials(settings)  # SASL and TLS; None: plaintext
    if credentials is not None:
        options["broker_credentials"] = credentials
    return options


@dataclass(frozen=True)
class Topics:
    """The worker's topics (names from :meth:`WarmcastSettings.topic`)."""

    usage: TopicT
    metrics: TopicT
    warmup: TopicT
    alerts: TopicT
    health: TopicT


def create_app(settings: WarmcastSettings | None = None) -> WarmcastApp:
    """The worker's Faust app from ``settings`` (else from the environment): its topics,
    health table and publishers, without agents (:func:`agents.build_app` registers
    them)."""
    settings = settings or load_settings()
    app = WarmcastApp(settings.app_id, **faust_options(settings))
    runtime = app.runtime = Runtime(settings)
    app.emitters = {}
    app.before_commit = []
    app.after_drain = []
    app.sender = Sender(
        ensure_producer(app),
        app.conf.producer_max_request_size,
        backoff=Backoff(most=settings.send_retry_max_seconds),
        attempts=settings.send_attempts,
    )
    app.gate = input_gate(app)
    n = settings.partitions
    app.worker_topics = Topics(
        *(app.topic(settings.topic(name), partitions=n) for name in Topics.__annotations__)
    )
    #: Rolling health per served model, recovered from its changelog after a restart.
    app.model_health = app.Table(
        "model-health",
        default=None,
        partitions=n,
        key_type=bytes,  # the model id's bytes, partitioned as producers key usage events
        value_type=bytes,  # ModelHealth.to_bytes: compact, decoded only when needed
        use_partitioner=True,
    )
    #: The table's entries as the agents see them: changes are written in batches.
    app.health_store = HealthStore(app.model_health, ranked=2 * settings.health_list_max)
    app.publish = Publishers(
        runtime,
        app.sender,
        app.emitter,
        settings.topic("warmup"),
        settings.topic("alerts"),
    )
    app.crashes = AgentCrashes(runtime, app.publish)
    app.dead_letters = DeadLetters(runtime, app.sender, app.crashes)
    _connect_signals(app)
    return app


def _connect_signals(app: WarmcastApp) -> None:
    """What the app does at start, at each rebalance and at shutdown, beside its agents."""
    settings = app.runtime.settings
    fetch_wait = settings.fetch_max_wait_ms

    @app.task
    async def tune_fetches() -> None:
        warn_if_off(log)
        if not tune_consumer(app, fetch_wait):
            log.warning("could not set the consumer's fetch wait; latency may be higher")
        if native.PURE_REASON is None:
            log.info("engine: %s", native.describe())
        else:
            log.warning("engine: %s", native.describe())

    @app.on_partitions_assigned.connect
    async def _seek_uncommitted(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        if not seek_uncommitted_to_beginning(app):
            log.warning("partitions without a committed offset may skip what came first")

    @app.on_rebalance_complete.connect
    async def _pause_changelogs(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        paused = await stop_fetching_changelogs(app)
        app.runtime.metrics.paused_partitions.set(len(paused))

    @app.on_partitions_revoked.connect
    def _drop_decoded_health(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        """Partitions going away take their decoded health with them (see Runtime)."""
        revoked: set[TP] = args[0]
        usage = settings.topic("usage")
        partitions = {tp.partition for tp in revoked if tp.topic == usage}
        n = app.runtime.usage_partitions
        store = app.health_store
        store.flush(partitions, lambda model_id: partition_for(model_id, n))
        store.rankings.drop(lambda model_id: partition_for(model_id, n) in partitions)
        app.runtime.drop_decoded(partitions)

    @app.on_before_shutdown.connect
    async def _write_pending_health(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        """The consumer has stopped: write what the health table has not been told yet,
        and hand everything queued to the producer before it stops (within the stop's
        time)."""
        app.health_store.flush()
        left = app.stopping.left(0.5) if app.stopping is not None else None
        try:
            await asyncio.wait_for(drain_all(app.emitters), left)
        except TimeoutError:
            log.warning("queued records were not all handed to the producer within %.0fs", left)
