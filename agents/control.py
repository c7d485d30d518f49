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
    GET  /control                  mode, checkpoints and snapshots of this worker

A POST publishes the command on the control topic and answers once this worker has
carried it out (202 if that takes longer than 15 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.web import Request, Response, View
from pydantic import ValidationError

from engine.alerting import AlertTransition, fingerprint
from schemas.control import ControlCommand
from schemas.envelope import EventError
from streams.app import app
from streams.kafka import client_kwargs, last_answer
from streams.security import token_matches

log = logging.getLogger(__name__)

runtime = app.runtime
settings = runtime.settings
CONTROL = settings.topic("control")
#: URL path segment -> command.
ACTIONS = {
    "emergency-stop": "emergency_stop",
    "resume": "resume",
    "reset-to-safe": "reset_to_safe",
    "snapshot": "snapshot",
    "restore": "restore",
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
                partitions = consumer.partitions_for_topic(CONTROL)
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
        for record in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
            command = parse(record)
            if isinstance(command, EventError):
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
            log.info("control history: %d commands, stopped=%s safe=%s", len(records), paused, safe)

    async def _live(self, record: ConsumerRecord[bytes, bytes]) -> None:
        command = parse(record)
        if isinstance(command, EventError):
            await dead_letter(record, command)
            return
        if command.id in self.done:
            return  # delivered twice
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


def parse(record: ConsumerRecord[bytes, bytes]) -> ControlCommand | EventError:
    """A control record as a command, or why it is not one."""
    raw = record.value or b""
    if len(raw) > settings.control_max_bytes:
        return EventError(
            "oversize",
            "MessageTooLarge",
            f"control command of {len(raw)} bytes exceeds {settings.control_max_bytes}",
        )
    try:
        return ControlCommand.model_validate_json(raw)
    except ValidationError as exc:
        reason = "malformed_json" if "json_invalid" in str(exc) else "schema_violation"
        return EventError(reason, "ValidationError", str(exc)[:2000], raw=raw)


async def dead_letter(record: ConsumerRecord[bytes, bytes], error: EventError) -> None:
    value = (record.value or b"")[: settings.control_max_bytes]
    headers = {
        "warmcast.original-topic": record.topic.encode(),
        "warmcast.original-partition": str(record.partition).encode(),
        "warmcast.original-offset": str(record.offset).encode(),
        "warmcast.error-class": error.error_class.encode(),
        "warmcast.error-reason": error.reason.encode(),
        "warmcast.error-message": error.message[:2000].encode(),
    }
    await app.topic(f"{CONTROL}.dlq").send(key=record.key, value=value, headers=headers)
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


async def execute(command: ControlCommand) -> dict[str, Any]:
    """Carry a command out on this worker's partitions; returns what was done."""
    from agents.recovery import recovery
    from agents.usage import publish_commands

    owned = sorted(recovery.owned)
    result: dict[str, Any] = {"command": command.command, "id": command.id, "partitions": owned}
    result["worker"] = recovery.writer
    by = f" (id {command.id}{', by ' + command.issued_by if command.issued_by else ''})"
    if command.command == "emergency_stop":
        released = runtime.pause(release=command.release)
        if released:
            await publish_commands(released)
        result.update(paused=True, released=len(released))
        note = f"emergency stop: no warm commands; {len(released)} models released{by}"
        await acknowledge("emergency_stop", "firing", note)
    elif command.command == "resume":
        _, was_safe = runtime.resume()
        result.update(paused=False, safe_mode=False)
        await acknowledge("emergency_stop", "resolved", f"warm commands resumed{by}")
        if was_safe:
            await acknowledge("safe_mode", "resolved", f"learned policy back{by}")
    elif command.command == "reset_to_safe":
        runtime.enter_safe_mode()
        result.update(safe_mode=True, policy=settings.safe_policy)
        note = f"safe mode: every engine runs {settings.safe_policy}{by}"
        await acknowledge("safe_mode", "firing", note)
    elif not recovery.enabled:
        result["error"] = "checkpoints are off: set WARMCAST_CHECKPOINT_KEY"
    elif command.command == "snapshot":
        assert command.name is not None
        written = await recovery.checkpoint(set(owned), "snapshot", command.name)
        result.update(name=command.name, written=written)
        note = f"snapshot {command.name!r} of partitions {written}{by}"
        await acknowledge(f"snapshot/{command.name}", "resolved", note)
    else:
        assert command.name is not None
        result.update(name=command.name, **await restore_snapshot(command.name, owned))
        note = f"restore {command.name!r}: {result['restored']} restored{by}"
        await acknowledge(f"restore/{command.name}", "resolved", note)
    log.info("control command carried out: %s", result)
    return result


async def restore_snapshot(name: str, partitions: list[int]) -> dict[str, Any]:
    from agents.recovery import recovery

    assert recovery.store is not None
    await recovery.store.sync()
    outcomes: dict[str, list[int]] = {"restored": [], "missing": [], "refused": []}
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


@app.page("/control/{action}")
class ControlView(View):
    async def post(self, request: Request, action: str) -> Response:
        refused = denied(self, request)
        if refused is not None:
            return refused
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
        doc["command"] = name
        doc.setdefault("issued_by", f"http {request.remote}")  # type: ignore[attr-defined]
        try:
            command = ControlCommand.model_validate(doc)
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            return self.json({"error": "; ".join(errors)}, status=422)
        waiting = feed.expect(command.id)
        await app.producer.send_and_wait(
            CONTROL, b"control", command.model_dump_json().encode(), 0, None, None
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(waiting), APPLY_TIMEOUT)
        except TimeoutError:
            return self.json({"applied": False, "id": command.id}, status=202)
        status_code = 409 if "error" in result else 200
        return self.json({"applied": "error" not in result, **result}, status=status_code)


feed = ControlFeed()


@app.task
async def follow_control() -> None:
    feed.ensure_started()  # if no rebalance has yet
