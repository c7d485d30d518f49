"""The worker's state beside the Faust tables: engines per partition, alerts, counters.

Agents stay thin by asking the runtime; everything deciding lives in ``engine/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.alerting import AlertTracker, AlertTransition, RateWindow
from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.metrics import WorkerMetrics
from streams.settings import WarmcastSettings


@dataclass
class Runtime:
    settings: WarmcastSettings
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    engines: dict[int, WarmupEngine] = field(default_factory=dict)
    alerts: AlertTracker = field(default_factory=AlertTracker)
    usage_partitions: int = 0
    last_usage_wall: float | None = None
    started_wall: float = field(default_factory=time.time)
    newest_event_time: float | None = None
    started: bool = False  # set once the worker has joined its group and recovered its tables
    dead_letter_window: RateWindow = field(init=False)

    def __post_init__(self) -> None:
        self.dead_letter_window = RateWindow(self.settings.dead_letter_window_seconds)
        self.usage_partitions = self.settings.partitions

    def engine_for(self, partition: int) -> WarmupEngine:
        engine = self.engines.get(partition)
        if engine is None:
            spec = self.settings.policy
            knobs = {"knob": self.settings.knob} if spec.strip().lower() == "warmcast" else {}
            policy = make_policy(spec, **knobs)
            engine = self.engines[partition] = WarmupEngine(policy)
        return engine

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.engines.pop(partition, None)

    def tracked_models(self) -> int:
        return sum(len(e.last_seen) for e in self.engines.values())

    def note_dead_letters(self, n: int, now: float) -> None:
        self.dead_letter_window.add(now, n)

    def check_alerts(self, now: float) -> list[AlertTransition]:
        """Evaluate the worker-level conditions: stale data and dead-letter bursts."""
        s = self.settings
        out: list[AlertTransition] = []
        since = now - (self.last_usage_wall or self.started_wall)
        out += self.alerts.check(
            "stale_data",
            s.topic("usage"),
            since > s.stale_after_seconds,
            ts=now,
            value=round(since, 3),
            threshold=s.stale_after_seconds,
            summary=f"no usage events for {since:.0f}s",
        )
        burst = self.dead_letter_window.count(now)
        out += self.alerts.check(
            "dead_letter_burst",
            s.app_id,
            burst >= s.dead_letter_burst,
            ts=now,
            value=float(burst),
            threshold=float(s.dead_letter_burst),
            severity="critical",
            summary=f"{burst} dead letters in the last {s.dead_letter_window_seconds:.0f}s",
        )
        return out
