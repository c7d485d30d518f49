"""The control topic followed by every worker, outside the consumer group (an emergency
stop must reach all of them): its history read first, to the end each partition had when
the worker started, and folded into the mode it leaves (stopped, safe, or neither, with
its maintenance windows in force) before the streams run; then each new command carried
out as it comes (snapshots and restores in the history are not done again).

Only records signed under ``WARMCAST_CONTROL_KEY`` (:mod:`streams.control_auth`), on the
control partition, within their age and with a command id not seen before are carried
out. A record refused is counted (``warmcast_control_rejected_total{reason}``),
dead-lettered to ``<control topic>.dlq`` and raises the alert ``control_rejected``; what
is carried out is acknowledged on the alerts topic, kind ``control``. Whoever published a
command can wait for its outcome by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter
from pydantic import ValidationError

from engine.alerting import AlertTransition, RateWindow, fingerprint
from engine.maintenance import WindowSpecError, parse_window
from schemas.control import ControlCommand
from schemas.envelope import EventError
from streams.app import WarmcastApp
from streams.control_auth import (
    CONTROL_PARTITION,
    REASONS,
    ControlRefused,
    ReplayGuard,
    signature_of,
    verify,
)
from streams.kafka import history_reader, last_answer, topic_partitions
from streams.runtime import Runtime

log = logging.getLogger(__name__)

#: Carries a command out; returns what was done.
Executor = Callable[[ControlCommand], Awaitable[dict[str, Any]]]


class ControlFeed:
    """Follows the control topic: history first, then every new command."""

    def __init__(self, app: WarmcastApp) -> None:
        self.app = app
        self.runtime = runtime = app.runtime
        self.settings = settings = runtime.settings
        self.topic = settings.topic("control")
        #: The key control records are signed with (empty: none is configured, none is
        #: carried out).
        self.key = settings.control_key.get_secret_value().encode() if settings.control_key else b""
        #: Carries a command out (:meth:`agents.control.Controls.execute`); until one is
        #: given, none is.
        self.execute: Executor | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []
        self.history_read = asyncio.Event()
        self.boundary: dict[TopicPartition, int] | None = None  # where the history ends
        self.next_offsets: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.done: OrderedDict[str, dict[str, Any]] = OrderedDict()  # recent results by id
        self.applied = 0
        self.guard = ReplayGuard(
            settings.control_max_age_seconds,
            settings.control_max_future_seconds,
            settings.control_replay_memory,
        )
        self.refused = Counter(
            "warmcast_control_rejected_total",
            "control records refused, never carried out (unsigned, bad signature, stale, "
            "replayed, ...)",
            ["reason"],
            registry=runtime.metrics.registry,
        )
        for reason in REASONS:
            self.refused.labels(reason=reason)
        self.rejections = RateWindow(max(settings.dead_letter_window_seconds, 60.0))
        self.latest_refusal = ""

    def broker_answered(self) -> float | None:
        """Wall time (s) of the latest fetch response from the broker."""
        consumer = self.consumer
        return None if consumer is None else last_answer(consumer, self.tps)

    def ensure_started(self) -> None:
        """Follow the topic from now on (the first rebalance needs it before any task
        of the app has started)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close()

    async def wait_history(self, timeout: float) -> None:
        self.ensure_started()
        try:
            await asyncio.wait_for(self.history_read.wait(), timeout)
        except TimeoutError:
            log.warning("the control topic's history was not read within %.0fs", timeout)

    def known(self, command_id: str) -> bool:
        """Whether a command id has been used (carried out, refused as a replay, or on
        its way)."""
        seen = self.guard.seen
        return command_id in seen or command_id in self.waiters or command_id in self.done

    def expect(self, command_id: str) -> asyncio.Future[dict[str, Any]]:
        future = self.waiters.get(command_id)
        if future is None:
            future = self.waiters[command_id] = asyncio.get_running_loop().create_future()
        return future

    async def _follow(self) -> None:
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following %s failed; starting again", self.topic)
                await self._close()
                await asyncio.sleep(1.0)

    async def _close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def run(self) -> None:
        """Read the history to the end of each partition (a fetch response's high
        watermark), come up in the mode it leaves, then carry out each new command."""
        consumer = await self._start()
        since = time.time() * 1000
        early: list[ConsumerRecord[bytes, bytes]] = []
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    self.next_offsets[tp] = record.offset + 1
                    if self.history_read.is_set():
                        await self._live(record)
                    else:
                        early.append(record)
            if self.history_read.is_set():
                continue
            if self.boundary is None:
                stamps = [consumer.last_poll_timestamp(tp) for tp in self.tps]
                if all(s is not None and s >= since for s in stamps):
                    self.boundary = {tp: consumer.highwater(tp) or 0 for tp in self.tps}
            boundary = self.boundary
            if boundary is not None and all(
                [await consumer.position(tp) >= boundary[tp] for tp in self.tps]
            ):
                history = [r for r in early if r.offset < boundary[_tp(r)]]
                await self._fold(history)
                self.history_read.set()
                for record in early:
                    if record.offset >= boundary[_tp(record)]:
                        await self._live(record)
                early = []

    async def _start(self) -> AIOKafkaConsumer:
        while True:
            consumer = history_reader(self.settings)
            try:
                await consumer.start()
                partitions = await topic_partitions(consumer, self.topic, timeout=10.0)
                if partitions:
                    self.tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                    consumer.assign(self.tps)
                    if self.history_read.is_set():  # a restart: go on where it was
                        for tp in self.tps:
                            consumer.seek(tp, self.next_offsets.get(tp, 0))
                    else:
                        self.boundary = None
                        await consumer.seek_to_beginning(*self.tps)
                    self.consumer = consumer
                    return consumer
            except Exception:
                log.warning("cannot read %s yet; retrying", self.topic, exc_info=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await asyncio.sleep(1.0)

    async def _fold(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Come up in the mode the history leaves: stopped, safe, both or neither."""
        paused = safe = False
        refused = 0
        now = time.time()
        windows: list[ControlCommand] = []
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            command = self.admit(record, now, history=True)
            if isinstance(command, EventError):
                if command.reason in REASONS:
                    refused += 1
                    self.refused.labels(reason=command.reason).inc()
                continue
            if command.command == "emergency_stop":
                paused = True
            elif command.command == "reset_to_safe":
                safe = True
            elif command.command == "resume":
                paused = safe = False
            elif command.command in ("maintenance_add", "maintenance_cancel"):
                windows.append(command)
        for command in windows:  # in force as the history leaves them
            maintain(self.runtime, command, {})
        if paused:
            self.runtime.pause()
            await self.acknowledge("emergency_stop", "firing", "emergency stop in force (history)")
        if safe:
            self.runtime.enter_safe_mode()
            safe_policy = self.settings.safe_policy
            await self.acknowledge("safe_mode", "firing", f"safe mode in force: {safe_policy}")
        if records:
            log.info(
                "control history: %d records, %d refused; stopped=%s safe=%s",
                len(records),
                refused,
                paused,
                safe,
            )

    def admit(
        self, record: ConsumerRecord[bytes, bytes], now: float, *, history: bool = False
    ) -> ControlCommand | EventError:
        """A record as a command to carry out, or why it is not one (refused: the
        reason is one of :data:`~streams.control_auth.REASONS`)."""
        command = parse(record, self.settings.control_max_bytes, self.key)
        if isinstance(command, EventError):
            return command
        reason = self.guard.admit(command.id, command.ts, now, history=history)
        if reason is not None:
            return EventError(
                reason,
                "ControlRefused",
                f"{reason}: command {command.command} (id {command.id}) signed at "
                f"{command.ts:.3f}, {now - command.ts:+.0f}s from now",
            )
        return command

    async def _refuse(self, record: ConsumerRecord[bytes, bytes], error: EventError) -> None:
        """Count, dead-letter and alert a refused record; answer whoever waits for it."""
        self.refused.labels(reason=error.reason).inc()
        self.rejections.add(time.time(), 1)
        self.latest_refusal = (
            f"{error.reason}, offset {record.offset} of partition {record.partition}"
        )
        log.warning(
            "control record at offset %d of partition %d refused, not carried out: %s",
            record.offset,
            record.partition,
            error.message,
        )
        await self.dead_letter(record, error)
        signed_refusal = error.reason in ("stale", "future", "replayed")
        command_id = _command_id(record.value) if signed_refusal else None
        future = self.waiters.pop(command_id, None) if command_id else None
        if future is not None and not future.done():
            future.set_result({"id": command_id, "error": error.message, "refused": error.reason})

    def check(self, now: float) -> list[AlertTransition]:
        """The ``control_rejected`` alert: control records refused lately."""
        if "control_rejected" in self.settings.disabled_alerts:
            return []
        refused = self.rejections.count(now)
        out = self.runtime.alerts.check(
            "control_rejected",
            self.topic,
            refused > 0,
            ts=now,
            value=refused,
            threshold=0,
            severity="critical",
            summary=f"{refused:.0f} control records refused, none carried out (latest: "
            f"{self.latest_refusal})",
            for_seconds=0,
        )
        firing = self.runtime.alerts.firing_kinds().get("control_rejected", 0)
        self.runtime.metrics.alerts_firing.labels(kind="control_rejected").set(firing)
        return out

    async def _live(self, record: ConsumerRecord[bytes, bytes]) -> None:
        command = self.admit(record, time.time())
        if isinstance(command, EventError):
            if command.reason in REASONS:
                await self._refuse(record, command)
            else:
                await self.dead_letter(record, command)
            return
        try:
            if self.execute is None:
                raise RuntimeError("no controls are registered to carry commands out")
            result = await self.execute(command)
        except Exception as exc:
            log.exception("control command %s failed", command.command)
            result = {"command": command.command, "id": command.id, "error": repr(exc)}
        self.applied += 1
        self.done[command.id] = result
        while len(self.done) > 1000:
            self.done.popitem(last=False)
        future = self.waiters.pop(command.id, None)
        if future is not None and not future.done():
            future.set_result(result)

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: EventError) -> None:
        """Publish a refused control record to ``<control topic>.dlq``, counted."""
        await self.app.dead_letters.send(
            self.topic,
            record.partition,
            record.offset,
            record.key,
            record.value or b"",
            error,
            self.settings.control_max_bytes,
        )

    async def acknowledge(self, what: str, state: str, summary: str) -> None:
        """Tell the alerts topic a command was carried out (kind ``control``)."""
        subject = f"{self.settings.app_id}/{what}"
        alert = AlertTransition(
            fingerprint("control", subject),
            "control",
            "warning" if what in ("emergency_stop", "safe_mode") else "info",
            "firing" if state == "firing" else "resolved",
            subject,
            summary,
            None,
            None,
            time.time(),
        )
        if what in ("emergency_stop", "safe_mode"):
            self.runtime.alerts.record(alert)  # shown as firing on /health until resumed
        await self.app.publish.alert(alert)


def _tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _command_id(raw: bytes | None) -> str | None:
    """The command id a record's value claims, if it says one (for whoever waits).

    >>> _command_id(b'{"id": "c-1", "command": "resume"}')
    'c-1'
    >>> _command_id(b"[1, 2]") is None, _command_id(b"not json") is None
    (True, True)
    """
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    found = doc.get("id") if isinstance(doc, dict) else None
    return found if isinstance(found, str) else None


def parse(
    record: ConsumerRecord[bytes, bytes], max_bytes: int, key: bytes
) -> ControlCommand | EventError:
    """A control record as a command signed with ``key``, or why it is not one."""
    raw = record.value or b""
    if len(raw) > max_bytes:
        return EventError(
            "oversize",
            "MessageTooLarge",
            f"control command of {len(raw)} bytes exceeds {max_bytes}",
        )
    try:
        if record.partition != CONTROL_PARTITION:
            raise ControlRefused(
                "wrong_partition",
                f"commands are read from partition {CONTROL_PARTITION} only, this record "
                f"is on {record.partition}",
            )
        verify(raw, signature_of(record.headers), key)
    except ControlRefused as exc:
        return EventError(exc.reason, "ControlRefused", str(exc))
    try:
        return ControlCommand.model_validate_json(raw)
    except ValidationError as exc:
        reason = "malformed_json" if "json_invalid" in str(exc) else "schema_violation"
        return EventError(reason, "ValidationError", str(exc)[:2000], raw=raw)


def maintain(runtime: Runtime, command: ControlCommand, result: dict[str, Any]) -> None:
    """Add or cancel a maintenance window on this worker (``result`` says what was done,
    or ``error``)."""
    if command.command == "maintenance_add":
        assert command.spec is not None
        try:
            window = parse_window(command.spec)
        except WindowSpecError as exc:
            result.update(error=f"spec: {exc}", error_status=422)
            return
        runtime.add_window(window)
        result.update(window=window.id, spec=window.spec, mode=window.mode)
        return
    assert command.window is not None
    if not runtime.cancel_window(command.window):
        result.update(error=f"there is no maintenance window {command.window!r}", error_status=404)
        return
    result.update(window=command.window, cancelled=True)
