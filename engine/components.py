"""The seven components of the design, as a worker sees them in the policy it runs.

A policy says what parts it has with ``parts()`` (:class:`HasParts`), so that the worker
reports whatever the configured policy has and says "not applicable" for the rest: the
``hybrid`` and ``fixed:K`` baselines have no parts (no queue, budget, learner or drift
monitor). What each part is asked is a small protocol of its own:

- the accuracy (:class:`AccuracyPart`): ``counts(minute)`` with ``hits``,
  ``loaded_minutes``, ``invoked_minutes``;
- the queue (:class:`QueuePart`): ``len()``, ``max_size``, ``stats.overflow`` (a running
  count);
- the resources (:class:`BudgetPart`): ``in_use(minute)``, ``max_memory`` (``None``: no
  budget);
- the analyzer and the performance predictor: ``len()`` (served models known);
- the drift monitor: its presence (drift alerts come from ``policy.drain_alerts()``).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from engine.accuracy import Discrimination

#: Resolved predictions of each outcome (a request came / did not) before the learners'
#: ranking is judged by the ``low_accuracy`` check.
DISCRIMINATION_MIN_EACH = 50

COMPONENTS = (
    "UsagePatternAnalyzer",
    "PredictionEngine",
    "WarmupScheduler",
    "ResourceManager",
    "WarmupQueue",
    "PerformancePredictor",
    "ModelWarmupMetrics",
)


class Counts(Protocol):
    @property
    def hits(self) -> int: ...
    @property
    def loaded_minutes(self) -> int: ...
    @property
    def invoked_minutes(self) -> int: ...


class AccuracyPart(Protocol):
    """How often warm decisions were right, in model-minutes, as of a minute."""

    def counts(self, minute: int) -> Counts: ...


class QueueStatsPart(Protocol):
    @property
    def overflow(self) -> int: ...


class QueuePart(Protocol):
    """The warmup queue: its depth (``len``), capacity and overflows so far."""

    max_size: int

    def __len__(self) -> int: ...
    @property
    def stats(self) -> QueueStatsPart | None: ...


class BudgetPart(Protocol):
    """The memory budget (``max_memory`` ``None``: none) and what is in use of it."""

    max_memory: float | None

    def in_use(self, minute: int) -> float: ...


@dataclass(frozen=True)
class PolicyParts:
    """The parts of a policy, each ``None`` when it has none. Each belongs to one of the
    seven components (:data:`PART_COMPONENT`)."""

    analyzer: Sized | None = None
    prediction: object | None = None
    accuracy: AccuracyPart | None = None
    scheduler: object | None = None
    resources: BudgetPart | None = None
    queue: QueuePart | None = None
    performance: Sized | None = None
    drift: object | None = None


#: Each part of :class:`PolicyParts` and the component it belongs to.
PART_COMPONENT = {
    "analyzer": "UsagePatternAnalyzer",
    "prediction": "PredictionEngine",
    "accuracy": "PredictionEngine",
    "scheduler": "WarmupScheduler",
    "resources": "ResourceManager",
    "queue": "WarmupQueue",
    "performance": "PerformancePredictor",
    "drift": "PredictionEngine",
}


@runtime_checkable
class HasParts(Protocol):
    """A policy with parts to report (the baselines have none)."""

    def parts(self) -> PolicyParts: ...


def parts_of(policy: object) -> PolicyParts:
    """A policy's parts (none for a policy that has no :meth:`HasParts.parts`).

    >>> class Queue:
    ...     max_size, stats = 8, None
    ...     def __len__(self):
    ...         return 0
    >>> class Policy:
    ...     def parts(self):
    ...         return PolicyParts(queue=Queue())
    >>> parts_of(Policy()).queue.max_size, parts_of(object()) == PolicyParts()
    (8, True)
    """
    return policy.parts() if isinstance(policy, HasParts) else PolicyParts()


@dataclass(slots=True)
class PolicyProbe:
    """Figures of the policies of all of a worker's partitions, summed.

    >>> class Budget:
    ...     max_memory = 10.0
    ...     def in_use(self, minute):
    ...         return 9.0
    >>> class Policy:
    ...     def parts(self):
    ...         return PolicyParts(resources=Budget())
    >>> probe = PolicyProbe()
    >>> probe.add(Policy(), minute=5)
    >>> probe.budget_use, probe.components
    (0.9, {'ResourceManager'})
    """

    components: set[str] = field(default_factory=set)
    hits: int = 0
    loaded_minutes: int = 0
    invoked_minutes: int = 0
    queue_depth: int | None = None
    queue_capacity: int | None = None
    queue_overflows: int = 0  # running count over every queue
    queue_full: bool = False  # some partition's queue is full
    budget_use: float | None = None  # the fullest partition's
    models: dict[str, int] = field(default_factory=dict)  # served models known, by component
    drift_detection: bool = False
    ranking: Discrimination = field(default_factory=Discrimination)  # the learners', merged

    def add(self, policy: object, minute: int | None) -> None:
        parts = parts_of(policy)
        for name, component in PART_COMPONENT.items():
            if getattr(parts, name) is not None:
                self.components.add(component)
        if parts.accuracy is not None and minute is not None:
            self._read_accuracy(parts.accuracy.counts(minute))
        ranking = getattr(parts.prediction, "discrimination", None)
        if isinstance(ranking, Discrimination):
            self.ranking.merge(ranking)
        if parts.queue is not None:
            self._read_queue(parts.queue)
        if parts.resources is not None:
            self._read_resources(parts.resources, minute)
        if parts.drift is not None:
            self.drift_detection = True
        for name, sized in (
            ("UsagePatternAnalyzer", parts.analyzer),
            ("PerformancePredictor", parts.performance),
        ):
            if sized is not None:
                self.models[name] = self.models.get(name, 0) + len(sized)

    def _read_accuracy(self, counts: Counts) -> None:
        self.hits += int(counts.hits)
        self.loaded_minutes += int(counts.loaded_minutes)
        self.invoked_minutes += int(counts.invoked_minutes)

    def _read_queue(self, part: QueuePart) -> None:
        depth, capacity = len(part), int(part.max_size)
        self.queue_depth = (self.queue_depth or 0) + depth
        self.queue_capacity = (self.queue_capacity or 0) + capacity
        self.queue_full = self.queue_full or (capacity > 0 and depth >= capacity)
        self.queue_overflows += int(part.stats.overflow) if part.stats is not None else 0

    def _read_resources(self, part: BudgetPart, minute: int | None) -> None:
        budget = part.max_memory
        if budget and minute is not None:
            use = float(part.in_use(minute)) / float(budget)
            self.budget_use = use if self.budget_use is None else max(self.budget_use, use)

    @property
    def accuracy_samples(self) -> int:
        return self.loaded_minutes + self.invoked_minutes

    @property
    def discrimination(self) -> float | None:
        """How well the learners rank minutes that got a request above those that did not
        (:class:`engine.accuracy.Discrimination`); ``None`` before there is enough to judge
        or when the policy has no learner."""
        if "PredictionEngine" not in self.components:
            return None
        return self.ranking.auc(DISCRIMINATION_MIN_EACH)

    @property
    def precision(self) -> float | None:
        if "PredictionEngine" not in self.components or not self.loaded_minutes:
            return None
        return self.hits / self.loaded_minutes

    @property
    def recall(self) -> float | None:
        if "PredictionEngine" not in self.components or not self.invoked_minutes:
            return None
        return self.hits / self.invoked_minutes


@dataclass(slots=True)
class ComponentReport:
    """One component as the health endpoints show it; ``None``: nothing to say."""

    name: str
    applicable: bool
    last_update: float | None = None
    data_volume: float | None = None
    precision: float | None = None
    recall: float | None = None
    decision_latency_p95: float | None = None
    queue_depth: int | None = None
    queue_capacity: int | None = None
    queue_overflows: int | None = None
    budget_use: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    """What the worker itself measures, whatever the policy (wall-clock times)."""

    last_usage: float | None = None
    last_metric: float | None = None
    last_command: float | None = None
    usage_events_in_window: float = 0.0
    metric_events: int = 0
    decision_latency_p95: float | None = None
    warmups_issued: int = 0
    warmups_used: int = 0
    warmups_wasted: int = 0


def component_reports(probe: PolicyProbe, activity: WorkerActivity) -> list[ComponentReport]:
    """The seven components, each applicable or not under the running policy.

    >>> reports = component_reports(PolicyProbe(), WorkerActivity(usage_events_in_window=5))
    >>> [(r.name, r.applicable) for r in reports]  # doctest: +NORMALIZE_WHITESPACE
    [('UsagePatternAnalyzer', True), ('PredictionEngine', False), ('WarmupScheduler', True),
     ('ResourceManager', False), ('WarmupQueue', False), ('PerformancePredictor', False),
     ('ModelWarmupMetrics', True)]
    """
    return [*_usage_and_decisions(probe, activity), *_resources_and_outcomes(probe, activity)]


_NO_SUCH_COMPONENT = "the policy has no such component"


def _usage_and_decisions(probe: PolicyProbe, a: WorkerActivity) -> list[ComponentReport]:
    """The usage analyzer, the prediction engine and the warmup scheduler."""
    has = probe.components
    na = _NO_SUCH_COMPONENT
    return [
        ComponentReport(
            "UsagePatternAnalyzer",
            True,
            last_update=a.last_usage,
            data_volume=a.usage_events_in_window,
            note="usage events in the volume window",
        ),
        ComponentReport(
            "PredictionEngine",
            "PredictionEngine" in has,
            last_update=a.last_usage if "PredictionEngine" in has else None,
            data_volume=float(probe.accuracy_samples) if "PredictionEngine" in has else None,
            precision=probe.precision,
            recall=probe.recall,
            note="warm decisions scored in model-minutes" if "PredictionEngine" in has else na,
        ),
        ComponentReport(
            "WarmupScheduler",
            True,
            last_update=a.last_command,
            data_volume=float(a.warmups_issued),
            decision_latency_p95=a.decision_latency_p95,
            note="engine time per usage message",
        ),
    ]


def _resources_and_outcomes(probe: PolicyProbe, a: WorkerActivity) -> list[ComponentReport]:
    """The resource manager, the warmup queue, the performance predictor and the warmup
    metrics."""
    has = probe.components
    na = _NO_SUCH_COMPONENT
    outcomes = a.warmups_used + a.warmups_wasted
    return [
        ComponentReport(
            "ResourceManager",
            "ResourceManager" in has,
            last_update=a.last_command if "ResourceManager" in has else None,
            budget_use=probe.budget_use,
            note=("no budget set" if probe.budget_use is None else "")
            if "ResourceManager" in has
            else na,
        ),
        ComponentReport(
            "WarmupQueue",
            "WarmupQueue" in has,
            last_update=a.last_command if "WarmupQueue" in has else None,
            queue_depth=probe.queue_depth,
            queue_capacity=probe.queue_capacity,
            queue_overflows=probe.queue_overflows if "WarmupQueue" in has else None,
            note="" if "WarmupQueue" in has else na,
        ),
        ComponentReport(
            "PerformancePredictor",
            "PerformancePredictor" in has,
            last_update=a.last_metric if "PerformancePredictor" in has else None,
            data_volume=float(a.metric_events) if "PerformancePredictor" in has else None,
            note="metric events learned from" if "PerformancePredictor" in has else na,
        ),
        ComponentReport(
            "ModelWarmupMetrics",
            True,
            last_update=a.last_usage,
            data_volume=float(outcomes),
            precision=a.warmups_used / outcomes if outcomes else None,
            note="warm leases followed to their outcome (used / wasted)",
        ),
    ]
