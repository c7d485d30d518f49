"""Prometheus metrics of the worker. Base units, ``_total`` counters, no model ids as labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    """All of a worker's metrics, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
            "warmcast_alerts_firing", "alerts firing now", ["kind"], registry=r
        )
        self.tracked_models = Gauge(
            "warmcast_tracked_models", "served models with state in this worker", registry=r
        )
        self.event_time_lag = Gauge(
            "warmcast_event_time_lag_seconds",
            "wall clock minus the newest usage event time seen",
            registry=r,
        )
        self.processing = Histogram(
            "warmcast_message_processing_seconds",
            "time to process one consumed message (decode, engine, emit)",
            ["topic"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.warm_commands = self.commands.labels(action="warm")
        self.release_commands = self.commands.labels(action="release")
