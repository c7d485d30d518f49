"""Input record batches that cannot be decoded: their partition waits for the operator.

The worker's Kafka consumer is guarded (:mod:`streams.undecodable`): a record batch of
the usage or metrics topic that cannot be decoded pauses its partition, on the batch; the
worker's other partitions go on. The worker raises ``undecodable_batch`` (critical,
subject ``<topic>/<partition>``, the summary names the offsets and what to do), counts it
(``warmcast_undecodable_batches_total{topic}``, ``warmcast_undecodable_partitions``), and
nothing is committed past the batch until the operator decides:

- a codec Kafka has whose library is missing here (snappy, lz4 or zstd without
  ``cramjam``): install it and restart the worker; the partition resumes from its
  committed offset, on the batch;
- anything else (a corrupt compressed payload, codec bits no client knows, a CRC
  mismatch): the control ``skip_batch`` (``POST /control/skip-batch`` with the topic,
  partition and first offset). The batch goes to ``<topic>.dlq`` as it was fetched, with
  headers naming topic, partition, first and last offset and the error; the partition goes
  on after it and the commit moves past it (``warmcast_skipped_offsets_total{topic}``).
  Every worker hears the control: one that meets the same batch later (the partition moved
  to it) skips it too, and leaves a dead letter as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.types.signals import BaseSignalT
from prometheus_client import Counter, Gauge

from agents.control import Controls
from engine.alerting import AlertTransition, fingerprint
from schemas.control import ControlCommand
from schemas.envelope import EventError
from streams.app import WarmcastApp
from streams.deadletters import error_headers
from streams.sending import truncate_to_fit
from streams.undecodable import UndecodableBatch, guard_consumer, summary
from streams.workarounds import acknowledge_skipped, kafka_consumer

log = logging.getLogger(__name__)

KIND = "undecodable_batch"
#: The dead-letter reason of a skipped batch.
REASON = "undecodable_batch"


class Undecodable:
    """The input partitions this worker holds on a batch it cannot decode, and the
    batches the operator has said to skip."""

    def __init__(self, app: WarmcastApp) -> None:
        self.app = app
        self.runtime = runtime = app.runtime
        self.settings = settings = runtime.settings
        self.usage_topic = settings.topic("usage")
        self.inputs = (self.usage_topic, settings.topic("metrics"))
        #: (topic, partition) -> the batch it is paused on
        self.held: dict[tuple[str, int], UndecodableBatch] = {}
        #: (topic, partition, first offset) -> who said to skip it
        self.skips: dict[tuple[str, int, int], str] = {}
        #: batches met (each counted once), and those held when their partition was revoked
        self.seen: set[tuple[str, int, int]] = set()
        self.away: dict[tuple[str, int], UndecodableBatch] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        r = runtime.metrics.registry
        self.batches = Counter(
            "warmcast_undecodable_batches_total",
            "input record batches that could not be decoded (their partition pauses)",
            ["topic"],
            registry=r,
        )
        self.partitions = Gauge(
            "warmcast_undecodable_partitions",
            "input partitions paused on a record batch that cannot be decoded",
            registry=r,
        )
        self.skipped = Counter(
            "warmcast_skipped_offsets_total",
            "offsets of undecodable record batches skipped by the operator (dead-lettered)",
            ["topic"],
            registry=r,
        )
        for topic in self.inputs:
            self.batches.labels(topic=topic)
            self.skipped.labels(topic=topic)
            runtime.metrics.dead_letters.labels(topic=topic, reason=REASON)

    # -- in the event loop, as the guard reports -----------------------------------------

    def found(self, batch: UndecodableBatch) -> None:
        """The consumer paused a partition on ``batch``."""
        key = (batch.topic, batch.partition)
        ident = (*key, batch.first_offset)
        self.held[key] = batch
        self.partitions.set(len(self.held))
        if ident not in self.seen:  # not met again after a rebalance sought back to it
            self.seen.add(ident)
            self.batches.labels(topic=batch.topic).inc()
            log.error(
                "%s[%d] offsets %d-%d cannot be decoded (%s, %s: %s); the partition is paused",
                batch.topic,
                batch.partition,
                batch.first_offset,
                batch.last_offset,
                batch.codec,
                batch.error_class,
                batch.error,
            )
        ordered = self.skips.get(ident)
        if ordered is not None:
            self._spawn(self._skip_as_ordered(batch, ordered))
        else:
            self._spawn(self._alert(batch, "firing", summary(batch)))

    async def _skip_as_ordered(self, batch: UndecodableBatch, by: str) -> None:
        """A batch the operator has already said to skip: skip it (or, if that fails,
        raise the alert as for any other)."""
        try:
            await self.skip(batch.topic, batch.partition, batch.first_offset, by)
        except Exception:
            log.exception("could not skip %s[%d] as ordered", batch.topic, batch.partition)
            await self._alert(batch, "firing", summary(batch))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling an undecodable batch failed", exc_info=task.exception())

    # -- the operator's skip -------------------------------------------------------------

    async def skip(self, topic: str, partition: int, offset: int, by: str = "") -> dict[str, Any]:
        """Skip the batch ``topic``/``partition`` is held on, if it starts at ``offset``:
        dead-letter it, move the partition past it, and remember the order for when the
        batch is met again (here or after the partition moves)."""
        out: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        batch = self.held.get((topic, partition))
        if batch is not None and batch.first_offset != offset:
            error = f"{topic}[{partition}] is paused at offset {batch.first_offset}, not {offset}"
            return {**out, "error": error}
        self.skips[(topic, partition, offset)] = by
        if batch is None:
            return {**out, "skipped": False, "note": "not paused here; skipped where it is met"}
        del self.held[(topic, partition)]
        try:
            await self._dead_letter(batch, by)
            await self._move_past(batch)
        except BaseException:
            self.held[(topic, partition)] = batch  # still paused on it: the operator may retry
            raise
        self.partitions.set(len(self.held))
        self.skipped.labels(topic=topic).inc(batch.offsets)
        dlq = f"{topic}.dlq"
        log.warning(
            "%s[%d] offsets %d-%d skipped%s; dead-lettered to %s",
            topic,
            partition,
            batch.first_offset,
            batch.last_offset,
            f" (by {by})" if by else "",
            dlq,
        )
        where = f"{topic}[{partition}] offsets {batch.first_offset}-{batch.last_offset}"
        note = f"{where} skipped{f' by {by}' if by else ''}, dead-lettered to {dlq}"
        await self._alert(batch, "resolved", note)
        return {**out, "skipped": True, "last_offset": batch.last_offset, "dead_letter_topic": dlq}

    async def _dead_letter(self, batch: UndecodableBatch, by: str) -> None:
        """The batch as it was fetched, on ``<topic>.dlq``, with headers that say what it
        is and why it was skipped; returns once the broker has it."""
        error = EventError(REASON, batch.error_class, batch.error)
        headers = error_headers(batch.topic, batch.partition, batch.first_offset, error)
        headers += [
            ("warmcast.original-last-offset", str(batch.last_offset).encode()),
            ("warmcast.codec", batch.codec.encode()),
            ("warmcast.skipped-by", by[:256].encode()),
        ]
        dlq = f"{batch.topic}.dlq"
        _, value, headers = truncate_to_fit(
            None, batch.raw, headers, self.app.sender.limit(dlq), self.settings.max_message_bytes
        )
        origin = (batch.topic, batch.partition, batch.first_offset)
        delivery = await self.app.sender.send(dlq, value, headers=headers, origin=origin)
        # the skip goes on once the broker has it (tried again meanwhile; the skip fails
        # after the send timeout and may be asked again)
        await asyncio.wait_for(asyncio.shield(delivery.done), self.settings.send_timeout_seconds)
        self.runtime.metrics.dead_letters.labels(topic=batch.topic, reason=REASON).inc()
        self.runtime.note_dead_letters(1, time.time())

    async def _move_past(self, batch: UndecodableBatch) -> None:
        """Fetch the partition again from after the batch. Its offsets count as done, as
        if its messages had been processed: the group's commit moves past them once
        everything before them is done, as Faust commits any message."""
        topic, partition = batch.topic, batch.partition
        tp, first, last = TP(topic, partition), batch.first_offset, batch.last_offset
        consumer: Any = self.app.consumer
        await self._wait_for_earlier(tp, first)
        await acknowledge_skipped(consumer, tp, first, last, ack_lock)
        thread, kafka = kafka_consumer(self.app)
        kafka_tp = TopicPartition(topic, partition)

        async def go_on() -> None:
            kafka.seek(kafka_tp, last + 1)
            kafka.resume(kafka_tp)

        await thread.call_thread(go_on)
        if topic == self.usage_topic:
            self.runtime.read_offsets[partition] = last

    async def _wait_for_earlier(self, tp: TP, first: int, timeout: float = 30.0) -> None:
        """Wait (a while) until the messages before the batch are processed, so that a
        commit past the batch never gets ahead of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        consumer: Any = self.app.consumer
        while any(m.tp == tp and m.offset < first for m in list(consumer.unacked)):
            if loop.time() > deadline:
                log.warning("messages of %s before offset %d are still in process", tp, first)
                return
            await asyncio.sleep(0.1)

    # -- rebalances and alerts -----------------------------------------------------------

    def revoked(self, tps: set[TP]) -> None:
        """Partitions revoked: their pause ends with the assignment (a partition assigned
        again is paused again when its fetch meets the batch)."""
        for tp in tps:
            batch = self.held.pop((tp.topic, tp.partition), None)
            if batch is not None:
                self.away[tp.topic, tp.partition] = batch
        self.partitions.set(len(self.held))

    async def assigned(self, tps: set[TP]) -> None:
        """A new assignment: a held partition that went to another worker is resolved
        here (the worker that has it now meets the batch and raises the alert)."""
        away, self.away = self.away, {}
        for (topic, partition), batch in away.items():
            if TP(topic, partition) not in tps:
                note = f"{topic}[{partition}] moved to another worker, still at the batch"
                await self._alert(batch, "resolved", note)

    async def _alert(self, batch: UndecodableBatch, state: str, text: str) -> None:
        if KIND in self.settings.disabled_alerts:
            return
        subject = f"{batch.topic}/{batch.partition}"
        alert = AlertTransition(
            fingerprint(KIND, subject),
            KIND,
            "critical",
            "firing" if state == "firing" else "resolved",
            subject,
            text[:256],
            float(batch.first_offset),
            None,
            time.time(),
        )
        if self.runtime.alerts.record(alert):
            await self.app.publish.alert(alert)
        firing = self.runtime.alerts.firing_kinds().get(KIND, 0)
        self.runtime.metrics.alerts_firing.labels(kind=KIND).set(firing)

    def guard(self) -> bool:
        """Guard the worker's consumer (once it exists; again is a no-op)."""
        _, consumer = kafka_consumer(self.app)
        return consumer is not None and guard_consumer(consumer, self.inputs, self.found)


def register(app: WarmcastApp, controls: Controls) -> Undecodable:
    """Guard ``app``'s input batches; the control ``skip_batch`` skips one."""
    undecodable = Undecodable(app)
    app.runtime.metrics.alerts_firing.labels(kind=KIND).set(0)

    async def skip_batch(command: ControlCommand, result: dict[str, Any], by: str) -> None:
        """The control ``skip_batch``: the worker holding the partition skips the batch;
        the others remember the order."""
        assert command.topic is not None and command.partition is not None
        assert command.offset is not None
        who = f"control {command.id}" + (f" by {command.issued_by}" if command.issued_by else "")
        skipped = await undecodable.skip(command.topic, command.partition, command.offset, who)
        result.update(skipped)
        if skipped.get("skipped"):
            where = f"{command.topic}/{command.partition}/{command.offset}"
            note = f"batch at {where} skipped{by}"
            await controls.feed.acknowledge(f"skip/{where}", "resolved", note)

    controls.handles("skip_batch", skip_batch)

    @app.task
    async def guard_input_batches() -> None:
        if not undecodable.guard():
            log.warning(
                "the consumer is not up yet: its batches are guarded at the first rebalance"
            )

    @app.on_partitions_assigned.connect
    async def _guard_assigned(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        if not undecodable.guard():
            log.error(
                "record batches of %s are not guarded: a bad one stops the worker",
                undecodable.inputs,
            )
        await undecodable.assigned(args[0])

    @app.on_partitions_revoked.connect
    def _release_revoked(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        undecodable.revoked(args[0])

    return undecodable
