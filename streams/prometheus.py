"""Prometheus metrics of the worker. Base units, ``_total`` counters, no model ids as labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from engine.components import COMPONENTS
from engine.healthscore import CHECKS

#: Alert kinds the worker raises itself (a policy may add its own, such as drift).
ALERT_KINDS = (*CHECKS, "health_degraded", "forwarded_events")
#: Metric event names counted under their own ``name`` label (with the anomaly metrics of
#: the settings); every other name is counted as ``other``, so that producers cannot add
#: series without bound.
KNOWN_METRIC_NAMES = ("load_time_seconds", "latency_seconds", "memory_bytes", "memory_mb")
OTHER_METRIC_NAME = "other"
DEAD_LETTER_REASONS = (
    "malformed_json",
    "schema_violation",
    "oversize",
    "bad_envelope",
    "processing_error",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class UsageTally:
    """Usage counts of the hot path as plain numbers, moved into the Prometheus series by
    :meth:`WorkerMetrics.sync` when they are read: one addition per message instead of a
    locked counter increment per figure.

    >>> m = WorkerMetrics()
    >>> m.tally.events += 3
    >>> m.usage_events._value.get(), m.sync(), m.usage_events._value.get(), m.tally.events
    (0.0, None, 3.0, 0)
    """

    events: int = 0
    requests: int = 0
    cold_starts: int = 0
    errors: int = 0
    late: int = 0
    future: int = 0  # held events the next event contradicted (counted in the open minute)
    last_usage: float | None = None  # wall clock of the latest usage message
    lag: float = 0.0  # wall clock minus the newest event time, then


class WorkerMetrics:
    """All of a worker's metrics, on a registry of their own."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        input_topics: tuple[str, ...] = (),
        anomaly_metrics: tuple[str, ...] = (),
        partitions: int = 0,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.messages = Counter(
            "warmcast_messages_consumed_total", "Kafka messages consumed", ["topic"], registry=r
        )
        self.usage_events = Counter(
            "warmcast_usage_events_total", "usage events processed", registry=r
        )
        self.requests = Counter(
            "warmcast_requests_total", "requests counted from usage events", registry=r
        )
        self.cold_starts = Counter(
            "warmcast_cold_starts_total", "requests reported as cold starts", registry=r
        )
        self.late_events = Counter(
            "warmcast_late_events_total",
            "usage events older than the open minute (counted in it)",
            registry=r,
        )
        self.metric_events = Counter(
            "warmcast_metric_events_total", "metric events processed", ["name"], registry=r
        )
        self.dead_letters = Counter(
            "warmcast_dead_letters_total",
            "events sent to a dead-letter topic",
            ["topic", "reason"],
            registry=r,
        )
        self.commands = Counter(
            "warmcast_warmup_commands_total", "warmup commands published", ["action"], registry=r
        )
        self.alerts = Counter(
            "warmcast_alerts_total", "alert transitions published", ["kind", "state"], registry=r
        )
        self.alerts_firing = Gauge(
            "warmcast_alerts_firing",
            "alerts firing now, those raised in a maintenance window aside",
            ["kind"],
            registry=r,
        )
        self.alerts_in_maintenance = Gauge(
            "warmcast_alerts_in_maintenance",
            "alerts firing now that were raised in a maintenance window (they do not page)",
            ["kind"],
            registry=r,
        )
        self.maintenance_active = Gauge(
            "warmcast_maintenance_windows_active",
            "maintenance windows in force now, of every model (scope all) or of a pool",
            ["scope"],
            registry=r,
        )
        self.tracked_models = Gauge(
            "warmcast_tracked_models", "served models with state in this worker", registry=r
        )
        self.paused_partitions = Gauge(
            "warmcast_consumer_paused_partitions",
            "partitions assigned to this worker that its consumer does not fetch (table "
            "changelogs once recovered)",
            registry=r,
        )
        self.event_time_lag = Gauge(
            "warmcast_event_time_lag_seconds",
            "wall clock minus the newest usage event time seen",
            registry=r,
        )
        self.processing = Histogram(
            "warmcast_message_processing_seconds",
            "time to process one consumed message (decode, engine, emit; for usage "
            "messages taken in a batch, its share of the batch's time)",
            ["topic"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.usage_batches = Histogram(
            "warmcast_usage_batch_messages",
            "usage messages taken together in one batch (larger while the worker is behind)",
            buckets=(1, 5, 10, 25, 50, 100, 150, 200, 500, 1000),
            registry=r,
        )
        self.command_failures = Counter(
            "warmcast_command_publish_failures_total",
            "warmup commands the broker did not accept (logged with the reason)",
            registry=r,
        )
        # -- sending (streams/sending.py) and held input (streams/holding.py) --
        self.send_failures = Counter(
            "warmcast_send_failures_total",
            "tries of a send that failed (each is tried again)",
            ["topic"],
            registry=r,
        )
        self.input_holds = Counter(
            "warmcast_input_holds_total",
            "times an input partition was held because what it caused could not be delivered",
            ["topic"],
            registry=r,
        )
        self.held_partitions = Gauge(
            "warmcast_input_partitions_held",
            "input partitions held now (paused, their offsets not committed)",
            registry=r,
        )
        self.tally = UsageTally()
        self._consumed: dict[str, Any] = {}
        self.warm_commands = self.commands.labels(action="warm")
        self.release_commands = self.commands.labels(action="release")
        self._health_metrics(r)
        self._input_metrics(r, anomaly_metrics, partitions)
        self._initialise_labels(input_topics, anomaly_metrics)

    def _input_metrics(
        self, r: CollectorRegistry, anomaly_metrics: tuple[str, ...], partitions: int
    ) -> None:
        """Event time, routing and metric-event bounds."""
        self.future_events = Counter(
            "warmcast_future_events_total",
            "usage events too far ahead of their partition's event time that the next "
            "event did not confirm (counted in the open minute)",
            registry=r,
        )
        self.forwarded_events = Counter(
            "warmcast_forwarded_events_total",
            "usage events that arrived on a partition that does not own their model and "
            "were forwarded to the owner (producers keyed without murmur2)",
            ["partition"],
            registry=r,
        )
        self.forwarded_twice = Counter(
            "warmcast_forwarded_twice_total",
            "forwarded usage events that arrived a second time (their source partition was "
            "read again after a restart or a rebalance) and were not counted again",
            registry=r,
        )
        self._forwarded: dict[int, Any] = {}
        for partition in range(partitions):
            self.forwarded(partition)
        self.metric_state = Gauge(
            "warmcast_model_metric_state",
            "per-model metric state held: load-time statistics, memory sizes and anomaly "
            "learners (bounded by the models tracked from usage and the untracked allowance)",
            registry=r,
        )
        #: the active policy and the shadow candidates, as the backtest scores them
        self.policy_figures = {
            figure: Gauge(
                f"warmcast_policy_{figure}",
                f"{what}, as the backtest scores it, of the active policy and of each shadow "
                "candidate (WARMCAST_SHADOW_POLICIES), over what this worker has seen",
                ["policy", "role"],
                registry=r,
            )
            for figure, what in (
                ("cold_starts", "cold starts"),
                ("requests", "requests"),
                ("wasted_minutes", "loaded model-minutes without a request"),
                ("p75_cold_pct", "p75 over models of the cold-start percentage"),
                ("cold_pct_overall", "cold starts per 100 requests"),
            )
        }
        self._metric_names: dict[str, Any] = {}
        for name in (*KNOWN_METRIC_NAMES, *anomaly_metrics, OTHER_METRIC_NAME):
            self._metric_names[name] = self.metric_events.labels(name=name)

    def forwarded(self, partition: int) -> Any:
        """The forwarded-events counter of a source partition (its labelled child, kept)."""
        child = self._forwarded.get(partition)
        if child is None:
            child = self._forwarded[partition] = self.forwarded_events.labels(
                partition=str(partition)
            )
        return child

    def metric_event(self, name: str) -> Any:
        """The metric-events counter of ``name``: its own for a known name, else ``other``.

        >>> m = WorkerMetrics()
        >>> m.metric_event("load_time_seconds") is m.metric_event("load_time_seconds")
        True
        >>> m.metric_event("made-up-1") is m.metric_event("made-up-2") is m.metric_event("other")
        True
        """
        names = self._metric_names
        return names.get(name) or names[OTHER_METRIC_NAME]

    def _health_metrics(self, r: CollectorRegistry) -> None:
        self.request_errors = Counter(
            "warmcast_request_errors_total", "requests reported as failed", registry=r
        )
        self.request_latency = Histogram(
            "warmcast_request_latency_seconds",
            "request latency reported by usage events",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_duration = Histogram(
            "warmcast_decision_duration_seconds",
            "engine time to decide on one usage message (leases, minute closing)",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.warmup_outcomes = Counter(
            "warmcast_warmup_outcomes_total",
            "warm leases that got a request while they held (used) or none (wasted)",
            ["outcome"],
            registry=r,
        )
        self.health_score = Gauge(
            "warmcast_health_score", "overall health, 0 (bad) to 1 (good)", registry=r
        )
        self.check_failing = Gauge(
            "warmcast_health_check_failing",
            "1 while a health check fails, 0 when it passes or does not apply",
            ["check"],
            registry=r,
        )
        self.component_applicable = Gauge(
            "warmcast_component_applicable",
            "1 if the running policy has the component",
            ["component"],
            registry=r,
        )
        self.component_last_update = Gauge(
            "warmcast_component_last_update_timestamp_seconds",
            "wall-clock time a component was last fed (0: never)",
            ["component"],
            registry=r,
        )
        self.precision = Gauge(
            "warmcast_prediction_precision_ratio",
            "loaded model-minutes that got a request (NaN: not measured)",
            registry=r,
        )
        self.recall = Gauge(
            "warmcast_prediction_recall_ratio",
            "invoked model-minutes that found the model loaded (NaN: not measured)",
            registry=r,
        )
        self.discrimination = Gauge(
            "warmcast_prediction_discrimination_ratio",
            "the learner's ranking (AUC) of minutes that get a request; 0.5 is chance "
            "(NaN: not measured)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "warmcast_warmup_queue_depth", "warmups waiting in the policy's queue", registry=r
        )
        self.queue_capacity = Gauge(
            "warmcast_warmup_queue_capacity", "size limit of the policy's queue", registry=r
        )
        self.queue_overflows = Counter(
            "warmcast_warmup_queue_overflows_total",
            "warmups refused or evicted because the queue was full",
            registry=r,
        )
        self.budget_use = Gauge(
            "warmcast_resource_budget_used_ratio",
            "share of the resource budget held by warm leases (NaN: no budget)",
            registry=r,
        )
        self.window_events = Gauge(
            "warmcast_usage_window_events",
            "usage events in the volume window (event time)",
            registry=r,
        )
        self.last_usage = Gauge(
            "warmcast_last_usage_timestamp_seconds",
            "wall-clock time of the last usage event (0: none yet)",
            registry=r,
        )
        self.anomalies = Counter(
            "warmcast_metric_anomalies_total",
            "metric values flagged as anomalous",
            ["metric"],
            registry=r,
        )
        self.anomalies_active = Gauge(
            "warmcast_metric_anomalies_active",
            "load-time and latency series whose latest value is anomalous",
            registry=r,
        )
        self.maintenance_held = Gauge(
            "warmcast_maintenance_held_leases",
            "warm leases a maintenance window holds back now, to start later or never",
            registry=r,
        )
        self.anomalies_in_maintenance = Gauge(
            "warmcast_metric_anomalies_in_maintenance",
            "of the anomalous series, those of models in a maintenance window now",
            registry=r,
        )
        self.health_snapshots = Counter(
            "warmcast_health_snapshots_total",
            "health snapshots published to the health topic",
            registry=r,
        )

    def consumed(self, topic: str) -> Any:
        """The messages-consumed counter of ``topic`` (its labelled child, kept)."""
        child = self._consumed.get(topic)
        if child is None:
            child = self._consumed[topic] = self.messages.labels(topic=topic)
        return child

    def observe_many(self, histogram: Any, amount: float, times: int) -> None:
        """``histogram.observe(amount)`` ``times`` times over, in one step (a batch's
        messages each observed at their share of its time).

        >>> m = WorkerMetrics()
        >>> m.observe_many(m.usage_processing, 0.002, 3)
        >>> m.usage_processing._sum.get(), [b.get() for b in m.usage_processing._buckets][:5]
        (0.006, [0.0, 0.0, 0.0, 3.0, 0.0])
        """
        if times <= 0:
            return
        try:  # the labelled child's own series: one locked addition each, not ``times``
            bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
        except AttributeError:  # a client that keeps them otherwise: one at a time
            for _ in range(times):
                histogram.observe(amount)
            return
        total.inc(amount * times)
        for i, bound in enumerate(bounds):
            if amount <= bound:
                buckets[i].inc(times)
                break

    def sync(self) -> None:
        """Move the hot path's tally into the Prometheus series (before they are read)."""
        t = self.tally
        if t.events:
            self.usage_events.inc(t.events)
            self.requests.inc(t.requests)
            self.cold_starts.inc(t.cold_starts)
            self.request_errors.inc(t.errors)
            self.late_events.inc(t.late)
            t.events = t.requests = t.cold_starts = t.errors = t.late = 0
        if t.future:
            self.future_events.inc(t.future)
            t.future = 0
        if t.last_usage is not None:
            self.last_usage.set(t.last_usage)
            self.event_time_lag.set(t.lag)

    def _initialise_labels(
        self, input_topics: tuple[str, ...], anomaly_metrics: tuple[str, ...]
    ) -> None:
        """Known label values start at zero, so every series exists from the start."""
        for kind in ALERT_KINDS:
            self.alerts_firing.labels(kind=kind).set(0)
            self.alerts_in_maintenance.labels(kind=kind).set(0)
            for state in ("firing", "resolved"):
                self.alerts.labels(kind=kind, state=state)
        for scope in ("all", "pool"):
            self.maintenance_active.labels(scope=scope).set(0)
        for check in CHECKS:
            self.check_failing.labels(check=check).set(0)
        for component in COMPONENTS:
            self.component_applicable.labels(component=component).set(0)
            self.component_last_update.labels(component=component).set(0)
        self.warmups_used = self.warmup_outcomes.labels(outcome="used")
        self.warmups_wasted = self.warmup_outcomes.labels(outcome="wasted")
        for topic in input_topics:
            self.messages.labels(topic=topic)
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(topic=topic, reason=reason)
        for metric in anomaly_metrics:
            self.anomalies.labels(metric=metric)
        self.usage_processing = self.processing.labels(topic="usage")
        self.health_score.set(1.0)
        self.precision.set(float("nan"))
        self.recall.set(float("nan"))
        self.discrimination.set(float("nan"))
        self.budget_use.set(float("nan"))
