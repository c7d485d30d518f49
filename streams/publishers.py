"""What the agents publish beside their own records: warmup commands and alerts.

One :class:`Publishers` per worker (``app.publish``): every agent that issues commands
(usage, idle partitions, the emergency stop, a restore) or raises an alert goes through it,
so that commands are counted and batched in one place and every alert leaves in the
contract's form (:class:`schemas.alert.Alert`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, cast

import orjson

from engine.alerting import AlertTransition
from engine.lease import Command
from schemas.alert import label
from streams.emit import CommandEmitter, RecordEmitter
from streams.runtime import Runtime
from streams.sending import Delivery, Sender

log = logging.getLogger(__name__)

#: Makes (or finds) the emitter of a topic: ``(topic, partitions, kind, **options)``.
EmitterFactory = Callable[..., RecordEmitter]


def finite(value: float | None) -> float | None:
    """The contract has no NaN or infinity: such a value is published as unknown.

    >>> finite(1.5), finite(float("nan")), finite(None)
    (1.5, None, None)
    """
    return value if value is None or math.isfinite(value) else None


def alert_record(alert: AlertTransition, maintenance: str | None = None) -> dict[str, Any]:
    """An alert transition as the alerts topic carries it (:class:`schemas.alert.Alert`),
    its subject and summary within the contract's bound on labels; marked as raised in the
    maintenance window of id ``maintenance`` if one is given."""
    return {
        "fingerprint": alert.fingerprint,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "subject": label(alert.subject),
        "summary": label(alert.summary),
        "value": finite(alert.value),
        "threshold": finite(alert.threshold),
        "ts": alert.ts,
        **({"details": dict(alert.details)} if alert.details else {}),
        "maintenance": maintenance is not None,
        "maintenance_window": maintenance,
    }


class Publishers:
    """Warmup commands and alerts out, through the worker's sender and emitters."""

    def __init__(
        self,
        runtime: Runtime,
        sender: Sender,
        emitter: EmitterFactory,
        warmup_topic: str,
        alerts_topic: str,
    ) -> None:
        self.runtime = runtime
        self.sender = sender
        self._emitter = emitter
        self.warmup_topic = warmup_topic
        self.alerts_topic = alerts_topic
        self._announcing: set[asyncio.Task[None]] = set()

    def command_emitter(self) -> CommandEmitter:
        """The worker's command emitter (made at first use, once the producer runs)."""
        runtime = self.runtime
        made = self._emitter(
            self.warmup_topic,
            runtime.warmup_partitions,
            CommandEmitter,
            linger_seconds=runtime.settings.producer_linger_ms / 1000,
        )
        return cast(CommandEmitter, made)

    async def commands(self, commands: list[Command]) -> list[Delivery]:
        """Queue commands for delivery, in record batches per warmup partition; wait for
        the queue to empty when the broker falls behind. Returns their deliveries."""
        if not commands:
            return []
        queue = self.command_emitter()
        deliveries = queue.publish(commands)
        if queue.queued > self.runtime.settings.command_queue_max:
            await queue.drain()
        metrics = self.runtime.metrics
        warm = sum(1 for c in commands if c.action == "warm")
        if warm:
            metrics.warm_commands.inc(warm)
        if len(commands) > warm:
            metrics.release_commands.inc(len(commands) - warm)
        return deliveries

    async def alert(self, alert: AlertTransition) -> None:
        """Publish an alert transition (handed to the producer; tried again until it is
        delivered)."""
        record = alert_record(alert, self.runtime.mark_maintenance(alert))
        await self.sender.send(
            self.alerts_topic, orjson.dumps(record), key=alert.fingerprint.encode()
        )
        self.runtime.metrics.alerts.labels(kind=alert.kind, state=alert.state).inc()

    async def alerts(self, alerts: list[AlertTransition]) -> None:
        """Publish transitions one by one; one that cannot be handed over is logged (it
        stays firing on ``/health``) and the others go on."""
        for alert in alerts:
            try:
                await self.alert(alert)
            except Exception:
                log.exception("could not publish %s on %s", alert.kind, alert.subject)

    def announce(self, alerts: list[AlertTransition]) -> None:
        """Publish transitions from code that cannot wait (a callback): in a task of
        their own."""
        for alert in alerts:
            task = asyncio.ensure_future(self.alert(alert))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
