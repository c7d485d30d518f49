"""One partition's step: usage and metric events in, commands and rolling health out.

A :class:`PartitionStep` holds what one usage partition has learned and decided: its
:class:`~engine.core.WarmupEngine` (policy, learners, leases), its metric anomaly learners
and the decoded health of its recently used models. The worker keeps one per partition it
owns; the checkpoint replay, the bench and the backtest drive the same step, so that the
same events give the same decisions everywhere. Nothing here reads a clock, the
environment or a broker: time is the events' own.

>>> from types import SimpleNamespace as Event
>>> from engine.policies import FixedKeepAlive
>>> step = PartitionStep(WarmupEngine(FixedKeepAlive(10)), windows=(60.0,))
>>> usage = [Event(model_id="m", ts=125.0, count=3, cold_start=True, error=None, latency=2.5)]
>>> fed = step.feed_usage(usage, lambda model_id: None)
>>> [(c.action, c.start, c.end) for c in fed.commands], fed.tally.requests
([('warm', 180.0, 780.0)], 3)
>>> fed.touched["m"].requests_total, step.event_time
(3, 125.0)
>>> step.feed_metric(Event(model_id="m", name="load_time_seconds", value=4.0, ts=130.0))
False
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.anomaly import MetricAnomalies
from engine.core import WarmupEngine
from engine.feed import Usage, UsageTally, feed_usage
from engine.health import ModelHealth
from engine.lease import Command
from engine.promotion import BucketRecorder, Figures
from engine.shadow import OnlineScore, ShadowPolicies, to_minute

#: Reads a served model's stored health (``None``: not known yet).
HealthLoader = Callable[[str], ModelHealth | None]
#: Where a forwarded usage event was first read: (source partition, source offset, its
#: rank among the items of that message forwarded to the same partition).
Origin = tuple[int, int, int]
#: The place of no forwarded event yet.
NOT_FORWARDED = [-1, -1]


class Metric(Protocol):
    """What the step reads of a metric event (``schemas.metric.MetricEvent`` has it)."""

    @property
    def model_id(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def ts(self) -> float: ...


@dataclass
class UsageFed:
    """What a batch of usage events did to a partition."""

    commands: list[Command] = field(default_factory=list)
    #: the health of every model the batch touched, changed
    touched: dict[str, ModelHealth] = field(default_factory=dict)
    tally: UsageTally = field(default_factory=UsageTally)
    #: warmups of the touched models found used or wasted by the batch
    used: int = 0
    wasted: int = 0
    #: events dropped as forwarded here a second time
    forwarded_twice: int = 0
    #: events the engine took as late, or held as ahead of the partition's time
    late: int = 0
    future: int = 0


class PartitionStep:
    """One partition's engine, anomaly learners and decoded health, fed in order.

    ``window`` is the decay time constant of the health's rates, ``windows`` its rolling
    windows (seconds); ``health_cache_models`` models are kept decoded.
    """

    def __init__(
        self,
        engine: WarmupEngine,
        anomalies: MetricAnomalies | None = None,
        *,
        window: float = 300.0,
        windows: tuple[float, ...] = (),
        health_cache_models: int = 10_000,
        shadows: ShadowPolicies | None = None,
        active_label: str = "",
        bucket_minutes: int = 5,
    ) -> None:
        self.engine = engine
        #: candidate policies run beside the engine's, issuing nothing, and the active
        #: policy's own score (both ``None`` unless candidates are given)
        self.shadows = shadows
        self.active: OnlineScore | None = (
            OnlineScore(engine.grid.origin) if shadows is not None else None
        )
        #: the active policy's name among the candidates' (engine/promotion.py)
        self.active_label = active_label
        #: every policy's figures per bucket of event time (``None`` without candidates)
        self.buckets: BucketRecorder | None = (
            BucketRecorder(bucket_minutes) if shadows is not None else None
        )
        self.anomalies = anomalies if anomalies is not None else MetricAnomalies(())
        self.window = window
        self.windows = windows
        self.health_cache_models = health_cache_models
        #: the most recently used models' health, decoded (oldest first)
        self.health: OrderedDict[str, ModelHealth] = OrderedDict()
        #: the partition's robust event time: an event held for confirmation or found to
        #: be an outlier does not move it
        self.event_time: float | None = None

    # -- usage ----------------------------------------------------------------------------

    def feed_usage(
        self,
        events: Iterable[Usage],
        load: HealthLoader,
        offsets: Sequence[int] | None = None,
        origins: Sequence[Origin | None] | None = None,
        on_latency: Callable[[float], None] | None = None,
    ) -> UsageFed:
        """Feed usage events to the engine and to the rolling health of each model they
        concern (its stored health read with ``load`` the first time). ``offsets`` (each
        event's message offset) keeps a message read again from being counted twice in
        the health; ``origins`` (where each forwarded event was first read) keeps an event
        forwarded twice from being counted twice at all."""
        engine = self.engine
        fed = UsageFed()
        touched = fed.touched
        cache = self.health
        before = [0, 0]  # warmups used and wasted of the touched models, before
        late_before = engine.stats.late_events
        future_before = engine.stats.future_events

        def health_of(model_id: str) -> ModelHealth:
            """A model's health, the first time the batch touches it."""
            health = cache.get(model_id) or load(model_id) or ModelHealth(model_id)
            before[0] += health.warmups_used_total
            before[1] += health.warmups_wasted_total
            self._follow_engine_lease(health)
            touched[model_id] = health
            return health

        if origins is not None and offsets is not None:
            events, offsets = self._forwarded_once(events, offsets, origins, fed, health_of)
        elif self.shadows is not None:
            events = list(events)
        feed_usage(
            engine,
            events,
            health_of,
            touched,
            fed.commands,
            fed.tally,
            window=self.window,
            windows=self.windows,
            on_latency=on_latency,
            offsets=offsets,
        )
        self.event_time = max(engine.newest, self.event_time or 0.0)
        fed.used, fed.wasted = _outcomes(before, touched)
        self._keep_decoded(touched)
        fed.late = engine.stats.late_events - late_before
        fed.future = engine.stats.future_events - future_before
        if self.shadows is not None:
            self._score(events, fed.commands)
        return fed

    def _score(self, events: Iterable[Usage], commands: list[Command]) -> None:
        """The active policy scored on its commands, the candidates fed the same events.
        (A command issued at an event's minute rules from the next, so judging the
        requests after all of a batch's commands are known judges each as it was.)"""
        active, shadows, buckets = self.active, self.shadows, self.buckets
        assert active is not None and shadows is not None and buckets is not None
        for c in commands:
            active.command(c)
        origin = active.origin
        for ev in events:
            buckets.roll(to_minute(ev.ts, origin), self.totals)
            active.request(ev.model_id, ev.ts, ev.count)
            shadows.observe(ev.model_id, ev.ts, ev.count)

    def totals(self, end_minute: int) -> dict[str, Figures]:
        """Every policy's running figures up to ``end_minute``, by name."""
        assert self.active is not None and self.shadows is not None
        out = {self.active_label: self.active.totals(end_minute)}
        for label, score in self.shadows.scored.items():
            out[label] = score.totals(end_minute)
        return out

    def swap_active(self, label: str) -> None:
        """Candidate ``label``'s policy, with its learners, becomes the engine's; the
        engine's policy runs on, with its own learners, as the candidate in its place.
        The engine keeps its leases (those the fleet has), each shadow its own."""
        shadows, buckets = self.shadows, self.buckets
        assert shadows is not None and buckets is not None
        engine, score = shadows.engines.pop(label), shadows.scored.pop(label)
        replaced = self.active_label
        self.engine.policy, engine.policy = engine.policy, self.engine.policy
        shadows.engines[replaced], shadows.scored[replaced] = engine, score
        buckets.relabel(replaced, label)
        self.active_label = label

    def advance(self, ts: float) -> list[Command]:
        """Close the minutes before event time ``ts`` (a quiet partition, on the wall
        clock), for the engine and the candidates alike; the engine's commands."""
        commands = self.engine.advance(ts)
        if self.shadows is not None:
            assert self.active is not None
            for c in commands:
                self.active.command(c)
            self.shadows.advance(ts)
        return commands

    def _forwarded_once(
        self,
        events: Iterable[Usage],
        offsets: Sequence[int],
        origins: Sequence[Origin | None],
        fed: UsageFed,
        health_of: Callable[[str], ModelHealth],
    ) -> tuple[list[Usage], list[int]]:
        """The events and their offsets without those forwarded here a second time: a
        source partition read again after a restart forwards its events again, in new
        records, and the model's health remembers the newest source offset counted."""
        kept: list[Usage] = []
        kept_offsets: list[int] = []
        touched = fed.touched
        for ev, offset, origin in zip(events, offsets, origins, strict=True):
            if origin is not None:
                health = touched.get(ev.model_id) or health_of(ev.model_id)
                # a record read again here is left to the offset check of the health
                if offset > health.offset:
                    source, place = str(origin[0]), [origin[1], origin[2]]
                    marks = health.forwarded
                    if marks is None:
                        marks = health.forwarded = {}
                    if place <= marks.get(source, NOT_FORWARDED):
                        fed.forwarded_twice += 1
                        continue
                    marks[source] = place
            kept.append(ev)
            kept_offsets.append(offset)
        return kept, kept_offsets

    def _follow_engine_lease(self, health: ModelHealth) -> None:
        """Catch up with a lease the engine issued while no event of the model was being
        processed (pre-warms of an idle partition, decided on a timer)."""
        engine = self.engine
        lease = engine.lease_of(health.model_id)
        if lease is None or lease.action != "warm":
            return
        start, end = engine.grid.start_of(lease.start), engine.grid.start_of(lease.end)
        if end <= health.last_seen:
            return  # over before the model's latest request: already settled
        current = health.lease
        if current is None or (current[0], current[1]) != (start, end):
            health.on_command("warm", start, end, issued_at=start - 60.0, windows=self.windows)

    def _keep_decoded(self, touched: dict[str, ModelHealth]) -> None:
        """Keep the most recently used models decoded, so that the hot path does not
        decode a model's stored health at every message."""
        cache = self.health
        for model_id, health in touched.items():
            cache[model_id] = health
            cache.move_to_end(model_id)
        while len(cache) > self.health_cache_models:
            cache.popitem(last=False)

    def confirm_held(self, load: HealthLoader) -> UsageFed:
        """Take the event the engine holds for confirmation (its time has come); the
        commands and the health that follows them."""
        engine = self.engine
        fed = UsageFed()
        caused = engine.confirm()
        self.event_time = max(engine.newest, self.event_time or 0.0)
        followed = fed.touched
        before = [0, 0]
        for c in caused:
            health = followed.get(c.model_id)
            if health is None:
                health = self.health.get(c.model_id) or load(c.model_id)
                health = health or ModelHealth(c.model_id)
                before[0] += health.warmups_used_total
                before[1] += health.warmups_wasted_total
                followed[c.model_id] = health
            health.on_command(c.action, c.start, c.end, c.issued_at, self.windows)
        fed.used, fed.wasted = _outcomes(before, followed)
        self._keep_decoded(followed)
        fed.commands = caused
        if self.shadows is not None:
            assert self.active is not None
            for c in caused:
                self.active.command(c)
            self.shadows.confirm()
        return fed

    def evicted(self) -> list[str]:
        """The models the engine evicted since the last call (to stay under its bound);
        their decoded health and anomaly learners go with them."""
        gone = self.engine.drain_evicted()
        if gone:
            self.forget(gone)
        return gone

    def forget(self, model_ids: Iterable[str]) -> None:
        """Drop the decoded health and the metric anomaly learners of these models."""
        for model_id in model_ids:
            self.health.pop(model_id, None)
            self.anomalies.forget(model_id)
            if self.active is not None:
                self.active.forget(model_id)

    # -- metrics --------------------------------------------------------------------------

    def feed_metric(self, ev: Metric) -> bool:
        """Hand a metric event to the anomaly learners and to the engine's policy (an
        event of no served model goes to neither); whether it was flagged as an anomaly."""
        model_id = ev.model_id
        if model_id is None:
            return False
        watch = self.anomalies
        flagged_before = watch.flagged
        watch.observe(model_id, ev.name, ev.value, ev.ts)
        dropped = self.engine.observe_metric(model_id, ev.name, ev.value, ev.ts)
        if dropped is not None:  # metric state beside the engine follows its bound
            watch.forget(dropped)
        return watch.flagged > flagged_before

    # -- replay ---------------------------------------------------------------------------

    def observe(self, model_id: str, ts: float, count: int = 1) -> list[Command]:
        """One usage event to the engine alone, not to the health (the backtest's events,
        and those the health has already counted); the commands it causes."""
        return self.engine.observe(model_id, ts, count)

    def replay_usage(self, events: Iterable[Usage]) -> list[Command]:
        """Usage events the rolling health has already counted (read again after a
        restore): to the engine alone; the commands they cause."""
        observe = self.engine.observe
        commands: list[Command] = []
        for ev in events:
            commands += observe(ev.model_id, ev.ts, ev.count)
        return commands


def _outcomes(before: list[int], touched: dict[str, ModelHealth]) -> tuple[int, int]:
    used = wasted = 0
    for h in touched.values():
        used += h.warmups_used_total
        wasted += h.warmups_wasted_total
    return used - before[0], wasted - before[1]
