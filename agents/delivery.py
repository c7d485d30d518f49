"""What could not be delivered: counted, alerted, and the input behind it held.

Every failed try of a send counts in ``warmcast_send_failures_total{topic}``. Once a
delivery is in trouble (:mod:`streams.sending`), ``delivery_failed`` fires on its
destination (subject ``<topic>/<partition>``), and each input partition whose messages
wait for it is held (:mod:`streams.holding`): ``delivery_failed`` fires on it too, naming
the input topic, partition and the offset it is held at (its value), and
``warmcast_input_holds_total{topic}`` counts it. Both resolve once the records are
delivered (or the held messages are let go at a rebalance or a stop, to be read again).
Trouble with the alerts topic itself is logged only.
"""

from __future__ import annotations

import time

from faust.types import TP

from engine.alerting import AlertTransition, fingerprint
from streams.app import WarmcastApp
from streams.sending import Delivery

KIND = "delivery_failed"


def destination(delivery: Delivery) -> str:
    return f"{delivery.topic}/{'*' if delivery.partition is None else delivery.partition}"


class DeliveryWatch:
    """The sender's and the input gate's callbacks: counters and ``delivery_failed``."""

    def __init__(self, app: WarmcastApp) -> None:
        self.app = app
        self.metrics = app.runtime.metrics
        self.alerts_topic = app.worker_topics.alerts.get_topic_name()
        self.warmup_topic = app.worker_topics.warmup.get_topic_name()

    def transition(
        self, subject: str, firing: bool, summary: str, value: float | None = None
    ) -> None:
        alert = AlertTransition(
            fingerprint(KIND, subject),
            KIND,
            "critical",
            "firing" if firing else "resolved",
            subject,
            summary,
            value,
            None,
            time.time(),
        )
        recorded = self.app.runtime.alerts.record(alert)
        if recorded and self.app.stopping is None:
            self.app.publish.announce(recorded)

    def on_failure(self, delivery: Delivery, exc: BaseException) -> None:
        self.metrics.send_failures.labels(topic=delivery.topic).inc()
        if delivery.topic == self.warmup_topic:
            self.metrics.command_failures.inc(delivery.records)

    def on_trouble(self, delivery: Delivery) -> None:
        if delivery.topic != self.alerts_topic:
            self.transition(destination(delivery), True, f"not delivered: {delivery.describe()}")

    def on_recovery(self, delivery: Delivery) -> None:
        """A delivery in trouble is delivered, or given up (its input is read again): the
        destination's alert resolves once none is left in trouble."""
        where = destination(delivery)
        if delivery.topic == self.alerts_topic:
            return
        if not any(destination(d) == where and d.troubled for d in self.app.sender.retrying):
            done = "delivered again" if delivery.delivered else "given up (read again)"
            self.transition(where, False, f"{delivery.where()}: {done}")

    def on_hold(self, tp: TP, offset: int, delivery: Delivery) -> None:
        self.metrics.input_holds.labels(topic=tp.topic).inc()
        self.metrics.held_partitions.set(len(self.app.gate.held))
        summary = (
            f"{tp.topic} partition {tp.partition} held at offset {offset} (paused, not "
            f"committed from there): {delivery.describe()}"
        )
        self.transition(f"{tp.topic}/{tp.partition}", True, summary, float(offset))

    def on_resume(self, tp: TP, released: bool) -> None:
        self.metrics.held_partitions.set(len(self.app.gate.held))
        why = "let go, to be read again from its committed offset" if released else "delivered"
        where = f"{tp.topic} partition {tp.partition}"
        self.transition(f"{tp.topic}/{tp.partition}", False, f"{where}: {why}")


def register(app: WarmcastApp) -> DeliveryWatch:
    """Watch the deliveries of ``app``'s sender and the holds of its input gate."""
    watch = DeliveryWatch(app)
    app.sender.on_failure = watch.on_failure
    app.sender.on_trouble = watch.on_trouble
    app.sender.on_recovery = watch.on_recovery
    app.gate.on_hold = watch.on_hold
    app.gate.on_resume = watch.on_resume
    return watch
