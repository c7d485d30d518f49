"""The worker's state beside the Faust tables: engines per partition, health, alerts.

Agents stay thin by asking the runtime; everything deciding lives in ``engine/``: the
runtime feeds engines, rolling health and anomaly learners, runs the health checks on a
timer and turns them into alert transitions, and keeps the Prometheus gauges current.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.alerting import AlertTracker, AlertTransition, RateWindow, as_transition
from engine.anomaly import MetricAnomalies
from engine.capabilities import CountsMetricState, RaisesAlerts
from engine.checkpoint import PartitionState
from engine.components import ComponentReport, PolicyProbe, WorkerActivity, component_reports
from engine.core import WarmupEngine
from engine.crashloop import CrashLoops
from engine.health import ModelHealth
from engine.healthscore import (
    CHECKS,
    CheckResult,
    HealthThresholds,
    Observations,
    degraded,
    evaluate,
)
from engine.healthscore import score as health_score
from engine.lease import Command
from engine.maintenance import MaintenanceGate, MaintenanceSchedule, Window, parse_windows
from engine.partition import HealthLoader, Origin, PartitionStep, UsageFed
from engine.policies import Policy
from engine.promotion import (
    Decision,
    Figures,
    Lineup,
    PromotionRule,
    evidence,
    judge_promotion,
    judge_rollback,
    merge,
    policy_alert,
)
from engine.registry import make_policy
from engine.rolling import RollingWindow
from engine.shadow import ShadowPolicies, merged_score, parse_shadows
from schemas.envelope import Decoded, E, decode, reject_skewed
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from streams.partitioning import partition_for
from streams.prometheus import ALERT_KINDS, WorkerMetrics
from streams.settings import WarmcastSettings

__all__ = ["FORWARDED_MIN_EVENTS", "HealthLoader", "Origin", "Runtime", "promotion_rule"]

WARMUP_OUTCOMES = ("issued", "used", "wasted")
#: Forwarded events in the window below which ``forwarded_events`` does not judge a share.
FORWARDED_MIN_EVENTS = 20

#: Buckets of the policies' scores kept for the status page's chart.
CHART_BUCKETS = 48
#: Changes of the active policy kept for GET /policies.
CHANGES_KEPT = 20

#: Where the message being processed comes from: (input, partition, offset), input being
#: ``"usage"`` or ``"metrics"``; ``None`` outside of a message.
PositionSource = Callable[[], tuple[str, int, int] | None]


@dataclass
class Runtime:
    settings: WarmcastSettings
    metrics: WorkerMetrics = field(init=False)
    #: usage partition -> its step (engine, anomaly learners, decoded health)
    steps: dict[int, PartitionStep] = field(default_factory=dict)
    alerts: AlertTracker = field(init=False)
    usage_partitions: int = 0
    warmup_partitions: int = 0
    last_usage_wall: float | None = None
    last_metric_wall: float | None = None
    last_command_wall: float | None = None
    started_wall: float = field(default_factory=time.time)
    newest_event_time: float | None = None
    started: bool = False  # set once the worker has joined its group and recovered its tables
    dead_letter_window: RateWindow = field(init=False)
    routing: RollingWindow = field(init=False)  # usage events applied, forwarded; wall clock
    overflow_window: RateWindow = field(init=False)  # warmup-queue overflows
    volume: RollingWindow = field(init=False)  # usage events, event time
    decisions: RollingWindow = field(init=False)  # engine time per message, wall clock
    dirty: set[str] = field(default_factory=set)  # models whose snapshot is due
    metric_events: int = 0
    warmups: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WARMUP_OUTCOMES, 0))
    checks: list[CheckResult] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)
    score: float = 1.0
    window_events: float = 0.0
    _overflows_seen: int = 0
    windows: tuple[float, ...] = ()  # rolling health windows, seconds (from the settings)
    _anomaly_subjects: set[str] = field(default_factory=set)
    # Operator controls and checkpoints (agents/control.py, agents/recovery.py).
    paused: bool = False  # emergency stop: engines withhold warm leases
    safe_mode: bool = False  # engines run the safe fixed keep-alive
    learned_policies: dict[int, Policy] = field(default_factory=dict)  # set aside meanwhile
    #: (input, partition) -> offset of the latest message whose events reached the engine.
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    #: usage partition -> offset of the latest message the usage agent took, good or bad
    #: (the consumer lag counts from the next one).
    read_offsets: dict[int, int] = field(default_factory=dict)
    position_source: PositionSource | None = None
    #: Crashes of the worker's agents (agents/probes.py counts them; readiness reads them).
    agent_crashes: CrashLoops = field(init=False)
    #: The active policy, the shadow candidates and what the active one replaced.
    lineup: Lineup = field(init=False)
    #: policy name -> (spec, knobs) of every policy the lineup may hold
    specs: dict[str, tuple[str, dict[str, float]]] = field(init=False)
    rule: PromotionRule = field(init=False)
    #: bucket -> policy name -> figures, over this worker's partitions (event time)
    history: dict[int, dict[str, Figures]] = field(default_factory=dict)
    #: the latest changes of the active policy, oldest first
    policy_changes: list[Decision] = field(default_factory=list)
    #: Maintenance windows (settings, then control commands) and the alerts they mark:
    #: fingerprint -> window id, while the alert fires.
    maintenance: MaintenanceSchedule = field(init=False)
    in_maintenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.agent_crashes = CrashLoops(
            s.agent_crash_loop_crashes, s.agent_crash_loop_window_seconds
        )
        self.metrics = WorkerMetrics(
            input_topics=(s.topic("usage"), s.topic("metrics")),
            anomaly_metrics=s.anomaly_metric_names,
            partitions=s.partitions,
        )
        self.alerts = AlertTracker(s.alert_for_seconds, s.alert_keep_firing_seconds)
        self.dead_letter_window = RateWindow(s.dead_letter_window_seconds)
        self.routing = RollingWindow(s.forwarded_window_seconds, width=2)
        self.overflow_window = RateWindow(s.queue_overflow_window_seconds)
        self.volume = RollingWindow(s.volume_window_seconds, width=1)
        self.decisions = RollingWindow(s.decision_latency_window_seconds, width=0)
        self.usage_partitions = s.partitions
        self.warmup_partitions = s.partitions
        self.windows = s.health_window_lengths
        active = s.policy
        self.specs = {active: (s.policy, dict(s.policy_knobs)), **parse_shadows(s.shadow_policies)}
        self.lineup = Lineup(active, [label for label in self.specs if label != active])
        self.rule = promotion_rule(s)
        self.maintenance = MaintenanceSchedule(parse_windows(s.maintenance))

    @property
    def thresholds(self) -> HealthThresholds:
        s = self.settings
        return HealthThresholds(
            stale_after_seconds=s.stale_after_seconds,
            min_volume_events=s.min_volume_events,
            accuracy_min=s.accuracy_min,
            decision_latency_p95_max_seconds=s.decision_latency_p95_max_seconds,
            budget_use_max=s.budget_use_max,
            dead_letter_burst=s.dead_letter_burst,
            score_min=s.health_score_min,
            hysteresis=s.alert_hysteresis,
        )

    @property
    def engines(self) -> dict[int, WarmupEngine]:
        """Each partition's engine."""
        return {partition: step.engine for partition, step in self.steps.items()}

    @property
    def anomalies(self) -> dict[int, MetricAnomalies]:
        """Each partition's metric anomaly learners."""
        return {partition: step.anomalies for partition, step in self.steps.items()}

    @property
    def partition_event_time(self) -> dict[int, float]:
        """Each partition's robust event time (of the partitions fed since they came)."""
        return {p: s.event_time for p, s in self.steps.items() if s.event_time is not None}

    def step_for(self, partition: int, offset: int | None = None) -> PartitionStep:
        """The partition's step (made on first use). The usage message at ``offset``
        (else the message being processed, from ``position_source``) is recorded as
        reaching it."""
        step = self.steps.get(partition)
        if step is None:
            engine = WarmupEngine(
                self.new_policy(),
                max_models=self.settings.max_models_per_partition,
                report_evictions=True,
                tolerance_minutes=self.tolerance_minutes,
                budget=self.settings.partition_budget(),
            )
            step = self.steps[partition] = self._new_step(engine)
            self._under_controls(partition, engine)
        if offset is not None:
            self.positions["usage", partition] = offset
        elif self.position_source is not None:
            where = self.position_source()
            if where is not None and where[1] == partition:
                self.positions[where[0], partition] = where[2]
        return step

    def take_engine(self, partition: int, engine: WarmupEngine) -> PartitionStep:
        """Run ``engine`` for ``partition`` from now on, in a fresh step."""
        step = self.steps[partition] = self._new_step(engine)
        return step

    def engine_for(self, partition: int, offset: int | None = None) -> WarmupEngine:
        """The partition's engine (see :meth:`step_for`)."""
        return self.step_for(partition, offset).engine

    def _new_step(
        self, engine: WarmupEngine, anomalies: MetricAnomalies | None = None
    ) -> PartitionStep:
        s = self.settings
        return PartitionStep(
            engine,
            anomalies if anomalies is not None else self._new_anomalies(),
            window=s.health_window_seconds,
            windows=self.windows,
            health_cache_models=s.health_cache_models,
            shadows=self._new_shadows(engine),
            active_label=self.lineup.active,
            bucket_minutes=self.rule.bucket_minutes,
        )

    def _new_shadows(self, engine: WarmupEngine) -> ShadowPolicies | None:
        """The candidate policies of a partition (``None``: none are configured)."""
        labels = self.lineup.candidates
        if not labels:
            return None
        return ShadowPolicies(
            {label: self.make(label) for label in labels},
            grid=engine.grid,
            max_models=self.settings.max_models_per_partition,
            tolerance_minutes=self.tolerance_minutes,
        )

    def policy_scores(self) -> dict[str, Any]:
        """The active policy and each candidate, scored as the backtest scores over what
        this worker's partitions have seen since they came to it (``None``: no candidates
        are configured)."""
        steps = [step for step in self.steps.values() if step.shadows is not None]
        newest = self.newest_event_time
        end = int(newest // 60) if newest is not None else 0
        labels = self.lineup.candidates
        active = [step.active for step in steps if step.active is not None]
        lineup = self.lineup
        return {
            "active": {"policy": lineup.active, **merged_score(active, end)},
            "candidates": [
                {
                    "policy": label,
                    **merged_score(
                        (s.shadows.scored[label] for s in steps if s.shadows is not None), end
                    ),
                }
                for label in labels
            ],
            "through_minute": end,
            "partitions": sorted(p for p, step in self.steps.items() if step.shadows is not None),
            "version": lineup.version,
            "generation": lineup.generation,
            "previous": lineup.previous,
            "promotion": "auto" if self.settings.promotion_auto else "manual",
            "rollback": "auto" if self.settings.rollback_auto else "off",
            "buckets": self.bucket_scores(),
            "changes": [d.details() for d in self.policy_changes],
        }

    def bucket_scores(self) -> list[dict[str, Any]]:
        """Each closed bucket kept: its first minute and every policy's cold minutes (%)
        and wasted minutes there (the status page's chart)."""
        width = self.rule.bucket_minutes
        return [
            {
                "minute": b * width,
                "cold_pct": {k: round(f.cold_pct, 3) for k, f in row.items()},
                "wasted_minutes": {k: f.wasted_minutes for k, f in row.items()},
            }
            for b, row in sorted(self.history.items())
        ]

    # -- promotion and rollback (engine/promotion.py) ---------------------------------

    def make(self, label: str) -> Policy:
        """A fresh policy of one of the lineup's names."""
        spec, knobs = self.specs[label]
        return make_policy(spec, **knobs)

    def _collect_buckets(self) -> int:
        """Take the buckets the partitions closed into :attr:`history`; the event-time
        minute judged at (the newest event's)."""
        newest = self.newest_event_time
        minute = int(newest // 60) if newest is not None else 0
        keep = minute // self.rule.bucket_minutes - max(self.rule.window_buckets, CHART_BUCKETS)
        for step in self.steps.values():
            if step.buckets is not None:
                merge(self.history, step.buckets.take(), keep)
        merge(self.history, {}, keep)
        return minute

    def judge_policies(self) -> list[Decision]:
        """Roll the active policy back, or promote a candidate, when the rules of
        engine/promotion.py say so (not while stopped or in safe mode); the changes made."""
        s = self.settings
        if not self.lineup.candidates:
            return []
        minute = self._collect_buckets()
        if self.paused or self.safe_mode:
            return []
        decision: Decision | None = None
        if s.rollback_auto:
            decision = judge_rollback(
                self.history, self.lineup, self.rule, minute, s.rollback_policy
            )
        if decision is None and s.promotion_auto:
            decision = judge_promotion(self.history, self.lineup, self.rule, minute)
        if decision is None:
            return []
        return [self.change_policy(decision, minute)]

    def change_policy(self, decision: Decision, minute: int) -> Decision:
        """Make ``decision.policy`` the active policy of every partition (the one it
        replaces runs on as a candidate, with its learners)."""
        for step in self.steps.values():
            if step.shadows is not None and decision.policy in step.shadows.engines:
                step.swap_active(decision.policy)
        self.lineup.change(decision.policy, minute, rollback=decision.action == "rollback")
        self.policy_changes = [*self.policy_changes[-(CHANGES_KEPT - 1) :], decision]
        return decision

    def promote(self, label: str, by: str = "") -> Decision:
        """An operator's promotion of candidate ``label`` (``ValueError``: not possible)."""
        return self._manual("promote", label, by)

    def rollback(self, by: str = "") -> Decision:
        """An operator's rollback to the previous policy (or the rollback policy)."""
        target = self.lineup.rollback_target(self.settings.rollback_policy)
        if target is None:
            raise ValueError(
                "nothing to roll back to: no promotion came before and the rollback policy "
                f"{self.settings.rollback_policy!r} does not run as a candidate"
            )
        return self._manual("rollback", target, by)

    def _manual(self, action: Literal["promote", "rollback"], label: str, by: str) -> Decision:
        if self.safe_mode:
            raise ValueError("safe mode is in force: resume first")
        if label not in self.lineup.candidates:
            shown = ", ".join(self.lineup.candidates) or "none"
            raise ValueError(f"{label!r} is no shadow candidate (candidates: {shown})")
        minute = self._collect_buckets()
        found = evidence(self.history, self.lineup, self.rule, minute, label, action, by)
        return self.change_policy(found, minute)

    def policy_alert(self, decision: Decision, now: float) -> AlertTransition:
        """The alert (and audit record) of a change."""
        return policy_alert(decision, self.settings.app_id, now)

    @property
    def tolerance_minutes(self) -> int:
        """How far (whole minutes) one usage event may move a partition's event time."""
        return math.ceil(self.settings.watermark_tolerance_seconds / 60.0)

    def new_policy(self) -> Policy:
        """A fresh policy of the active policy's name."""
        return self.make(self.lineup.active)

    def _under_controls(self, partition: int, engine: WarmupEngine) -> WarmupEngine:
        """Apply the operator's current controls to an engine joining this worker."""
        engine.paused = self.paused
        retune = getattr(engine.policy, "retune", None)
        if retune is not None and engine.policy.name == self.settings.policy:
            retune(**self.settings.policy_knobs)  # a restored learner, today's settings
        if len(self.maintenance):  # candidates too: they are scored against the active one
            step = self.steps.get(partition)
            shadows = step.shadows if step is not None else None
            for gated in [engine, *(shadows.engines.values() if shadows is not None else ())]:
                if gated.maintenance is None:
                    gated.maintenance = MaintenanceGate(self.maintenance, gated.grid)
        engine.max_models = self.settings.max_models_per_partition
        engine.tolerance_minutes = self.tolerance_minutes
        wanted = self.settings.partition_budget()
        if wanted is None:
            engine.budget = None
        elif engine.budget is None or engine.budget.counts_models != wanted.counts_models:
            engine.budget = wanted
        else:  # restored: its leases and sizes stay, under today's capacity
            engine.budget.capacity = wanted.capacity
        if self.safe_mode and partition not in self.learned_policies:
            self.learned_policies[partition] = engine.policy
            engine.policy = make_policy(self.settings.safe_policy)
        elif not self.safe_mode and partition in self.learned_policies:
            engine.policy = self.learned_policies.pop(partition)
        return engine

    # -- operator controls and checkpoints ---------------------------------------------

    def pause(self, release: bool = False) -> list[Command]:
        """Emergency stop: no engine issues warm leases any more; with ``release``, every
        model kept warm is released now. Returns the release commands."""
        self.paused = True
        out: list[Command] = []
        for engine in self.engines.values():
            engine.paused = True
            if release:
                out += engine.release_all("emergency stop")
        return out

    def enter_safe_mode(self) -> None:
        """Reset to safe: every engine runs the fixed keep-alive; learned policies are set
        aside (and come back on :meth:`resume`)."""
        self.safe_mode = True
        for partition, engine in self.engines.items():
            self._under_controls(partition, engine)

    def resume(self) -> tuple[bool, bool]:
        """Leave the emergency stop and the safe mode; returns whether each was on."""
        was = (self.paused, self.safe_mode)
        self.paused = self.safe_mode = False
        for partition, engine in self.engines.items():
            self._under_controls(partition, engine)
        return was

    def add_window(self, window: Window) -> None:
        """Add (or replace) a maintenance window; every engine follows it from now on."""
        self.maintenance.add(window)
        for partition, engine in self.engines.items():
            self._under_controls(partition, engine)

    def cancel_window(self, window_id: str) -> bool:
        """Remove a maintenance window (what it held starts as the policy has it)."""
        return self.maintenance.cancel(window_id)

    def mark_maintenance(self, alert: AlertTransition) -> str | None:
        """The maintenance window an alert is raised in (``None``: it pages as usual); a
        resolved alert whose firing was marked is marked by the same window."""
        fp = alert.fingerprint
        if alert.state == "resolved":
            return self.in_maintenance.pop(fp, None)
        window = self.maintenance.marks(alert.kind, _model_of(alert), alert.ts)
        if window is not None:
            self.in_maintenance[fp] = window
        else:
            self.in_maintenance.pop(fp, None)
        return window

    def partition_state(self, partition: int) -> PartitionState | None:
        """What a partition has learned, to checkpoint it (``None``: nothing yet)."""
        step = self.steps.get(partition)
        if step is None:
            return None
        lineup = self.lineup
        return PartitionState(
            step.engine,
            step.anomalies,
            self.learned_policies.get(partition),
            step.shadows,
            step.active,
            Lineup(
                step.active_label,
                list(step.shadows.engines) if step.shadows is not None else [],
                lineup.previous,
                lineup.generation,
                lineup.changed_minute,
            ),
        )

    def install_state(self, partition: int, state: PartitionState) -> WarmupEngine:
        """Take over a partition's restored state, under the current controls."""
        self.learned_policies.pop(partition, None)
        if state.learned_policy is not None:
            self.learned_policies[partition] = state.learned_policy
        previous = self.steps.get(partition)
        anomalies = state.anomalies
        if anomalies is None and previous is not None:
            anomalies = previous.anomalies
        step = self.steps[partition] = self._new_step(state.engine, anomalies)
        if previous is not None:  # what is decoded stays decoded
            step.health = previous.health
        self._take_lineup(step, state)
        return self._under_controls(partition, state.engine)

    def _take_lineup(self, step: PartitionStep, state: PartitionState) -> None:
        """Restore a partition's candidates with their learners, and the lineup of a
        later generation than this worker's (a promotion before a restart): the engine
        runs the active policy of the lineup, the others run as candidates. Policies the
        settings no longer name are left out; those they name anew start fresh."""
        saved = state.lineup
        if saved is None or state.shadows is None or state.scored is None:
            return
        known = {saved.active, *saved.candidates}
        if not known <= set(self.specs) or step.shadows is None:
            return
        lineup = self.lineup
        if saved.generation > lineup.generation and known == {lineup.active, *lineup.candidates}:
            self.lineup = Lineup(
                saved.active,
                list(saved.candidates),
                saved.previous,
                saved.generation,
                saved.changed_minute,
            )
            for other in self.steps.values():  # the partitions already here follow it
                if other is not step:
                    self._follow_lineup(other)
        fresh, shadows = step.shadows, state.shadows
        names = {self.lineup.active, *self.lineup.candidates}
        for label in [k for k in shadows.engines if k not in names]:
            del shadows.engines[label], shadows.scored[label]
        for label in self.lineup.candidates:
            if label not in shadows.engines and label != saved.active:
                shadows.engines[label] = fresh.engines[label]
                shadows.scored[label] = fresh.scored[label]
        step.shadows, step.active, step.active_label = shadows, state.scored, saved.active
        self._follow_lineup(step)

    def _follow_lineup(self, step: PartitionStep) -> None:
        """Run the lineup's active policy in the step's engine, if it runs another."""
        active, shadows = self.lineup.active, step.shadows
        if shadows is not None and step.active_label != active and active in shadows.engines:
            step.swap_active(active)

    def _new_anomalies(self) -> MetricAnomalies:
        s = self.settings
        return MetricAnomalies(
            s.anomaly_metric_names, threshold=s.anomaly_threshold, warmup=s.anomaly_warmup
        )

    def forget_partitions(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.steps.pop(partition, None)
            self.learned_policies.pop(partition, None)
            self.read_offsets.pop(partition, None)
            for kind in ("usage", "metrics"):
                self.positions.pop((kind, partition), None)

    def tracked_models(self) -> int:
        return sum(len(e.last_seen) for e in self.engines.values())

    def note_dead_letters(self, n: int, now: float) -> None:
        self.dead_letter_window.add(now, n)

    # -- usage and metric events ------------------------------------------------------

    def decode(self, raw: bytes | None, schema: type[E], now: float) -> Decoded[E]:
        """The events of one consumed message, checked against the settings' bounds
        (message size, events in an envelope, event time against the wall clock ``now``);
        the bad ones are in ``errors``."""
        settings = self.settings
        decoded = decode(
            raw,
            schema,
            max_bytes=settings.max_message_bytes,
            max_events=settings.max_envelope_events,
        )
        return reject_skewed(
            decoded, now, settings.max_future_skew_seconds, settings.max_past_skew_seconds
        )

    def replay(
        self,
        state: PartitionState,
        partition: int,
        records: Iterable[tuple[float, str, bytes | None]],
    ) -> list[Command]:
        """Feed a restored partition state the input records written after its checkpoint,
        ``(broker time in seconds, "usage" or "metrics", value)`` in the order they were
        written, as the agents fed them: each message decoded and checked against its
        broker time, what the live worker refused skipped (it was dead-lettered then),
        usage events of other partitions' models left to them; the commands they cause."""
        if state.anomalies is None:
            state.anomalies = self._new_anomalies()
        step = self._new_step(state.engine, state.anomalies)
        n_partitions = self.usage_partitions
        commands: list[Command] = []
        for broker_time, kind, value in records:
            if kind == "usage":
                events = self.decode(value, UsageEvent, broker_time).events
                owned = (e for e in events if partition_for(e.model_id, n_partitions) == partition)
                commands += step.replay_usage(owned)
            else:
                for mv in self.decode(value, MetricEvent, broker_time).events:
                    step.feed_metric(mv)
        return commands

    def apply_usage(
        self,
        partition: int,
        events: Iterable[UsageEvent],
        load: HealthLoader,
        now: float,
        offset: int | None = None,
        offsets: Sequence[int] | None = None,
        origins: Sequence[Origin | None] | None = None,
    ) -> tuple[list[Command], dict[str, ModelHealth]]:
        """Feed usage events (of one message, or several up to ``offset``) to the
        partition's engine and to the rolling health of each model they concern; return
        the commands and the changed health. ``offsets`` (each event's message offset)
        keeps a message read again from being counted twice in the health; ``origins``
        (where each forwarded event was first read, see :meth:`_forwarded_once`) keeps an
        event forwarded twice from being counted twice at all."""
        step = self.step_for(partition, offset)
        fed = step.feed_usage(
            events,
            load,
            offsets=offsets,
            origins=origins if offsets is not None else None,
            on_latency=self.metrics.request_latency.observe,
        )
        self.note_usage(fed, step, now)
        return fed.commands, fed.touched

    def note_usage(self, fed: UsageFed, step: PartitionStep, now: float) -> None:
        """Count what a partition's step did with usage events (the wall clock ``now``)."""
        tally = fed.tally
        newest = step.event_time or 0.0
        self._note_outcomes(fed)
        if fed.commands:
            self.note_commands(fed.commands, now)
        if fed.forwarded_twice:
            self.metrics.forwarded_twice.inc(fed.forwarded_twice)
        if self.newest_event_time is None or newest > self.newest_event_time:
            self.newest_event_time = newest
        self.volume.add(newest, (tally.events,))
        # stamped when the step's decisions are done: a slow step stays in the window for
        # the window's whole length after it, not less by its own duration
        self.decisions.add(now + tally.engine_seconds, (), latency=tally.engine_seconds)
        self.last_usage_wall = now
        self.dirty.update(fed.touched)
        counted = self.metrics.tally
        counted.events += tally.events
        counted.requests += tally.requests
        counted.cold_starts += tally.cold_starts
        counted.errors += tally.errors
        counted.late += fed.late
        counted.future += fed.future
        self.routing.add(now, (tally.events, 0))
        counted.last_usage = now
        counted.lag = now - newest
        self.metrics.decision_duration.observe(tally.engine_seconds)

    def forget_health(self, partition: int, model_ids: list[str]) -> None:
        """Drop the decoded health and the metric anomaly learners of models the
        partition's engine evicted."""
        step = self.steps.get(partition)
        if step is not None:
            step.forget(model_ids)

    def drop_decoded(self, partitions: set[int]) -> None:
        """Forget decoded health of partitions this worker may no longer own: what comes
        back after a rebalance is read from the recovered table."""
        for partition in partitions:
            step = self.steps.get(partition)
            if step is not None:
                step.health.clear()

    def _note_outcomes(self, fed: UsageFed) -> None:
        if fed.used:
            self.warmups["used"] += fed.used
            self.metrics.warmups_used.inc(fed.used)
        if fed.wasted:
            self.warmups["wasted"] += fed.wasted
            self.metrics.warmups_wasted.inc(fed.wasted)

    def apply_metrics(self, partition: int, events: Iterable[MetricEvent], now: float) -> None:
        """Hand metric events to the partition's policy and to the anomaly learners."""
        step = self.step_for(partition)
        m = self.metrics
        self.last_metric_wall = now
        for ev in events:
            m.metric_event(ev.name).inc()
            self.metric_events += 1
            if step.feed_metric(ev):
                m.anomalies.labels(metric=ev.name).inc()

    # -- event time held for confirmation, forwarded events ------------------------------

    def confirm_held(
        self, load: HealthLoader, now: float
    ) -> tuple[list[Command], dict[str, ModelHealth]]:
        """Take the events held for confirmation that the wall clock ``now`` has reached at
        their own time (a replay's event after a gap, with nothing after it yet); the
        commands and the health that follows them."""
        commands: list[Command] = []
        touched: dict[str, ModelHealth] = {}
        for step in self.steps.values():
            held = step.engine.held_time
            if held is None or held > now:
                continue
            fed = step.confirm_held(load)
            self._note_outcomes(fed)
            touched.update(fed.touched)
            commands += fed.commands
        self.note_commands(commands, now)
        self.dirty.update(touched)
        return commands, touched

    def note_forwarded(self, partition: int, n: int, now: float) -> None:
        """``n`` usage events read from ``partition`` were forwarded to their owners."""
        self.metrics.forwarded(partition).inc(n)
        self.routing.add(now, (0, n))

    def _check_forwarded(self, now: float) -> list[AlertTransition]:
        """``forwarded_events``: the share of usage events forwarded within the window."""
        kind = "forwarded_events"
        if kind in self.settings.disabled_alerts:
            return []
        applied, forwarded = self.routing.view(now).counts
        share = forwarded / applied if applied > 0 else 0.0
        limit = self.settings.forwarded_share_max
        return self.alerts.check(
            kind,
            self.settings.topic("usage"),
            share > limit and forwarded >= FORWARDED_MIN_EVENTS,
            ts=now,
            value=round(share, 6),
            threshold=limit,
            summary=f"{share:.0%} of usage events arrived on a partition that does not own "
            "their model and were forwarded: key them by model_id with murmur2 (README)",
            clear=share <= limit * (1 - self.settings.alert_hysteresis),
        )

    def metric_state_size(self) -> int:
        """Entries of per-model metric state: the policies' load-time statistics and
        memory sizes, and the anomaly learners."""
        size = sum(len(w.learners) for w in self.anomalies.values())
        policies = [e.policy for e in self.engines.values()] + [*self.learned_policies.values()]
        for policy in policies:
            if isinstance(policy, CountsMetricState):
                size += policy.metric_models()
        return size

    def note_commands(self, commands: list[Command], now: float) -> None:
        if commands:
            self.last_command_wall = now
            self.warmups["issued"] += sum(1 for c in commands if c.action == "warm")

    # -- checks, score and alerts -----------------------------------------------------

    def probe(self) -> PolicyProbe:
        probe = PolicyProbe()
        for engine in self.engines.values():
            probe.add(engine.policy, engine.open_minute)
        return probe

    def activity(self, now: float) -> WorkerActivity:
        return WorkerActivity(
            last_usage=self.last_usage_wall,
            last_metric=self.last_metric_wall,
            last_command=self.last_command_wall,
            usage_events_in_window=self.usage_events_in_window(),
            metric_events=self.metric_events,
            decision_latency_p95=self.decisions.view(now).quantile(0.95),
            warmups_issued=self.warmups["issued"],
            warmups_used=self.warmups["used"],
            warmups_wasted=self.warmups["wasted"],
        )

    def usage_events_in_window(self) -> float:
        if self.newest_event_time is None:
            return 0.0
        return self.volume.view(self.newest_event_time).counts[0]

    def check_alerts(self, now: float) -> list[AlertTransition]:
        """Run every health check, score the worker, and return the alert transitions."""
        probe = self.probe()
        overflows = max(probe.queue_overflows - self._overflows_seen, 0)
        self._overflows_seen = probe.queue_overflows
        self.overflow_window.add(now, overflows)
        out = self._drain_policy_alerts(now)
        results = self.assess(now, probe)
        for r in results:
            if r.name not in ("drift", "metric_anomaly"):
                out += self._check(r, now)
        out += self._check_anomalies(now)
        out += self._check(degraded(self.score, self.thresholds), now)
        out += self._check_forwarded(now)
        self._export(probe, overflows, now)
        return out

    def assess(self, now: float, probe: PolicyProbe | None = None) -> list[CheckResult]:
        """The health checks, score and component reports as of ``now`` (kept on ``self``
        for the health endpoints; alerts are raised by :meth:`check_alerts` alone)."""
        s = self.settings
        probe = probe or self.probe()
        drift = sum(1 for a in self.alerts.firing.values() if "drift" in a.kind)
        has_drift = probe.drift_detection or any(
            isinstance(e.policy, RaisesAlerts) for e in self.engines.values()
        )
        activity = self.activity(now)
        accuracy_known = probe.accuracy_samples >= s.accuracy_min_samples
        obs = Observations(
            seconds_since_usage=now - (self.last_usage_wall or self.started_wall),
            usage_events_in_window=activity.usage_events_in_window,
            dead_letters_in_window=self.dead_letter_window.count(now),
            precision=probe.precision if accuracy_known else None,
            recall=probe.recall if accuracy_known else None,
            discrimination=probe.discrimination if accuracy_known else None,
            decision_latency_p95=activity.decision_latency_p95,
            queue_depth=probe.queue_depth,
            queue_capacity=probe.queue_capacity,
            queue_full=probe.queue_full,
            queue_overflows=self.overflow_window.count(now),
            budget_use=probe.budget_use,
            drift_firing=drift if has_drift else None,
            anomalies_active=sum(len(w.active) for w in self.anomalies.values()),
        )
        self.checks = evaluate(obs, self.thresholds)
        self.score = health_score(self.checks)
        self.components = component_reports(probe, activity)
        self.window_events = activity.usage_events_in_window
        return self.checks

    def _subject(self, check: str) -> str:
        return self.settings.topic("usage") if check == "stale_data" else self.settings.app_id

    def _check(self, r: CheckResult, now: float) -> list[AlertTransition]:
        if r.name in self.settings.disabled_alerts:
            return []
        value = r.value
        return self.alerts.check(
            r.name,
            self._subject(r.name),
            r.failing,
            ts=now,
            value=None if value is None else round(value, 6),
            threshold=r.threshold,
            severity=r.severity,
            summary=r.summary,
            clear=r.clear,
        )

    def _check_anomalies(self, now: float) -> list[AlertTransition]:
        if "metric_anomaly" in self.settings.disabled_alerts:
            return []
        out: list[AlertTransition] = []
        active: set[str] = set()
        threshold = self.settings.anomaly_threshold
        for watch in self.anomalies.values():
            for (model_id, metric), a in watch.active.items():
                subject = f"{model_id}/{metric}"
                active.add(subject)
                out += self.alerts.check(
                    "metric_anomaly",
                    subject,
                    True,
                    ts=now,
                    value=a.value,
                    threshold=threshold,
                    summary=f"{metric} of {model_id} is {a.value:.4g} (robust z {a.score:.1f})",
                )
        firing = {a.subject for a in self.alerts.firing.values() if a.kind == "metric_anomaly"}
        for subject in (self._anomaly_subjects | firing) - active:
            out += self.alerts.check("metric_anomaly", subject, False, ts=now)
        self._anomaly_subjects = active
        return out

    def _drain_policy_alerts(self, now: float) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        for engine in self.engines.values():
            policy = engine.policy
            if not isinstance(policy, RaisesAlerts):
                continue
            for raw in policy.drain_alerts():
                alert = as_transition(raw, now)
                if alert is None or alert.kind in self.settings.disabled_alerts:
                    continue
                if alert.kind in CHECKS:
                    continue  # the worker's own check of the same condition speaks for it
                out += self.alerts.record(alert)
        return out

    def _export_policies(self) -> None:
        if not self.settings.shadow_policies.strip():
            return
        scores = self.policy_scores()
        rows = [("active", scores["active"])] + [("candidate", c) for c in scores["candidates"]]
        for role, figures in rows:
            for figure, gauge in self.metrics.policy_figures.items():
                gauge.labels(policy=figures["policy"], role=role).set(figures[figure])

    def _export(self, probe: PolicyProbe, overflows: int, now: float) -> None:
        m = self.metrics
        m.sync()
        self._export_policies()
        m.health_score.set(self.score)
        for r in self.checks:
            m.check_failing.labels(check=r.name).set(1 if r.failing else 0)
        for c in self.components:
            m.component_applicable.labels(component=c.name).set(1 if c.applicable else 0)
            m.component_last_update.labels(component=c.name).set(c.last_update or 0)
        m.precision.set(_nan(probe.precision))
        m.recall.set(_nan(probe.recall))
        m.discrimination.set(_nan(probe.discrimination))
        m.queue_depth.set(probe.queue_depth or 0)
        m.queue_capacity.set(probe.queue_capacity or 0)
        m.queue_overflows.inc(overflows)
        m.budget_use.set(_nan(probe.budget_use))
        m.window_events.set(self.window_events)
        m.anomalies_active.set(sum(len(w.active) for w in self.anomalies.values()))
        firing = self.alerts.firing_kinds()
        marked: dict[str, int] = {}
        for fp, alert in self.alerts.firing.items():
            if fp in self.in_maintenance:
                marked[alert.kind] = marked.get(alert.kind, 0) + 1
        for kind in {*ALERT_KINDS, *firing}:
            m.alerts_firing.labels(kind=kind).set(firing.get(kind, 0) - marked.get(kind, 0))
            m.alerts_in_maintenance.labels(kind=kind).set(marked.get(kind, 0))
        self._export_maintenance(now)
        m.tracked_models.set(self.tracked_models())
        m.metric_state.set(self.metric_state_size())

    def _export_maintenance(self, now: float) -> None:
        m = self.metrics
        active = self.maintenance.active(now)
        for scope in ("all", "pool"):
            n = sum(1 for w in active if w.every_model == (scope == "all"))
            m.maintenance_active.labels(scope=scope).set(n)
        in_window = 0
        for watch in self.anomalies.values():
            for model_id, _ in watch.active:
                if self.maintenance.marks("metric_anomaly", model_id, now) is not None:
                    in_window += 1
        m.anomalies_in_maintenance.set(in_window)
        gates = [e.maintenance for e in self.engines.values() if e.maintenance is not None]
        m.maintenance_held.set(sum(len(g.held) for g in gates))


#: Kinds the worker's own checks raise: about the worker, not about one served model.
_WORKER_KINDS = frozenset((*ALERT_KINDS, "control", "control_rejected"))


def _model_of(alert: AlertTransition) -> str | None:
    """The served model an alert is about (``None``: the worker, a topic, every model).

    >>> from engine.alerting import AlertTransition as A
    >>> _model_of(A("f", "metric_anomaly", "warning", "firing", "llama/load_time", "", None,
    ...             None, 0.0))
    'llama'
    """
    if alert.kind == "metric_anomaly":
        return alert.subject.rpartition("/")[0] or None
    if alert.kind in _WORKER_KINDS:
        return None
    return alert.model_id


def promotion_rule(s: WarmcastSettings) -> PromotionRule:
    """The promotion and rollback rule of the settings, in whole minutes."""
    bucket = max(1, round(s.promotion_bucket_seconds / 60))
    return PromotionRule(
        bucket_minutes=bucket,
        window_buckets=max(1, round(s.promotion_window_seconds / 60 / bucket)),
        min_buckets=s.promotion_min_buckets,
        min_requests=s.promotion_min_requests,
        alpha=s.promotion_alpha,
        min_gain_pct=s.promotion_min_gain_pct,
        waste_tolerance=s.promotion_waste_tolerance,
        cooldown_minutes=math.ceil(s.promotion_cooldown_seconds / 60),
        rollback_after_minutes=math.ceil(s.rollback_after_seconds / 60),
        rollback_margin_pct=s.rollback_margin_pct,
    )


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
