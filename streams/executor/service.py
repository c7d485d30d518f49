"""``warmcast executor``: carries out the warmup leases on a model server.

It reads the warmup topic in a consumer group of its own (executors of one group share its
partitions, and so its models), books every command (:class:`engine.leasebook.LeaseBook`)
and keeps the server's loaded models equal to what the leases want:

- a model is loaded so that it is ready when its lease starts (its measured load time
  ahead), kept while a lease covers the time, unloaded when none does; ``release``
  unloads at once; a command id seen before is ignored;
- at most ``concurrency`` loads at once, each within its timeout, tried again with
  exponential backoff and jitter; a circuit breaker per target stops calls to a failing
  server, and an alert (``executor_circuit_open``) says so until it answers again;
- a signed ``emergency_stop`` on the control topic stops loading (``release``: also unloads
  what it loaded) until ``resume``; unsigned or badly signed records are refused;
- when it starts (and when it is given partitions) it reads its partitions of the warmup
  topic from the start: the leases in force are rebuilt, then the server's index says
  what is loaded already;
- a warmup record that is not a command (malformed JSON, wrong schema) is logged,
  counted (``warmcast_executor_dead_letters_total``) and published to
  ``<warmup topic>.dlq`` with headers that say where it was read and why it was refused;
- every load's wall time is published as a ``load_time_seconds`` metric event (and
  ``memory_bytes`` when the server reports it), so warmcast learns real load times; a
  failed load is a ``load_failures`` metric event and a ``model_load_failed`` alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from engine.alerting import fingerprint
from engine.breaker import CircuitBreaker
from engine.leasebook import LeaseBook
from schemas.alert import Alert, label
from schemas.control import ControlCommand
from schemas.envelope import EventError
from schemas.metric import MetricEvent
from schemas.warmup import WarmupCommand
from streams.control_auth import (
    CONTROL_PARTITION,
    ControlRefused,
    ReplayGuard,
    signature_of,
    verify,
)
from streams.deadletters import error_headers
from streams.executor.adapters import AdapterError, ModelServer
from streams.executor.settings import ExecutorSettings
from streams.kafka import client_kwargs, ensure_topics, history_reader
from streams.sending import Backoff, truncate_to_fit
from streams.settings import WarmcastSettings

log = logging.getLogger("warmcast.executor")
T = TypeVar("T")

LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: weight of a new measured load time in a model's lead time
LEAD_WEIGHT = 0.5
#: how long stopping waits for each Kafka client (leaving the group, flushing alerts) before
#: it gives up on an unresponsive broker: a stop never hangs on the broker
STOP_SECONDS = 20.0


class CircuitOpen(AdapterError):
    """The target's circuit is open: the call was not made."""

    def __init__(self, target: str) -> None:
        super().__init__(f"circuit open for {target}: call not made", retriable=True)


class ExecutorMetrics:
    """The executor's Prometheus series, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.commands = Counter(
            "warmcast_executor_commands_total",
            "warmup commands read, by outcome (booked, duplicate, invalid)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("booked", "duplicate", "invalid"):
            self.commands.labels(outcome=outcome)
        self.loads = Counter("warmcast_executor_loads_total", "models loaded", registry=r)
        self.unloads = Counter("warmcast_executor_unloads_total", "models unloaded", registry=r)
        self.failures = Counter(
            "warmcast_executor_failures_total",
            "server calls that failed after their tries, by call",
            ["call"],
            registry=r,
        )
        for call in ("load", "unload", "index"):
            self.failures.labels(call=call)
        self.load_time = Histogram(
            "warmcast_executor_load_seconds",
            "wall time of a load, until the model is ready",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.ready_delay = Histogram(
            "warmcast_executor_ready_delay_seconds",
            "how long after its lease started a model was ready (0: ready in time)",
            buckets=(0.0, *LOAD_BUCKETS),
            registry=r,
        )
        self.models_loaded = Gauge(
            "warmcast_executor_models_loaded", "models this executor keeps loaded", registry=r
        )
        self.lease_lag = Gauge(
            "warmcast_executor_lease_lag_seconds",
            "longest a lease in force has waited for its model to be ready",
            registry=r,
        )
        self.circuit_open = Gauge(
            "warmcast_executor_circuit_open", "1 while the target's circuit is open", registry=r
        )
        self.stopped = Gauge(
            "warmcast_executor_emergency_stop", "1 while loading is stopped", registry=r
        )
        self.control_refused = Counter(
            "warmcast_executor_control_refused_total",
            "control records refused, by reason",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "warmcast_executor_dead_letters_total",
            "warmup records refused and sent to <warmup topic>.dlq, by reason",
            ["reason"],
            registry=r,
        )
        for reason in ("malformed_json", "schema_violation"):
            self.dead_letters.labels(reason=reason)
        self.publish_failures = Counter(
            "warmcast_executor_publish_failures_total",
            "metric events or alerts that could not be published after their tries",
            registry=r,
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.executor.partitions_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.executor.partitions_assigned(list(assigned))


class Executor:
    """One executor on one target. ``clock`` gives the time leases are judged by."""

    def __init__(
        self,
        adapter: ModelServer,
        settings: WarmcastSettings,
        options: ExecutorSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.adapter = adapter
        self.settings = settings
        self.options = options or ExecutorSettings()
        self.clock = clock
        self.metrics = ExecutorMetrics(registry)
        o = self.options
        self.book = LeaseBook(lead=o.lead_seconds)
        self.breaker = CircuitBreaker(
            o.breaker_failures, o.breaker_cooldown_seconds, o.breaker_max_cooldown_seconds
        )
        self.backoff = Backoff(first=0.2, most=o.retry_max_seconds)
        self.loads = asyncio.Semaphore(o.concurrency)
        self.loaded: set[str] = set()  # managed models the server holds, as last known
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.failed_until: dict[str, float] = {}
        self.failing: set[str] = set()  # models whose load-failed alert fires
        self.owner: dict[str, int] = {}  # model -> partition it was read from
        self.stopped = False
        self.stop_release = False
        self.guard = ReplayGuard(
            settings.control_max_age_seconds,
            settings.control_max_future_seconds,
            settings.control_replay_memory,
        )
        self.ready_delays: list[float] = []  # start-to-ready delay of each load (bench)
        self.commands_read = 0
        self.reconciles = 0  # times the plan was made
        self.resyncs = 0  # times the index was asked for
        self.assigned: set[int] = set()
        self.rebuilt = asyncio.Event()  # the assigned partitions have been read to their end
        self.synced = asyncio.Event()  # then the server's index was read: loads may start
        self._rebuild_to: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._resync_now = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._rng = random.Random()
        self.control_read = asyncio.Event()
        self._circuit_firing = False
        self._changed_at: dict[str, float] = {}  # model -> monotonic time of a load/unload
        #: refused warmup records waiting to be dead-lettered: (partition, offset, key, value, why)
        self._refused: list[tuple[int, int, bytes | None, bytes, EventError]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.adapter.start()
        self._producer = AIOKafkaProducer(**client_kwargs(self.settings), acks="all")
        await self._producer.start()
        group = self.options.group or f"{self.settings.app_id}-executor"
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=group,
            enable_auto_commit=True,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_seconds * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_seconds * 1000),
            fetch_max_wait_ms=200,
        )
        await self._consumer.start()
        self._consumer.subscribe([self.settings.topic("warmup")], listener=_Rebalance(self))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(), name="executor-consume"),
            loop.create_task(self._reconcile(), name="executor-reconcile"),
            loop.create_task(self._resync(), name="executor-resync"),
            loop.create_task(self._control(), name="executor-control"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self.in_flight.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for client in (self._consumer, self._producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), STOP_SECONDS)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs: left", type(client).__name__, STOP_SECONDS)
            except Exception as exc:  # a stop is best effort: the process is going
                log.warning("%s stop: %r", type(client).__name__, exc)
        self._consumer = self._producer = None
        await self.adapter.close()

    # -- the warmup topic --------------------------------------------------------------

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Nothing to do yet: a rebalance may give the same partitions back."""

    async def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Forget the models of partitions another executor owns now (not unloaded here);
        read newly given partitions from their start: the leases in force are rebuilt."""
        consumer = self._consumer
        now_assigned = {tp.partition for tp in assigned}
        lost = self.assigned - now_assigned
        if lost:
            gone = [m for m, p in self.owner.items() if p in lost]
            self.book.forget(gone)
            for model_id in gone:
                self.owner.pop(model_id, None)
                self.loaded.discard(model_id)
            for partition in lost:
                self._rebuild_to.pop(partition, None)
        new = [tp for tp in assigned if tp.partition not in self.assigned]
        self.assigned = now_assigned
        if consumer is None:
            return
        if new:
            ends = await consumer.end_offsets(new)
            self._rebuild_to.update({tp.partition: end for tp, end in ends.items() if end > 0})
            await consumer.seek_to_beginning(*new)
        if not self._rebuild_to:
            self.rebuilt.set()
            self._resync_now.set()
        else:
            self.rebuilt.clear()
            self.synced.clear()

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading %s failed; reading again", self.settings.topic("warmup"))
                await asyncio.sleep(1.0)
                continue
            changed = False
            for tp, records in batch.items():
                for record in records:
                    changed |= self.take(record.value, tp.partition, record.offset, record.key)
            await self._dead_letter_refused()
            await self._rebuild_progress(consumer)
            if not self._rebuild_to and self.assigned and not self.rebuilt.is_set():
                self.rebuilt.set()
                self._resync_now.set()
                log.info("leases rebuilt: %d models booked", len(self.book))
            if changed:
                self._wake.set()

    async def _rebuild_progress(self, consumer: AIOKafkaConsumer) -> None:
        """Drop the partitions read up to where they ended when they were given."""
        topic = self.settings.topic("warmup")
        for partition, end in list(self._rebuild_to.items()):
            if partition not in self.assigned:
                del self._rebuild_to[partition]
                continue
            with contextlib.suppress(Exception):
                if await consumer.position(TopicPartition(topic, partition)) >= end:
                    del self._rebuild_to[partition]

    def take(
        self,
        value: bytes | None,
        partition: int = 0,
        offset: int = -1,
        key: bytes | None = None,
    ) -> bool:
        """Book one warmup record; whether it changed the book. A record that is not a
        command is counted, logged and queued for ``<warmup topic>.dlq``."""
        self.commands_read += 1
        try:
            command = WarmupCommand.model_validate_json(value or b"")
        except ValidationError as exc:
            self._refuse(value or b"", partition, offset, key, exc)
            return False
        booked = self.book.add(
            command.command_id,
            command.model_id,
            command.action,
            command.issued_at,
            command.start,
            command.end,
        )
        self.metrics.commands.labels(outcome="booked" if booked else "duplicate").inc()
        if booked:
            self.owner[command.model_id] = partition
        return booked

    def _refuse(
        self, value: bytes, partition: int, offset: int, key: bytes | None, exc: ValidationError
    ) -> None:
        first = exc.errors(include_url=False)[:3]
        malformed = any(e["type"] == "json_invalid" for e in first) or not value
        reason = "malformed_json" if malformed else "schema_violation"
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<record>'}: {e['msg']}" for e in first)
        self.metrics.commands.labels(outcome="invalid").inc()
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.error(
            "warmup record %s[%d]@%d refused (%s): %s; dead-lettered to %s.dlq",
            self.settings.topic("warmup"), partition, offset, reason, why,
            self.settings.topic("warmup"),
        )  # fmt: skip
        error = EventError(reason=reason, error_class=type(exc).__name__, message=why)
        self._refused.append((partition, offset, key, value, error))

    async def _dead_letter_refused(self) -> None:
        """Publish the refused warmup records to ``<warmup topic>.dlq``, with headers that
        say where each was read and why it was refused."""
        topic = self.settings.topic("warmup")
        refused, self._refused = self._refused, []
        for partition, offset, key, value, error in refused:
            headers = error_headers(topic, partition, offset, error)
            key, value, headers = truncate_to_fit(
                key, value, headers, self.settings.max_message_bytes
            )
            await self._send(f"{topic}.dlq", key, value, headers)

    # -- keeping the server equal to the leases ---------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _reconcile(self) -> None:
        while True:
            await self.rebuilt.wait()
            await self.synced.wait()
            self._wake.clear()
            try:
                delay = self.reconcile_once()
            except Exception:
                log.exception("planning loads failed; planning again")
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def reconcile_once(self) -> float:
        """Start the loads and unloads the leases want now; seconds until it should look
        again."""
        self.reconciles += 1
        now = self.clock()
        if self.breaker.blocked(time.monotonic()):  # wait for the probe's turn
            retry = self.breaker.retry_at()
            return max(0.05, (retry - time.monotonic()) if retry is not None else 0.5)
        busy = set(self.in_flight)
        plan = self.book.plan(now, self.loaded | busy)
        unload = plan.unload
        if self.stopped and self.stop_release:
            unload = sorted(m for m in self.loaded if m in self.book.models and m not in busy)
        for model_id in unload:
            if model_id not in busy:
                self._spawn(model_id, self._unload(model_id))
        lag = 0.0
        for model_id in plan.load:
            due = self.book.due(model_id, now)
            if due is not None:
                lag = max(lag, now - due)
            if self.stopped or self.failed_until.get(model_id, 0.0) > now:
                continue
            self._spawn(model_id, self._load(model_id))
        self.metrics.lease_lag.set(max(0.0, lag))
        self._count_loaded()
        self.book.prune(now, self.loaded | set(self.in_flight))
        waits = [self.options.resync_seconds]
        upcoming = self.book.next_change(now)
        if upcoming is not None:
            waits.append(upcoming - now)
        retry = self.breaker.retry_at()
        if retry is not None and plan.load:
            waits.append(retry - time.monotonic())
        pending = [t - now for m, t in self.failed_until.items() if m in plan.load]
        waits.extend(pending)
        return max(0.01, min(waits))

    def _spawn(self, model_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.in_flight[model_id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.in_flight.get(model_id) is task:
                del self.in_flight[model_id]
            self._wake.set()

        task.add_done_callback(done)

    async def call(self, what: Callable[[], Awaitable[T]]) -> T:
        """A server call through the circuit breaker, tried again on retriable failures."""
        attempt = 0
        while True:
            attempt += 1
            if not self.breaker.allow(time.monotonic()):
                raise CircuitOpen(self.adapter.target)
            try:
                result = await what()
            except AdapterError as exc:
                if exc.retriable:
                    await self._circuit(self.breaker.failure(time.monotonic()), str(exc))
                else:
                    await self._circuit(self.breaker.success(time.monotonic()), "")
                if not exc.retriable or attempt >= self.options.attempts:
                    raise
                await asyncio.sleep(self.backoff.delay(attempt, self._rng))
                continue
            await self._circuit(self.breaker.success(time.monotonic()), "")
            return result

    async def _load(self, model_id: str) -> None:
        async with self.loads:
            now = self.clock()
            if self.stopped or not self.book.wanted(model_id, now):
                return
            due = self.book.due(model_id, now)
            started = time.monotonic()
            try:
                result = await self.call(
                    lambda: self.adapter.load(model_id, self.options.load_timeout_seconds)
                )
            except AdapterError as exc:
                if isinstance(exc, CircuitOpen):
                    return
                self.metrics.failures.labels(call="load").inc()
                self.failed_until[model_id] = self.clock() + self.options.failed_retry_seconds
                log.warning("load of %s on %s failed: %s", model_id, self.adapter.target, exc)
                await self._load_failed(model_id, str(exc))
                return
            seconds = time.monotonic() - started
            ready = self.clock()
        self.loaded.add(model_id)
        self._changed_at[model_id] = time.monotonic()
        self.failed_until.pop(model_id, None)
        self._count_loaded()
        self.metrics.loads.inc()
        self.metrics.load_time.observe(seconds)
        if due is not None:
            delay = max(0.0, ready - due)
            self.metrics.ready_delay.observe(delay)
            self.ready_delays.append(ready - due)
        previous = self.book.leads.get(model_id)
        lead = seconds if previous is None else previous + LEAD_WEIGHT * (seconds - previous)
        self.book.set_lead(model_id, lead)
        log.info("loaded %s in %.2fs", model_id, seconds)
        events = [MetricEvent(model_id=model_id, ts=ready, name="load_time_seconds",
                              value=seconds, unit="seconds")]  # fmt: skip
        if result.memory_bytes is not None and math.isfinite(result.memory_bytes):
            events.append(
                MetricEvent(
                    model_id=model_id,
                    ts=ready,
                    name="memory_bytes",
                    value=result.memory_bytes,
                    unit="bytes",
                )
            )
        await self._publish_metrics(events)
        if model_id in self.failing:
            self.failing.discard(model_id)
            await self._alert("model_load_failed", model_id, "resolved", "loads again")

    def _count_loaded(self) -> None:
        """The gauge follows the loaded set at each change, so it never trails a
        load or unload counted beside it."""
        self.metrics.models_loaded.set(len(self.loaded & set(self.book.models)))

    async def _load_failed(self, model_id: str, why: str) -> None:
        event = MetricEvent(
            model_id=model_id, ts=self.clock(), name="load_failures", value=1.0, unit=""
        )
        await self._publish_metrics([event])
        if model_id not in self.failing:
            self.failing.add(model_id)
            await self._alert("model_load_failed", model_id, "firing", f"load failed: {why}"[:200])

    async def _unload(self, model_id: str) -> None:
        try:
            await self.call(
                lambda: self.adapter.unload(model_id, self.options.call_timeout_seconds)
            )
        except AdapterError as exc:
            if not isinstance(exc, CircuitOpen):
                self.metrics.failures.labels(call="unload").inc()
                log.warning("unload of %s on %s failed: %s", model_id, self.adapter.target, exc)
            return
        self.loaded.discard(model_id)
        self._changed_at[model_id] = time.monotonic()
        self._count_loaded()
        self.metrics.unloads.inc()
        log.info("unloaded %s", model_id)

    async def _resync(self) -> None:
        """Read the server's index now and then: what it holds is what counts (a
        restarted server holds nothing)."""
        while True:
            self._resync_now.clear()
            try:
                await self.resync_once()
            except Exception:
                log.exception("reading the index of %s failed", self.adapter.target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), self.options.resync_seconds)

    async def resync_once(self) -> None:
        self.resyncs += 1
        asked = time.monotonic()
        complete = self.rebuilt.is_set()  # the book has every lease: this answer settles it
        try:
            held = await self.call(lambda: self.adapter.loaded(self.options.call_timeout_seconds))
        except AdapterError as exc:
            if not isinstance(exc, CircuitOpen):
                self.metrics.failures.labels(call="index").inc()
                log.warning("index of %s: %s", self.adapter.target, exc)
            return
        # what changed since the question was asked is known better here
        recent = {m for m, t in self._changed_at.items() if t >= asked}
        fresh = {m for m in held if m in self.book.models} - set(self.in_flight) - recent
        self.loaded = fresh | (self.loaded & recent)
        self._changed_at = {m: t for m, t in self._changed_at.items() if t >= asked}
        self._count_loaded()
        if complete and self.rebuilt.is_set():
            self.synced.set()
        self._wake.set()

    async def _circuit(self, change: str | None, why: str) -> None:
        if change is None:
            return
        target = self.adapter.target
        if change == "open":
            self.metrics.circuit_open.set(1)
            if self._circuit_firing:  # a probe failed: it is still open
                return
            self._circuit_firing = True
            log.warning("circuit open for %s: %s", target, why)
            await self._alert(
                "executor_circuit_open",
                target,
                "firing",
                f"{target} fails: no calls for a while ({why})"[:200],
                severity="critical",
            )
        else:
            self._circuit_firing = False
            self.metrics.circuit_open.set(0)
            log.info("circuit closed for %s", target)
            await self._alert("executor_circuit_open", target, "resolved", f"{target} answers")
            self._resync_now.set()

    # -- the control topic -------------------------------------------------------------

    async def _control(self) -> None:
        key = self.settings.control_key
        if key is None:
            log.warning("no control key: emergency stops on the control topic are not followed")
            self.control_read.set()
            return
        secret = key.get_secret_value().encode()
        topic = self.settings.topic("control")
        tp = TopicPartition(topic, CONTROL_PARTITION)
        while True:
            consumer = history_reader(self.settings)
            try:
                await consumer.start()
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                if end == 0:
                    self.control_read.set()
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for record in batch.get(tp, []):
                        self.control(record.value, record.headers, secret,
                                     history=record.offset < end)  # fmt: skip
                        if record.offset + 1 >= end:
                            self.control_read.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following %s failed; starting again", topic)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def control(
        self, value: bytes | None, headers: Any, key: bytes, *, history: bool = False
    ) -> str | None:
        """Apply one control record; why it was refused (``None``: applied or not ours)."""
        raw = value or b""
        try:
            verify(raw, signature_of(headers), key)
            command = ControlCommand.model_validate_json(raw)
        except ControlRefused as exc:
            self.metrics.control_refused.labels(reason=exc.reason).inc()
            log.warning("control record refused: %s", exc)
            return exc.reason
        except ValidationError:
            self.metrics.control_refused.labels(reason="schema_violation").inc()
            return "schema_violation"
        refused = self.guard.admit(command.id, command.ts, time.time(), history=history)
        if refused is not None:
            self.metrics.control_refused.labels(reason=refused).inc()
            return refused
        if command.command == "emergency_stop":
            self.stopped, self.stop_release = True, command.release
            log.warning("emergency stop: no more loads (release=%s)", command.release)
        elif command.command == "resume":
            self.stopped = self.stop_release = False
            log.info("resumed: loading again")
        self.metrics.stopped.set(1 if self.stopped else 0)
        self._wake.set()
        return None

    # -- what it publishes -------------------------------------------------------------

    async def _send(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = self._producer
        if producer is None:
            return
        for attempt in range(1, self.settings.send_attempts + 1):
            try:
                await asyncio.wait_for(
                    producer.send_and_wait(
                        topic,
                        value,
                        key=key.encode() if isinstance(key, str) else key,
                        headers=headers,
                    ),
                    self.settings.send_timeout_seconds,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt >= self.settings.send_attempts:
                    self.metrics.publish_failures.inc()
                    log.error("could not publish to %s: %s", topic, exc)
                    return
                await asyncio.sleep(self.backoff.delay(attempt, self._rng))

    async def _publish_metrics(self, events: list[MetricEvent]) -> None:
        topic = self.settings.topic("metrics")
        for event in events:
            await self._send(topic, event.model_id or "", event.model_dump_json().encode())

    async def _alert(
        self, kind: str, subject: str, state: str, summary: str, severity: str = "warning"
    ) -> None:
        alert = Alert.model_validate(
            {
                "fingerprint": fingerprint(kind, subject),
                "kind": kind,
                "severity": severity,
                "state": state,
                "subject": label(subject),
                "summary": label(summary),
                "ts": time.time(),
            }
        )
        await self._send(self.settings.topic("alerts"), alert.fingerprint,
                         alert.model_dump_json().encode())  # fmt: skip

    # -- what it shows -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "target": self.adapter.target,
            "rebuilt": self.rebuilt.is_set(),
            "synced": self.synced.is_set(),
            "circuit": self.breaker.state,
            "emergency_stop": self.stopped,
            "commands_read": self.commands_read,
            "booked_models": len(self.book),
            "leased": sorted(self.book.leased(now)),
            "loaded": sorted(self.loaded),
            "loading": sorted(self.in_flight),
        }

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)


async def serve_web(executor: Executor, host: str, port: int) -> Any:
    """``/metrics`` (Prometheus) and ``/status`` (JSON); returns the aiohttp runner."""
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=executor.metrics_text(), content_type="text/plain")

    async def status(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(executor.status()), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


__all__ = ["CircuitOpen", "Executor", "ExecutorMetrics", "serve_web"]
