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

from agents.alerts import announce
from engine.alerting import AlertTransition, fingerprint
from streams.app import alerts_topic, app, warmup_topic
from streams.sending import Delivery

KIND = "delivery_failed"
runtime = app.runtime
metrics = runtime.metrics
ALERTS = alerts_topic.get_topic_name()
WARMUP = warmup_topic.get_topic_name()


def transition(subject: str, firing: bool, summary: str, value: float | None = None) -> None:
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
    recorded = runtime.alerts.record(alert)
    if recorded and app.stopping is None:
        announce(recorded)


def destination(delivery: Delivery) -> str:
    return f"{delivery.topic}/{'*' if delivery.partition is None else delivery.partition}"


def on_failure(delivery: Delivery, exc: BaseException) -> None:
    metrics.send_failures.labels(topic=delivery.topic).inc()
    if delivery.topic == WARMUP:
        metrics.command_failures.inc(delivery.records)


def on_trouble(delivery: Delivery) -> None:
    if delivery.topic != ALERTS:
        transition(destination(delivery), True, f"not delivered: {delivery.describe()}")


def on_recovery(delivery: Delivery) -> None:
    """A delivery in trouble is delivered, or given up (its input is read again): the
    destination's alert resolves once none is left in trouble."""
    where = destination(delivery)
    if delivery.topic == ALERTS:
        return
    if not any(destination(d) == where and d.troubled for d in app.sender.retrying):
        done = "delivered again" if delivery.delivered else "given up (read again)"
        transition(where, False, f"{delivery.where()}: {done}")


def on_hold(tp: TP, offset: int, delivery: Delivery) -> None:
    metrics.input_holds.labels(topic=tp.topic).inc()
    metrics.held_partitions.set(len(app.gate.held))
    summary = (
        f"{tp.topic} partition {tp.partition} held at offset {offset} (paused, not committed "
        f"from there): {delivery.describe()}"
    )
    transition(f"{tp.topic}/{tp.partition}", True, summary, float(offset))


def on_resume(tp: TP, released: bool) -> None:
    metrics.held_partitions.set(len(app.gate.held))
    why = "let go, to be read again from its committed offset" if released else "delivered"
    transition(f"{tp.topic}/{tp.partition}", False, f"{tp.topic} partition {tp.partition}: {why}")


app.sender.on_failure = on_failure
app.sender.on_trouble = on_trouble
app.sender.on_recovery = on_recovery
app.gate.on_hold = on_hold
app.gate.on_resume = on_resume
