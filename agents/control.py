"""Operator controls: emergency stop, resume, reset to safe, snapshot and restore.

Commands (:class:`~schemas.control.ControlCommand`, JSON) are read from
``<ns>.control.v1`` by *every* worker, outside the consumer group: an emergency stop must
reach all of them. A worker that starts reads the topic's history first and comes up in
the mode it leaves (stopped, safe, or neither) before its streams run; snapshots and
restores in the history are not done again. Each command a worker carries out is
acknowledged on the alerts topic, kind ``control``: ``firing`` for the emergency stop and
the safe mode, ``resolved`` when they end, and ``resolved`` for a snapshot or a restore
done. Bad or oversized commands go to ``<ns>.control.v1.dlq``.

The same commands as HTTP endpoints, with ``Authorization: Bearer $WARMCAST_CONTROL_TOKEN``
(without a token configured they answer 404 and say the controls are off)::

    POST /control/emergency-stop   {"release": true}
    POST /control/resume
    POST /control/reset-to-safe
    POST /control/snapshot         {"name": "before-upgrade"}
    POST /control/restore          {"name": "before-upgrade"}
    POST /control/skip-batch       {"topic": "warmcast.usage.v1", "partition": 0, "offset": 12}
    GET  /control                  mode, checkpoints and snapshots of this worker

A POST publishes the command, signed, on the control topic and answers once this worker
has carried it out (202 if that takes longer than 15 s); ``issued_by`` is the caller's
address (the body may not set it, nor ``ts``). A command id used before is refused at
once (409, with the earlier outcome when this worker still has it); restoring a snapshot
that does not exist answers 404.

Only signed records are carried out (:mod:`streams.control_auth`): HMAC-SHA256 of the
value under ``WARMCAST_CONTROL_KEY`` in the ``warmcast.signature`` header, on partition 0,
signed within ``WARMCAST_CONTROL_MAX_AGE_SECONDS`` and not ahead of the wall clock by more
than ``WARMCAST_CONTROL_MAX_FUTURE_SECONDS``, with a command id not seen before. The
history is read in offset order under the same rules. A record refused is counted
(``warmcast_control_rejected_total{reason}``), dead-lettered and raises the alert
``control_rejected``. Without a control key no record is carried out and the POST
endpoints answer 404.
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
from faust.web import Request, Response, View
from prometheus_client import Counter
from pydantic import ValidationError

from engine.alerting import AlertTransition, RateWindow, fingerprint
from schemas.control import ControlCommand
from schemas.envelope import EventError
from streams.app import app
from streams.control_auth import (
    CONTROL_PARTITION,
    REASONS,
    ControlRefused,
    ReplayGuard,
    key_id,
    signature_of,
    signed,
    verify,
)
from streams.kafka import client_kwargs, last_answer, topic_partitions
from streams.security import token_matches
from streams.sending import truncate_to_fit

log = logging.getLogger(__name__)

runtime = app.runtime
settings = runtime.settings
CONTROL = settings.topic("control")
#: The key control records are signed with (empty: none is configured, none is applied).
KEY = settings.control_key.get_secret_value().encode() if settings.control_key else b""
#: URL path segment -> command.
ACTIONS = {
    "emergency-stop": "emergency_stop",
    "resume": "resume",
    "reset-to-safe": "reset_to_safe",
    "snapshot": "snapshot",
    "restore": "restore",
    "skip-batch": "skip_batch",
}
APPLY_TIMEOUT = 15.0


class ControlFeed:
    """Follows the control topic: history first, then every new command."""

    def __init__(self) -> None:
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
                log.exception("following %s failed; starting again", CONTROL)
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
            consumer = AIOKafkaConsumer(
                **client_kwargs(settings),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=200,
            )
            try:
                await consumer.start()
                partitions = await topic_partitions(consumer, CONTROL, timeout=10.0)
                if partitions:
                    self.tps = [TopicPartition(CONTROL, p) for p in sorted(partitions)]
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
                log.warning("cannot read %s yet; retrying", CONTROL, exc_info=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await asyncio.sleep(1.0)

    async def _fold(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Come up in the mode the history leaves: stopped, safe, both or neither."""
        paused = safe = False
        refused = 0
        now = time.time()
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
        if paused:
            runtime.pause()
            await acknowledge("emergency_stop", "firing", "emergency stop in force (history)")
        if safe:
            runtime.enter_safe_mode()
            await acknowledge("safe_mode", "firing", f"safe mode in force: {settings.safe_policy}")
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
        command = parse(record)
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
        await dead_letter(record, error)
        signed_refusal = error.reason in ("stale", "future", "replayed")
        command_id = _command_id(record.value) if signed_refusal else None
        future = self.waiters.pop(command_id, None) if command_id else None
        if future is not None and not future.done():
            future.set_result({"id": command_id, "error": error.message, "refused": error.reason})

    def check(self, now: float) -> list[AlertTransition]:
        """The ``control_rejected`` alert: control records refused lately."""
        if "control_rejected" in settings.disabled_alerts:
            return []
        refused = self.rejections.count(now)
        out = runtime.alerts.check(
            "control_rejected",
            CONTROL,
            refused > 0,
            ts=now,
            value=refused,
            threshold=0,
            severity="critical",
            summary=f"{refused:.0f} control records refused, none carried out (latest: "
            f"{self.latest_refusal})",
            for_seconds=0,
        )
        firing = runtime.alerts.firing_kinds().get("control_rejected", 0)
        runtime.metrics.alerts_firing.labels(kind="control_rejected").set(firing)
        return out

    async def _live(self, record: ConsumerRecord[bytes, bytes]) -> None:
        command = self.admit(record, time.time())
        if isinstance(command, EventError):
            if command.reason in REASONS:
                await self._refuse(record, command)
            else:
                await dead_letter(record, command)
            return
        try:
            result = await execute(command)
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


def _tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _command_id(raw: bytes | None) -> str | None:
    """The command id a record's value claims, if it says one (for whoever waits)."""
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    found = doc.get("id") if isinstance(doc, dict) else None
    return found if isinstance(found, str) else None


def parse(record: ConsumerRecord[bytes, bytes]) -> ControlCommand | EventError:
    """A control record as a signed command, or why it is not one."""
    raw = record.value or b""
    if len(raw) > settings.control_max_bytes:
        return EventError(
            "oversize",
            "MessageTooLarge",
            f"control command of {len(raw)} bytes exceeds {settings.control_max_bytes}",
        )
    try:
        if record.partition != CONTROL_PARTITION:
            raise ControlRefused(
                "wrong_partition",
                f"commands are read from partition {CONTROL_PARTITION} only, this record "
                f"is on {record.partition}",
            )
        verify(raw, signature_of(record.headers), KEY)
    except ControlRefused as exc:
        return EventError(exc.reason, "ControlRefused", str(exc))
    try:
        return ControlCommand.model_validate_json(raw)
    except ValidationError as exc:
        reason = "malformed_json" if "json_invalid" in str(exc) else "schema_violation"
        return EventError(reason, "ValidationError", str(exc)[:2000], raw=raw)


async def dead_letter(record: ConsumerRecord[bytes, bytes], error: EventError) -> None:
    headers = [
        ("warmcast.original-topic", record.topic.encode()),
        ("warmcast.original-partition", str(record.partition).encode()),
        ("warmcast.original-offset", str(record.offset).encode()),
        ("warmcast.error-class", error.error_class.encode()),
        ("warmcast.error-reason", error.reason.encode()),
        ("warmcast.error-message", error.message[:2000].encode()),
    ]
    dlq = f"{CONTROL}.dlq"
    key, value, headers = truncate_to_fit(
        record.key, record.value or b"", headers, app.sender.limit(dlq), settings.control_max_bytes
    )
    origin = (record.topic, record.partition, record.offset)
    await app.sender.send(dlq, value, key=key, headers=headers, origin=origin)
    runtime.metrics.dead_letters.labels(topic=CONTROL, reason=error.reason).inc()
    runtime.note_dead_letters(1, time.time())


async def acknowledge(what: str, state: str, summary: str) -> None:
    """Tell the alerts topic a command was carried out (kind ``control``)."""
    from agents.alerts import publish_alert

    subject = f"{settings.app_id}/{what}"
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
        runtime.alerts.record(alert)  # shown as firing on /health until resumed
    await publish_alert(alert)


#: Carries one action out: (command, result to fill in, " (id ..., by ...)" for notes).
Handler = Callable[[ControlCommand, dict[str, Any], str], Awaitable[None]]
#: Action -> its handler (:func:`handles` adds one).
HANDLERS: dict[str, Handler] = {}


def handles(action: str) -> Callable[[Handler], Handler]:
    """Register the handler of an action."""

    def register(handler: Handler) -> Handler:
        HANDLERS[action] = handler
        return handler

    return register


async def execute(command: ControlCommand) -> dict[str, Any]:
    """Carry a command out on this worker's partitions; returns what was done (with
    ``error``, and ``error_status`` for the HTTP answer, when it was not)."""
    from agents.recovery import recovery

    owned = sorted(recovery.owned)
    result: dict[str, Any] = {"command": command.command, "id": command.id, "partitions": owned}
    result["worker"] = recovery.writer
    by = f" (id {command.id}{', by ' + command.issued_by if command.issued_by else ''})"
    await HANDLERS[command.command](command, result, by)
    log.info("control command carried out: %s", result)
    return result


@handles("emergency_stop")
async def _emergency_stop(command: ControlCommand, result: dict[str, Any], by: str) -> None:
    from agents.usage import publish_commands

    released = runtime.pause(release=command.release)
    if released:
        await publish_commands(released)
    result.update(paused=True, released=len(released))
    note = f"emergency stop: no warm commands; {len(released)} models released{by}"
    await acknowledge("emergency_stop", "firing", note)


@handles("resume")
async def _resume(command: ControlCommand, result: dict[str, Any], by: str) -> None:
    _, was_safe = runtime.resume()
    result.update(paused=False, safe_mode=False)
    await acknowledge("emergency_stop", "resolved", f"warm commands resumed{by}")
    if was_safe:
        await acknowledge("safe_mode", "resolved", f"learned policy back{by}")


@handles("reset_to_safe")
async def _reset_to_safe(command: ControlCommand, result: dict[str, Any], by: str) -> None:
    runtime.enter_safe_mode()
    result.update(safe_mode=True, policy=settings.safe_policy)
    note = f"safe mode: every engine runs {settings.safe_policy}{by}"
    await acknowledge("safe_mode", "firing", note)


def _checkpoints_off(result: dict[str, Any]) -> bool:
    from agents.recovery import recovery

    if not recovery.enabled:
        result["error"] = "checkpoints are off: set WARMCAST_CHECKPOINT_KEY"
    return not recovery.enabled


@handles("snapshot")
async def _snapshot(command: ControlCommand, result: dict[str, Any], by: str) -> None:
    from agents.recovery import recovery

    if _checkpoints_off(result):
        return
    assert command.name is not None
    written = await recovery.checkpoint(set(result["partitions"]), "snapshot", command.name)
    result.update(name=command.name, written=written)
    note = f"snapshot {command.name!r} of partitions {written}{by}"
    await acknowledge(f"snapshot/{command.name}", "resolved", note)


@handles("restore")
async def _restore(command: ControlCommand, result: dict[str, Any], by: str) -> None:
    if _checkpoints_off(result):
        return
    assert command.name is not None
    result.update(name=command.name, **await restore_snapshot(command.name, result["partitions"]))
    if "error" in result:
        log.warning("restore %r not done: %s", command.name, result["error"])
        return
    note = f"restore {command.name!r}: {result['restored']} restored{by}"
    await acknowledge(f"restore/{command.name}", "resolved", note)


async def restore_snapshot(name: str, partitions: list[int]) -> dict[str, Any]:
    from agents.recovery import recovery

    assert recovery.store is not None
    await recovery.store.sync()
    outcomes: dict[str, Any] = {"restored": [], "missing": [], "refused": []}
    if name not in recovery.store.names():
        outcomes["missing"] = list(partitions)
        outcomes.update(error=f"there is no snapshot named {name!r}", error_status=404)
        return outcomes
    for partition in partitions:
        try:
            outcome = await recovery.restore_partition(partition, name)
        except Exception as exc:
            log.error("snapshot %r of partition %d not restored: %s", name, partition, exc)
            outcome = "refused"
        key = {"restored": "restored", "none": "missing"}.get(outcome, "refused")
        outcomes[key].append(partition)
    await recovery.checkpoint(set(outcomes["restored"]), "restore")
    return outcomes


def status() -> dict[str, Any]:
    from agents.recovery import recovery

    store = recovery.store
    latest = {}
    if store is not None:
        for partition in sorted(recovery.owned):
            found = store.latest(partition)
            if found is not None:
                header = found.header
                latest[str(partition)] = {
                    "offsets": header.offsets,
                    "created": header.created,
                    "bytes": found.size,
                    "writer": header.writer,
                }
    return {
        "worker": recovery.writer,
        "paused": runtime.paused,
        "safe_mode": runtime.safe_mode,
        "policy": settings.policy,
        "safe_policy": settings.safe_policy,
        "partitions": sorted(recovery.owned),
        "commands_applied": feed.applied,
        "control_key": key_id(KEY) if KEY else None,  # a name of the key, not the key
        "checkpoints": {
            "enabled": recovery.enabled,
            "interval_seconds": settings.checkpoint_interval_seconds,
            "latest": latest,
            "snapshots": store.names() if store is not None else [],
        },
    }


def denied(view: View, request: Request) -> Response | None:
    """The answer to a request that may not use the controls (``None``: it may)."""
    token = settings.control_token
    if token is None:
        off = "operator controls are off: no WARMCAST_CONTROL_TOKEN is configured"
        return view.json({"error": off}, status=404)
    if not token_matches(request.headers.get("Authorization"), token.get_secret_value()):
        return view.json(
            {"error": "a valid bearer token is needed"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="warmcast-control"'},
        )
    return None


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit`` bytes."""
    declared = request.content_length  # type: ignore[attr-defined]
    if declared is not None and declared > limit:
        return None
    body = b""
    stream = request.content  # type: ignore[attr-defined]
    while len(body) <= limit:
        chunk = await stream.read(limit + 1 - len(body))
        if not chunk:
            return body
        body += chunk
    return None


@app.page("/control")
class ControlStatusView(View):
    async def get(self, request: Request) -> Response:
        return denied(self, request) or self.json(status())


#: Fields of a command that the worker sets, never the body of a request.
SET_BY_THE_WORKER = ("issued_by", "ts")


@app.page("/control/{action}")
class ControlView(View):
    async def post(self, request: Request, action: str) -> Response:
        refused = denied(self, request)
        if refused is not None:
            return refused
        if not KEY:
            off = "operator controls are off: no WARMCAST_CONTROL_KEY to sign commands with"
            return self.json({"error": off}, status=404)
        name = ACTIONS.get(action)
        if name is None:
            return self.json({"error": f"no control {action!r}: {', '.join(ACTIONS)}"}, status=404)
        body = await read_body(request, settings.control_max_bytes)
        if body is None:
            return self.json({"error": f"over {settings.control_max_bytes} bytes"}, status=413)
        try:
            doc = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            return self.json({"error": f"not JSON: {exc}"}, status=400)
        if not isinstance(doc, dict):
            return self.json({"error": "the body is a JSON object"}, status=400)
        overridden = [k for k in SET_BY_THE_WORKER if k in doc]
        if overridden:
            error = f"{', '.join(overridden)}: set by the worker, not by the request"
            return self.json({"error": error}, status=422)
        doc["command"] = name
        doc["issued_by"] = f"http {request.remote}"  # type: ignore[attr-defined]
        try:
            command = ControlCommand.model_validate(doc)
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            return self.json({"error": "; ".join(errors)}, status=422)
        if feed.known(command.id):
            earlier = feed.done.get(command.id)
            answer: dict[str, Any] = {"applied": False, "id": command.id}
            answer["error"] = f"command id {command.id!r} was used before: not carried out again"
            if earlier is not None:
                answer["earlier"] = earlier
            return self.json(answer, status=409)
        waiting = feed.expect(command.id)
        value, headers = signed(command, KEY)
        try:
            await app.producer.send_and_wait(
                CONTROL, b"control", value, CONTROL_PARTITION, None, headers
            )
        except Exception as exc:
            feed.waiters.pop(command.id, None)
            log.error("control command %s not published: %r", command.id, exc)
            return self.json({"applied": False, "error": f"not published: {exc!r}"}, status=503)
        try:
            result = await asyncio.wait_for(asyncio.shield(waiting), APPLY_TIMEOUT)
        except TimeoutError:
            return self.json({"applied": False, "id": command.id}, status=202)
        if "error" not in result:
            return self.json({"applied": True, **result}, status=200)
        shown = {k: v for k, v in result.items() if k != "error_status"}
        return self.json({"applied": False, **shown}, status=result.get("error_status", 409))


feed = ControlFeed()


@app.task
async def follow_control() -> None:
    feed.ensure_started()  # if no rebalance has yet
    if KEY:
        log.info(
            "operator controls on: records of %s partition %d signed with key %s, within "
            "%.0fs, are carried out; POST /control/* %s",
            CONTROL,
            CONTROL_PARTITION,
            key_id(KEY),
            settings.control_max_age_seconds,
            "is open to WARMCAST_CONTROL_TOKEN"
            if settings.control_token
            else "is off (no WARMCAST_CONTROL_TOKEN)",
        )
    else:
        log.warning(
            "operator controls are off (no WARMCAST_CONTROL_KEY): no record of %s is carried "
            "out (each is refused as no_key) and POST /control/* answers 404",
            CONTROL,
        )


@app.timer(interval=settings.alert_check_seconds)
async def check_control_refusals() -> None:
    from agents.alerts import publish_alert

    for alert in feed.check(time.time()):
        await publish_alert(alert)
