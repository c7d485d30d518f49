"""Operator controls: emergency stop, resume, reset to safe, snapshot and restore.

Commands (:class:`~schemas.control.ControlCommand`, JSON) are read from
``<ns>.control.v1`` by *every* worker, outside the consumer group
(:class:`streams.control_feed.ControlFeed`): an emergency stop must reach all of them. A
worker that starts reads the topic's history first and comes up in the mode it leaves
(stopped, safe, or neither) before its streams run; snapshots and restores in the history
are not done again. Each command a worker carries out is acknowledged on the alerts topic,
kind ``control``: ``firing`` for the emergency stop and the safe mode, ``resolved`` when
they end, and ``resolved`` for a snapshot or a restore done. Bad or oversized commands go
to ``<ns>.control.v1.dlq``.

The same commands as HTTP endpoints, with ``Authorization: Bearer $WARMCAST_CONTROL_TOKEN``
(without a token configured they answer 404 and say the controls are off)::

    POST /control/emergency-stop   {"release": true}
    POST /control/resume
    POST /control/reset-to-safe
    POST /control/snapshot         {"name": "before-upgrade"}
    POST /control/restore          {"name": "before-upgrade"}
    POST /control/skip-batch       {"topic": "warmcast.usage.v1", "partition": 0, "offset": 12}
    POST /control/promote          {"policy": "warmcast"}
    POST /control/rollback
    POST /control/maintenance-add  {"spec": "from=2026-12-03T02:00Z,until=...,models=llama-*"}
    POST /control/maintenance-cancel {"window": "the window's id"}
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
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from agents.recovery import Recovery
from engine.maintenance import WindowSpecError, parse_window
from schemas.control import ControlCommand
from streams.app import WarmcastApp
from streams.control_auth import CONTROL_PARTITION, key_id, signed
from streams.control_feed import ControlFeed, maintain
from streams.security import token_matches

log = logging.getLogger(__name__)

#: URL path segment -> command.
ACTIONS = {
    "emergency-stop": "emergency_stop",
    "resume": "resume",
    "reset-to-safe": "reset_to_safe",
    "snapshot": "snapshot",
    "restore": "restore",
    "skip-batch": "skip_batch",
    "promote": "promote",
    "rollback": "rollback",
    "maintenance-add": "maintenance_add",
    "maintenance-cancel": "maintenance_cancel",
}
APPLY_TIMEOUT = 15.0


#: Carries one action out: (command, result to fill in, " (id ..., by ...)" for notes).
Handler = Callable[[ControlCommand, dict[str, Any], str], Awaitable[None]]


class Controls:
    """The operator's commands carried out on this worker: the emergency stop, the safe
    mode, snapshots and restores (and what other modules add with :meth:`handles`)."""

    def __init__(self, app: WarmcastApp, feed: ControlFeed, recovery: Recovery) -> None:
        self.app = app
        self.runtime = app.runtime
        self.settings = app.runtime.settings
        self.feed = feed
        self.recovery = recovery
        #: Action -> its handler.
        self.handlers: dict[str, Handler] = {
            "emergency_stop": self._emergency_stop,
            "resume": self._resume,
            "reset_to_safe": self._reset_to_safe,
            "snapshot": self._snapshot,
            "restore": self._restore,
            "maintenance_add": self._maintenance,
            "maintenance_cancel": self._maintenance,
        }
        feed.execute = self.execute

    def handles(self, action: str, handler: Handler) -> None:
        """Carry ``action`` out with ``handler``."""
        self.handlers[action] = handler

    async def execute(self, command: ControlCommand) -> dict[str, Any]:
        """Carry a command out on this worker's partitions; returns what was done (with
        ``error``, and ``error_status`` for the HTTP answer, when it was not)."""
        recovery = self.recovery
        owned = sorted(recovery.owned)
        result: dict[str, Any] = {"command": command.command, "id": command.id, "partitions": owned}
        result["worker"] = recovery.writer
        by = f" (id {command.id}{', by ' + command.issued_by if command.issued_by else ''})"
        await self.handlers[command.command](command, result, by)
        log.info("control command carried out: %s", result)
        return result

    async def _emergency_stop(
        self, command: ControlCommand, result: dict[str, Any], by: str
    ) -> None:
        released = self.runtime.pause(release=command.release)
        await self.app.publish.commands(released)
        result.update(paused=True, released=len(released))
        note = f"emergency stop: no warm commands; {len(released)} models released{by}"
        await self.feed.acknowledge("emergency_stop", "firing", note)

    async def _resume(self, command: ControlCommand, result: dict[str, Any], by: str) -> None:
        _, was_safe = self.runtime.resume()
        result.update(paused=False, safe_mode=False)
        await self.feed.acknowledge("emergency_stop", "resolved", f"warm commands resumed{by}")
        if was_safe:
            await self.feed.acknowledge("safe_mode", "resolved", f"learned policy back{by}")

    async def _reset_to_safe(
        self, command: ControlCommand, result: dict[str, Any], by: str
    ) -> None:
        self.runtime.enter_safe_mode()
        safe = self.settings.safe_policy
        result.update(safe_mode=True, policy=safe)
        await self.feed.acknowledge(
            "safe_mode", "firing", f"safe mode: every engine runs {safe}{by}"
        )

    async def _maintenance(self, command: ControlCommand, result: dict[str, Any], by: str) -> None:
        maintain(self.runtime, command, result)
        if "error" in result:
            return
        window = result["window"]
        if command.command == "maintenance_add":
            note = f"maintenance window {window} added: {result['spec']}{by}"
        else:
            note = f"maintenance window {window} cancelled{by}"
        await self.feed.acknowledge(f"maintenance/{window}", "resolved", note)

    def _checkpoints_off(self, result: dict[str, Any]) -> bool:
        if not self.recovery.enabled:
            result["error"] = "checkpoints are off: set WARMCAST_CHECKPOINT_KEY"
        return not self.recovery.enabled

    async def _snapshot(self, command: ControlCommand, result: dict[str, Any], by: str) -> None:
        if self._checkpoints_off(result):
            return
        assert command.name is not None
        written = await self.recovery.checkpoint(
            set(result["partitions"]), "snapshot", command.name
        )
        result.update(name=command.name, written=written)
        note = f"snapshot {command.name!r} of partitions {written}{by}"
        await self.feed.acknowledge(f"snapshot/{command.name}", "resolved", note)

    async def _restore(self, command: ControlCommand, result: dict[str, Any], by: str) -> None:
        if self._checkpoints_off(result):
            return
        assert command.name is not None
        outcomes = await self.restore_snapshot(command.name, result["partitions"])
        result.update(name=command.name, **outcomes)
        if "error" in result:
            log.warning("restore %r not done: %s", command.name, result["error"])
            return
        note = f"restore {command.name!r}: {result['restored']} restored{by}"
        await self.feed.acknowledge(f"restore/{command.name}", "resolved", note)

    async def restore_snapshot(self, name: str, partitions: list[int]) -> dict[str, Any]:
        recovery = self.recovery
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

    def status(self) -> dict[str, Any]:
        recovery = self.recovery
        settings = self.settings
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
        key = self.feed.key
        return {
            "worker": recovery.writer,
            "paused": self.runtime.paused,
            "safe_mode": self.runtime.safe_mode,
            "policy": settings.policy,
            "safe_policy": settings.safe_policy,
            "maintenance": [
                {"id": w.id, "spec": w.spec, "mode": w.mode, "models": w.models}
                for w in self.runtime.maintenance.windows.values()
            ],
            "partitions": sorted(recovery.owned),
            "commands_applied": self.feed.applied,
            "control_key": key_id(key) if key else None,  # a name of the key, not the key
            "checkpoints": {
                "enabled": recovery.enabled,
                "interval_seconds": settings.checkpoint_interval_seconds,
                "latest": latest,
                "snapshots": store.names() if store is not None else [],
            },
        }

    def denied(self, view: View, request: Request) -> Response | None:
        """The answer to a request that may not use the controls (``None``: it may)."""
        token = self.settings.control_token
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

    async def post(self, view: View, request: Request, action: str) -> Response:
        """``POST /control/{action}``: publish the command, signed, and answer once this
        worker has carried it out."""
        refused = self.denied(view, request)
        if refused is not None:
            return refused
        feed = self.feed
        if not feed.key:
            off = "operator controls are off: no WARMCAST_CONTROL_KEY to sign commands with"
            return view.json({"error": off}, status=404)
        name = ACTIONS.get(action)
        if name is None:
            return view.json({"error": f"no control {action!r}: {', '.join(ACTIONS)}"}, status=404)
        most = self.settings.control_max_bytes
        body = await read_body(request, most)
        if body is None:
            return view.json({"error": f"over {most} bytes"}, status=413)
        command = command_of(body, name, f"http {request.remote}")  # type: ignore[attr-defined]
        if isinstance(command, tuple):
            error, status = command
            return view.json({"error": error}, status=status)
        if feed.known(command.id):
            earlier = feed.done.get(command.id)
            answer: dict[str, Any] = {"applied": False, "id": command.id}
            answer["error"] = f"command id {command.id!r} was used before: not carried out again"
            if earlier is not None:
                answer["earlier"] = earlier
            return view.json(answer, status=409)
        waiting = feed.expect(command.id)
        value, headers = signed(command, feed.key)
        try:
            await self.app.producer.send_and_wait(
                feed.topic, b"control", value, CONTROL_PARTITION, None, headers
            )
        except Exception as exc:
            feed.waiters.pop(command.id, None)
            log.error("control command %s not published: %r", command.id, exc)
            return view.json({"applied": False, "error": f"not published: {exc!r}"}, status=503)
        try:
            result = await asyncio.wait_for(asyncio.shield(waiting), APPLY_TIMEOUT)
        except TimeoutError:
            return view.json({"applied": False, "id": command.id}, status=202)
        if "error" not in result:
            return view.json({"applied": True, **result}, status=200)
        shown = {k: v for k, v in result.items() if k != "error_status"}
        return view.json({"applied": False, **shown}, status=result.get("error_status", 409))


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


#: Fields of a command that the worker sets, never the body of a request.
SET_BY_THE_WORKER = ("issued_by", "ts")


def command_of(body: bytes, name: str, issued_by: str) -> ControlCommand | tuple[str, int]:
    """The command a request's body asks for, or what is wrong with it and the HTTP
    status that says so.

    >>> command_of(b'{"release": true}', "emergency_stop", "http 10.0.0.1").release
    True
    >>> command_of(b'{"ts": 1}', "resume", "me")
    ('ts: set by the worker, not by the request', 422)
    """
    try:
        doc = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}", 400
    if not isinstance(doc, dict):
        return "the body is a JSON object", 400
    overridden = [k for k in SET_BY_THE_WORKER if k in doc]
    if overridden:
        return f"{', '.join(overridden)}: set by the worker, not by the request", 422
    doc["command"] = name
    doc["issued_by"] = issued_by
    try:
        command = ControlCommand.model_validate(doc)
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return "; ".join(errors), 422
    if command.spec is not None and command.command == "maintenance_add":
        try:
            parse_window(command.spec)
        except WindowSpecError as exc:
            return f"spec: {exc}", 422
    return command


def register(app: WarmcastApp, feed: ControlFeed, recovery: Recovery) -> Controls:
    """Register the control views and the control topic's follower on ``app``."""
    controls = Controls(app, feed, recovery)
    settings = app.runtime.settings

    @app.page("/control")
    class ControlStatusView(View):
        async def get(self, request: Request) -> Response:
            return controls.denied(self, request) or self.json(controls.status())

    @app.page("/control/{action}")
    class ControlView(View):
        async def post(self, request: Request, action: str) -> Response:
            return await controls.post(self, request, action)

    @app.task
    async def follow_control() -> None:
        feed.ensure_started()  # if no rebalance has yet
        if feed.key:
            log.info(
                "operator controls on: records of %s partition %d signed with key %s, within "
                "%.0fs, are carried out; POST /control/* %s",
                feed.topic,
                CONTROL_PARTITION,
                key_id(feed.key),
                settings.control_max_age_seconds,
                "is open to WARMCAST_CONTROL_TOKEN"
                if settings.control_token
                else "is off (no WARMCAST_CONTROL_TOKEN)",
            )
        else:
            log.warning(
                "operator controls are off (no WARMCAST_CONTROL_KEY): no record of %s is "
                "carried out (each is refused as no_key) and POST /control/* answers 404",
                feed.topic,
            )

    @app.timer(interval=settings.alert_check_seconds)
    async def check_control_refusals() -> None:
        for alert in feed.check(time.time()):
            await app.publish.alert(alert)

    return controls
