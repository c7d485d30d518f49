"""The warmcast policy: learned, cost-aware warmup leases.

It composes the engine's components behind the :class:`~engine.policies.Policy` contract:

- :class:`~engine.analyzer.UsagePatternAnalyzer` keeps each served model's idle-time
  hazard, rates and hour-of-day profile; :class:`~engine.analyzer.CoOnsetTracker` learns
  which models wake up shortly after which;
- :class:`~engine.prediction.PredictionEngine` turns those into P(request in minute r) with
  one online logistic regression for all models, learning from delayed labels;
- :class:`~engine.scheduler.WarmupScheduler` keeps a minute loaded when the expected
  cold-start cost (predicted load time, times ``knob``) beats the memory cost, and issues
  one lease per run of such minutes, with a review timer for the next run;
- :class:`~engine.performance.PerformancePredictor` predicts load times from metric events;
- :class:`~engine.resources.ResourceManager` and :class:`~engine.queue.WarmupQueue` keep
  warm leases within a memory and warmup budget (unlimited by default); the plan prices
  every model's loaded minute alike unless ``size_weight`` scales it by the model's size;
- :class:`~engine.drift.DriftMonitor` watches the learner's error; a model whose learner
  drifted, a model seen too little, and every model while the learner is still young are
  decided by the hybrid-histogram baseline instead: windows from the percentiles of the
  model's own idle times, and where those outrun hybrid's four-hour histogram but sit
  close together (a model back every ten hours), a pre-warm for the next return;
- a per-model guard scores each learner-decided request against the lease the baseline
  would have held: a model the learner found cold more often than the baseline would
  have (after ``guard_min`` requests) is decided by the baseline for its next
  ``guard_hold`` requests, then tried on the learner again, which has gone on learning
  from every model meanwhile (``guard_min=0`` turns the guard off);
- :class:`~engine.accuracy.WarmAccuracy` scores the warm decisions online.

Timing rules: the decision at a model's request in minute ``t`` uses only that model's
own history and what the partition knew when minute ``t - 1`` closed; cross-model signals
(followers of a model that just woke up) act when minute ``t`` closes. Everything is
deterministic (sampling of training examples uses a seeded generator).

>>> policy = WarmcastPolicy(min_samples=0, min_periods=1)
>>> for minute in range(0, 60, 10):  # a timer every ten minutes
...     lease = policy.on_request("timer", minute)
...     _ = policy.on_minute_closed(minute, {"timer": 1})
>>> lease  # decided at minute 50: unloaded in between, loaded for the run at minute 60
Lease(warm 60..61)
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from engine.accuracy import AccuracyCounts, WarmAccuracy
from engine.alerting import AlertTransition
from engine.analyzer import CoOnsetTracker, UsagePatternAnalyzer
from engine.components import PolicyParts
from engine.drift import DriftMonitor
from engine.lease import Lease
from engine.performance import LOAD_TIME_METRIC, PerformancePredictor
from engine.policies import HybridHistogram, _hybrid_lease
from engine.prediction import PredictionEngine
from engine.queue import WarmupQueue
from engine.resources import ResourceManager
from engine.scheduler import Block, WarmupScheduler

MEMORY_METRICS = {"memory_bytes": 1.0 / 2**20, "memory_mb": 1.0}
_MAX_BLOCKS = 8  # blocks a plan holds; the plan is extended when they run out


@dataclass(slots=True)
class WarmcastConfig:
    """Every setting of the warmcast policy (keyword arguments of the constructor)."""

    # cost model and timing
    cold_cost_per_second: float = 5.0
    margin_seconds: float = 15.0
    default_load_seconds: float = 20.0
    max_block_minutes: int = 1440
    # usage statistics and learner
    prior_periods: float = 2.0
    learning_rate: float = 0.05
    averaging: float = 0.01
    min_samples: int = 2000
    min_periods: int = 1
    sample_share: float = 0.1
    max_samples_per_minute: int = 100
    replan_minutes: int = 30
    replan_min_count: int = 8
    seed: int = 0
    # cross-model onsets
    follow_window: int = 10
    follow_min_idle: int = 10
    follow_max: int = 24
    follow_shrink: float = 2.0
    follow_min_onsets: int = 2
    follow_min_lift: float = 1.5
    # per-model guard: a model whose learner-decided requests found it cold more often
    # than the hybrid baseline's leases would have (``guard_slack`` colds to spare, after
    # ``guard_min`` requests) is decided by the baseline for ``guard_hold`` requests, then
    # goes back to the learner (docs/quality.md: how the hold was chosen)
    guard_min: int = 4
    guard_slack: float = 0.0
    guard_hold: int = 200
    # the baseline pre-warms for a return after idle times beyond hybrid's four-hour
    # histogram that sit within a window no longer than its keep-alive, once it has seen
    # this many of them (docs/quality.md: "What the baseline does")
    long_min_periods: int = 4
    # drift
    drift_delta: float = 0.002
    drift_hold_minutes: int = 120
    drift_per_model: bool = True
    drift_global_fallback: bool = False
    # memory: the plan prices a model's loaded minute at (its size / the median size) **
    # ``size_weight``; 0 plans in model-minutes, the unit the backtest scores, and leaves
    # bytes to a memory budget's value per byte (docs/capacity.md: "Without a budget")
    size_weight: float = 0.0
    # budgets
    max_memory: float | None = None
    max_warmups_per_minute: int | None = None
    queue_size: int = 10_000

    def __setstate__(self, state: tuple[object, dict[str, object]]) -> None:
        """Unpickled from a checkpoint: a setting it does not hold (one added since it was
        written) takes its default.

        >>> old = WarmcastConfig(guard_hold=7).__getstate__()
        >>> del old[1]["size_weight"]
        >>> cfg = WarmcastConfig.__new__(WarmcastConfig)
        >>> cfg.__setstate__(old)
        >>> cfg.guard_hold, cfg.size_weight
        (7, 0.0)
        """
        for f in fields(WarmcastConfig):
            object.__setattr__(self, f.name, f.default)
        for name, value in state[1].items():
            object.__setattr__(self, name, value)


@dataclass(slots=True)
class _Plan:
    blocks: list[Block]
    threshold: float
    confidence: float
    minute: int
    truncated: bool


@dataclass(slots=True)
class PolicyStats:
    learner_decisions: int = 0
    fallback_decisions: int = 0
    follow_warmups: int = 0
    reviews: int = 0
    queued: int = 0
    dropped: int = 0
    alerts: dict[str, int] = field(default_factory=dict)


class WarmcastPolicy:
    """Learned warmup policy (see the module docstring); ``knob`` trades memory time
    (smaller) for fewer cold starts (larger)."""

    name = "warmcast"
    #: stamped on every command; raised whenever the same events lead to other decisions
    VERSION = "warmcast/2"

    def __init__(self, knob: float = 1.0, **config: object) -> None:
        cfg = WarmcastConfig(**config)  # type: ignore[arg-type]
        self.knob = knob
        self.config = cfg
        self.version = self.VERSION
        self.analyzer = UsagePatternAnalyzer(prior_periods=cfg.prior_periods)
        self.followers = CoOnsetTracker(
            window=cfg.follow_window,
            min_idle=cfg.follow_min_idle,
            max_followers=cfg.follow_max,
            shrink=cfg.follow_shrink,
        )
        self.predictor = PredictionEngine(
            self.analyzer.bins,
            learning_rate=cfg.learning_rate,
            averaging=cfg.averaging,
            min_samples=cfg.min_samples,
        )
        self.scheduler = WarmupScheduler(
            knob,
            cold_cost_per_second=cfg.cold_cost_per_second,
            margin_seconds=cfg.margin_seconds,
            max_block_minutes=cfg.max_block_minutes,
        )
        self.performance = PerformancePredictor(cfg.default_load_seconds)
        self.resources = ResourceManager(cfg.max_memory, cfg.max_warmups_per_minute)
        self.queue: WarmupQueue[Lease] = WarmupQueue(cfg.queue_size)
        self.drift = DriftMonitor(
            hold_minutes=cfg.drift_hold_minutes,
            delta=cfg.drift_delta,
            per_model=cfg.drift_per_model,
            global_fallback=cfg.drift_global_fallback,
        )
        self.accuracy = WarmAccuracy()
        # the hybrid-histogram baseline as a fallback: its idle-time history is kept for
        # every model (cheap), its windows are worked out only for the models it decides
        self.hybrid = HybridHistogram()
        self.stats = PolicyStats()
        self._rng = random.Random(cfg.seed)
        self._order: list[str] = []  # every tracked model, in a canonical order
        self._new: list[str] = []
        self._idles: dict[str, int | None] = {}  # idle time before each request this minute
        self._plans: dict[str, _Plan] = {}
        # model -> (start, end, p per minute): minutes a woken leader says it will be wanted
        self._boost: dict[str, tuple[int, int, float]] = {}
        self._current: dict[str, Lease] = {}
        # per-model guard: the baseline's lease (and pre-warm for a long return) at the
        # model's last learner-decided request, [learner colds, baseline colds, requests]
        # since, and requests left on the baseline
        self._shadow: dict[str, tuple[Lease, Lease | None]] = {}
        self._later: dict[str, Lease] = {}  # the baseline's pre-warm for a long return
        self._guard: dict[str, list[float]] = {}
        self._guarded: dict[str, int] = {}
        self._reviews: list[tuple[int, str, int]] = []
        self._review_of: dict[str, int] = {}
        self._review_seq = 0
        self._alerts: list[AlertTransition] = []
        self._overflow_seen = 0
        self._overflowing = False
        self._closed = -1

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restored from a checkpoint; one written before the baseline pre-warmed for
        long returns holds no such pre-warms and the guard's baseline leases alone; the
        restored policy decides as this code does and says so in its version."""
        shadow = state.get("_shadow")
        if isinstance(shadow, dict):
            state["_shadow"] = {
                m: (s, None) if isinstance(s, Lease) else s for m, s in shadow.items()
            }
        state.setdefault("_later", {})
        self.__dict__.update(state)
        self.version = self.VERSION

    # -- the Policy contract -------------------------------------------------------------

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        self.accuracy.invoked(model_id, minute)
        if model_id not in self.analyzer:
            self._new.append(model_id)
        usage = self.analyzer.get(model_id)
        idle = None if usage is None or usage.minutes == 0 else minute - usage.last - 1
        self.analyzer.update(model_id, minute)
        self._idles[model_id] = idle
        self._boost.pop(model_id, None)
        if self.config.guard_min > 0:
            self._update_guard(model_id, minute)
        self._later.pop(model_id, None)
        if self._fallback(model_id, minute):
            self.stats.fallback_decisions += 1
            self._plans.pop(model_id, None)
            self._cancel_review(model_id)
            self.hybrid.observe(model_id, minute)
            baseline, later = self._baseline(model_id, minute)
            if later is not None:  # issued when the baseline's lease is over
                self._later[model_id] = later
                self._schedule_review(model_id, baseline.end - 1)
            return self._issue(model_id, baseline, minute)
        self.hybrid.observe(model_id, minute)
        if self.config.guard_min > 0:
            self._shadow[model_id] = self._baseline(model_id, minute)
        self.stats.learner_decisions += 1
        plan = self._plans.get(model_id)
        if plan is None or not self._still_good(plan, model_id, idle, minute):
            self._plans[model_id] = self._plan(model_id, minute)
        return self._decide(model_id, minute)

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        self._closed = minute
        for r in self.predictor.resolve(minute, counts):
            self.drift.update(r.model_id, abs(float(r.y) - r.p), minute)
        self.drift.expire(minute)
        self._alerts.extend(self.drift.drain())
        self.analyzer.close_minute(minute)
        if self._new:
            self._order.extend(sorted(self._new))
            self._new.clear()
        touched = set(self._follow(minute, counts))
        touched.update(self._due_reviews(minute))
        out: list[tuple[str, Lease]] = []
        for model_id in sorted(touched):
            if model_id in counts:
                continue
            later = self._later.pop(model_id, None)
            if later is not None:
                lease = self._issue(model_id, later, minute) if later.end > minute + 1 else None
                if lease is not None:
                    out.append((model_id, lease))
                continue
            if model_id not in self._plans:
                continue
            if self._fallback(model_id, minute):
                continue
            lease = self._decide(model_id, minute)
            if lease is not None:
                out.append((model_id, lease))
        out.extend(self._drain_queue(minute))
        self._sample(minute)
        self._idles.clear()
        self._watch_queue(minute)
        return out

    def next_review(self) -> int | None:
        reviews = self._reviews
        while reviews and self._review_of.get(reviews[0][1]) != reviews[0][2]:
            heapq.heappop(reviews)
        return reviews[0][0] if reviews else None

    def forget(self, model_id: str) -> None:
        self.analyzer.forget(model_id)
        self.followers.forget(model_id)
        self.hybrid.forget(model_id)
        self.performance.forget(model_id)
        self.resources.forget(model_id)
        self.queue.remove(model_id)
        self.accuracy.forget(model_id, max(self._closed, 0))
        self.drift.forget(model_id)
        self._plans.pop(model_id, None)
        self._boost.pop(model_id, None)
        self._current.pop(model_id, None)
        self._shadow.pop(model_id, None)
        self._later.pop(model_id, None)
        self._guard.pop(model_id, None)
        self._guarded.pop(model_id, None)
        self._review_of.pop(model_id, None)
        if model_id in self._order:
            self._order.remove(model_id)

    def forget_metrics(self, model_id: str) -> None:
        """Drop what metric events taught about a model that usage never showed."""
        self.performance.forget(model_id)
        self.resources.forget(model_id)

    # -- what the worker calls besides the contract --------------------------------------

    def observe_metric(self, model_id: str, name: str, value: float) -> None:
        """A metric event of a served model: load times teach the performance predictor,
        memory sizes feed the resource budget; other names are ignored."""
        if name == LOAD_TIME_METRIC:
            self.performance.learn_one(model_id, value)
        elif name in MEMORY_METRICS:
            self.resources.set_memory(model_id, value * MEMORY_METRICS[name])

    def predicted_load_seconds(self, model_id: str) -> float:
        """The load time the performance predictor plans ``model_id``'s warmups with."""
        return self.performance.predict_one(model_id)

    def parts(self) -> PolicyParts:
        """The policy's parts, by the component of the design each belongs to."""
        return PolicyParts(
            analyzer=self.analyzer,
            prediction=self.predictor,
            accuracy=self.accuracy,
            scheduler=self.scheduler,
            resources=self.resources,
            queue=self.queue,
            performance=self.performance,
            drift=self.drift,
        )

    def metric_models(self) -> int:
        """Entries of per-model metric state: load-time statistics and memory sizes."""
        return len(self.performance) + self.resources.known_models()

    def drain_alerts(self) -> list[AlertTransition]:
        """Alerts raised since the last call: learner drift (overall or per model) and
        warmup-queue overflow, each firing then resolved."""
        out, self._alerts = self._alerts, []
        for alert in out:
            self.stats.alerts[alert.kind] = self.stats.alerts.get(alert.kind, 0) + 1
        return out

    def accuracy_counts(self) -> AccuracyCounts:
        """Precision / recall of the warm decisions so far (see :mod:`engine.accuracy`)."""
        return self.accuracy.counts(self._closed + 1)

    def retune(self, knob: float | None = None, **settings: object) -> None:
        """Take today's ``knob`` and settings (a policy restored from a checkpoint keeps
        what it learned, not the settings it was started with); plans made before take
        them when they are next made.

        >>> policy = WarmcastPolicy(knob=1.0)
        >>> policy.retune(knob=2.0, size_weight=1.0)
        >>> policy.knob, policy.scheduler.knob, policy.config.size_weight
        (2.0, 2.0, 1.0)
        """
        if knob is not None:
            if knob <= 0:
                raise ValueError("knob must be positive")
            self.knob = self.scheduler.knob = knob
        for name, value in settings.items():
            if name not in WarmcastConfig.__dataclass_fields__:
                raise TypeError(f"warmcast has no setting {name!r}")
            setattr(self.config, name, value)

    def snapshot_stats(self) -> dict[str, object]:
        """Numbers for health tables and Prometheus (no model ids)."""
        acc = self.accuracy_counts()
        return {
            "models": len(self.analyzer),
            "learner_samples": self.predictor.samples,
            "learner_trusted": self.predictor.trusted,
            "learner_log_loss": self.predictor.log_loss.get(),
            "learner_brier": self.predictor.brier_score,
            "pending_labels": len(self.predictor.pending),
            "precision": acc.precision,
            "recall": acc.recall,
            "load_time_mae_seconds": self.performance.mae.get(),
            "queue_depth": self.queue.depth(),
            "queue_overflow": self.queue.stats.overflow,
            "memory_in_use": self.resources.in_use(self._closed + 1),
            "memory_peak": self.resources.stats.peak_memory,
            "refused_memory": self.resources.stats.refused_memory,
            "refused_concurrency": self.resources.stats.refused_concurrency,
            "drift_detections": self.drift.detections,
            "learner_decisions": self.stats.learner_decisions,
            "fallback_decisions": self.stats.fallback_decisions,
            "follow_warmups": self.stats.follow_warmups,
            "dropped": self.stats.dropped,
        }

    # -- decisions -----------------------------------------------------------------------

    def _fallback(self, model_id: str, minute: int) -> bool:
        if not self.predictor.trusted:
            return True
        usage = self.analyzer.get(model_id)
        if usage is None or usage.periods < self.config.min_periods:
            return True
        if model_id in self._guarded:
            return True
        return self.drift.flagged(model_id, minute)

    def _baseline(self, model_id: str, minute: int) -> tuple[Lease, Lease | None]:
        """The baseline's lease at a request in ``minute``, and a pre-warm for a long
        return after it (or ``None``).

        Hybrid's windows come from the model's idle times up to four hours. Where those
        tell it nothing (most idle times are longer, or they are spread out) and the
        model's idle times sit close together on the analyzer's longer histogram, the
        lease pre-warms for the next return instead of hybrid's blind four-hour
        keep-alive; where hybrid's windows hold and the model also comes back after
        long idle times that sit close together, the pre-warm for such a return follows
        hybrid's lease. Either pre-warm is no longer than hybrid's default keep-alive.
        """
        prewarm, keepalive = self.hybrid.windows(model_id)
        lease = _hybrid_lease(minute, prewarm, keepalive)
        bins = self.hybrid.bins
        if self.hybrid.out_of_bounds(model_id) < self.config.long_min_periods:
            return lease, None
        if prewarm == 0 and keepalive == bins:  # hybrid's histogram tells it nothing
            steady = self._steady_window(model_id, 0)
            return (lease if steady is None else _hybrid_lease(minute, *steady)), None
        steady = self._steady_window(model_id, bins)
        if steady is None:
            return lease, None
        later = _hybrid_lease(minute, *steady)
        return lease, (later if later.start > lease.end else None)

    def _steady_window(self, model_id: str, floor: int) -> tuple[int, int] | None:
        """Hybrid's percentile windows (and margins) over the model's idle times of
        ``floor`` minutes and more, read on the analyzer's histogram (one-minute bins up
        to a day, coarser to two weeks); ``None`` unless they pre-warm after hybrid's
        histogram ends and keep for no longer than its default keep-alive (with 10 %
        margins, returns after up to about 20 hours)."""
        usage = self.analyzer.usage(model_id)
        hybrid, idle_bins = self.hybrid, self.analyzer.bins
        first = idle_bins.index(floor)
        keys = sorted(j for j in usage.counts if j >= first)
        total = sum(usage.counts[j] for j in keys)
        if total < self.config.long_min_periods:
            return None
        head_at, tail_at = hybrid.head_q * total, hybrid.tail_q * total
        head = tail = -1
        seen = 0
        for j in keys:
            seen += usage.counts[j]
            if head < 0 and seen >= head_at:
                head = idle_bins.start_list[j]
            if seen >= tail_at:
                tail = idle_bins.end_list[j] - 1
                break
        prewarm, keepalive = hybrid.windows_between(head, tail)
        if prewarm < hybrid.bins or keepalive > hybrid.bins:
            return None
        return prewarm, keepalive

    def _update_guard(self, model_id: str, minute: int) -> None:
        """Score the learner's last lease for a model against the baseline's at the same
        request; a model it served worse goes to the baseline for a while."""
        hold = self._guarded.get(model_id)
        if hold is not None:
            if hold <= 1:
                del self._guarded[model_id]
            else:
                self._guarded[model_id] = hold - 1
            return
        shadow = self._shadow.pop(model_id, None)
        if shadow is None:
            return
        current = self._current.get(model_id)
        learner_cold = not (
            current is not None
            and current.action == "warm"
            and current.start <= minute < current.end
        )
        lease, later = shadow
        baseline_cold = not (
            lease.start <= minute < lease.end
            or (later is not None and later.start <= minute < later.end)
        )
        counts = self._guard.get(model_id)
        if counts is None:
            counts = self._guard[model_id] = [0.0, 0.0, 0.0]
        counts[0] += learner_cold
        counts[1] += baseline_cold
        counts[2] += 1
        cfg = self.config
        if counts[2] >= cfg.guard_min and counts[0] > counts[1] + cfg.guard_slack:
            self._guarded[model_id] = cfg.guard_hold
            counts[0] = counts[1] = counts[2] = 0.0

    def _threshold(self, model_id: str) -> tuple[float, int]:
        load = self.performance.predict_one(model_id)
        weight = self.config.size_weight
        memory = self.resources.relative_memory(model_id) ** weight if weight else 1.0
        return self.scheduler.threshold(load, memory), self.scheduler.lead_minutes(load)

    def _still_good(self, plan: _Plan, model_id: str, idle: int | None, minute: int) -> bool:
        """A plan is kept while it is young and the idle time just seen was a common one
        for the model (one more count there hardly moves its hazard)."""
        if idle is None or minute - plan.minute >= self.config.replan_minutes:
            return False
        return self.analyzer.usage(model_id).count_at(idle) >= self.config.replan_min_count

    def _plan(self, model_id: str, minute: int, from_offset: int = 0) -> _Plan:
        usage = self.analyzer.usage(model_id)
        probs = self.predictor.profile(usage, self.analyzer.hazards(model_id))
        threshold, lead = self._threshold(model_id)
        blocks = self.scheduler.blocks(
            probs, self.analyzer.bins, threshold, lead, _MAX_BLOCKS, from_offset
        )
        trust = min(1.0, self.predictor.samples / max(self.predictor.min_samples, 1))
        confidence = round(trust * usage.periods / (usage.periods + 4.0), 3)
        return _Plan(blocks, threshold, confidence, minute, len(blocks) == _MAX_BLOCKS)

    def _decide(self, model_id: str, minute: int) -> Lease | None:
        plan = self._plans[model_id]
        usage = self.analyzer.usage(model_id)
        lease, review = self.scheduler.lease(
            plan.blocks, usage.last, minute, plan.threshold, confidence=plan.confidence
        )
        if review is None and plan.truncated:  # the plan ran out of blocks: look further
            plan = self._plans[model_id] = self._plan(model_id, minute, minute - usage.last)
            lease, review = self.scheduler.lease(
                plan.blocks, usage.last, minute, plan.threshold, confidence=plan.confidence
            )
        now = minute + 1
        boost = self._boost.get(model_id)
        if boost is not None:
            start, end, p = boost
            start = max(start, now)
            if end <= now:
                del self._boost[model_id]
            elif lease.action == "warm" and lease.start <= end and start <= lease.end:
                lease = Lease(
                    "warm",
                    min(start, lease.start),
                    max(lease.end, end),
                    priority=min(lease.priority, self.scheduler.priority(p, plan.threshold)),
                    probability=max(lease.probability or 0.0, round(p, 4)),
                    confidence=plan.confidence,
                    reason=f"follows a model that woke up; {lease.reason}",
                )
                review = max(review or 0, end - 1)
            elif lease.action == "release" or start < lease.start:
                lease = Lease(
                    "warm",
                    start,
                    end,
                    priority=self.scheduler.priority(p, plan.threshold),
                    probability=round(p, 4),
                    confidence=plan.confidence,
                    reason=f"follows a model that woke up (p={p:.3f}/min)",
                )
                review = end - 1
        if review is None:
            self._cancel_review(model_id)
        else:
            self._schedule_review(model_id, review)
        current = self._current.get(model_id)
        if lease.action == "release" and (current is None or current.end <= now):
            return None
        return self._issue(model_id, lease, minute)

    def _issue(self, model_id: str, lease: Lease, minute: int) -> Lease | None:
        if lease.action == "warm" and not self.resources.admit(model_id, lease, minute):
            self.stats.queued += 1
            if self.queue.push(model_id, lease.priority, lease) is not None:
                self.stats.dropped += 1
            return None
        if lease.action == "release":
            self.resources.release(model_id, minute)
        self.queue.remove(model_id)
        self._current[model_id] = lease
        self.accuracy.decide(model_id, lease, minute)
        return lease

    def _drain_queue(self, minute: int) -> list[tuple[str, Lease]]:
        out: list[tuple[str, Lease]] = []
        if not len(self.queue):
            return out
        retry: list[tuple[str, Lease]] = []
        while (item := self.queue.pop()) is not None:
            model_id, lease = item
            if lease.end <= minute + 1:
                self.stats.dropped += 1  # its time is over
                continue
            if lease.start <= minute:
                lease = lease.with_start(minute + 1)
            if self.resources.admit(model_id, lease, minute):
                self._current[model_id] = lease
                self.accuracy.decide(model_id, lease, minute)
                out.append((model_id, lease))
            else:
                retry.append(item)
        for model_id, lease in retry:
            self.queue.push(model_id, lease.priority, lease)
        return out

    # -- cross-model followers -----------------------------------------------------------

    def _follow(self, minute: int, counts: Mapping[str, int]) -> list[str]:
        tracker = self.followers
        onsets = sorted(m for m, idle in self._idles.items() if tracker.is_onset(idle))
        tracker.close_minute(minute, onsets)
        woken: list[str] = []
        for leader in onsets:
            if tracker.onsets(leader) < self.config.follow_min_onsets:
                continue
            for follower, p, first, last in tracker.followers(leader):
                if follower in counts or follower not in self._plans:
                    continue
                # warm it over the lags it has followed at, the chance spread over them,
                # if following the leader is much likelier than waking up by chance
                start, end = minute + first, minute + last + 1
                per_minute = p / (end - start)
                if per_minute <= self._plans[follower].threshold:
                    continue
                usage = self.analyzer.usage(follower)
                chance = tracker.onsets(follower) / max(minute - usage.first + 1, 1)
                if per_minute < self.config.follow_min_lift * chance:
                    continue
                old = self._boost.get(follower)
                if old is not None and old[1] > minute + 1:
                    start, end = min(start, old[0]), max(end, old[1])
                    per_minute = max(per_minute, old[2])
                    if (start, end) == old[:2]:
                        continue
                self._boost[follower] = (start, end, per_minute)
                self.stats.follow_warmups += 1
                woken.append(follower)
        return woken

    # -- review timers -------------------------------------------------------------------

    def _schedule_review(self, model_id: str, minute: int) -> None:
        self._review_seq += 1
        self._review_of[model_id] = self._review_seq
        heapq.heappush(self._reviews, (minute, model_id, self._review_seq))

    def _cancel_review(self, model_id: str) -> None:
        self._review_of.pop(model_id, None)

    def _due_reviews(self, minute: int) -> list[str]:
        due: list[str] = []
        reviews = self._reviews
        while reviews and reviews[0][0] <= minute:
            _, model_id, seq = heapq.heappop(reviews)
            if self._review_of.get(model_id) == seq:
                del self._review_of[model_id]
                due.append(model_id)
        self.stats.reviews += len(due)
        return due

    # -- learning ------------------------------------------------------------------------

    def _sample(self, minute: int) -> None:
        order = self._order
        cfg = self.config
        k = min(max(1, round(cfg.sample_share * len(order))), cfg.max_samples_per_minute)
        if not order:
            return
        analyzer = self.analyzer
        for i in sorted(self._rng.sample(range(len(order)), k)):
            model_id = order[i]
            usage = analyzer.usage(model_id)
            hazards = analyzer.hazards_at(model_id, minute - usage.last)
            self.predictor.ask(model_id, usage, hazards, minute + 1)

    def _watch_queue(self, minute: int) -> None:
        """``queue_overflow`` fires in a minute that overflowed the warmup queue and
        resolves once a minute closes without overflow and with the queue half empty."""
        overflow = self.queue.stats.overflow
        state: Literal["firing", "resolved"] | None = None
        if overflow > self._overflow_seen and not self._overflowing:
            state = "firing"
        elif (
            overflow == self._overflow_seen
            and self._overflowing
            and len(self.queue) <= self.queue.max_size // 2
        ):
            state = "resolved"
        self._overflow_seen = overflow
        if state is not None:
            self._overflowing = state == "firing"
            limit = float(self.queue.max_size)
            self._alerts.append(
                AlertTransition.raised(
                    "queue_overflow", None, float(overflow), limit, state, minute
                )
            )


__all__ = ["WarmcastConfig", "WarmcastPolicy"]
