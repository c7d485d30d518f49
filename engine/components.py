"""The seven components of the design, as a worker sees them in the policy it runs.

A policy is a plain object; its parts are found among its attributes by class name
(``WarmupQueue``, ``ResourceManager``, ``WarmAccuracy``, ...), so that the worker reports
whatever the configured policy has and says "not applicable" for the rest: the
``hybrid`` and ``fixed:K`` baselines have no queue, budget, learner or drift monitor. What a
part is asked (all optional, read with ``getattr``):

- ``WarmAccuracy``: ``counts(minute)`` (or ``total``) with ``hits``, ``loaded_minutes``,
  ``invoked_minutes``;
- ``WarmupQueue``: ``len()``, ``max_size``, ``stats.overflow`` (a running count);
- ``ResourceManager``: ``in_use(minute)``, ``max_memory`` (``None``: no budget);
- ``UsagePatternAnalyzer``, ``PerformancePredictor``: ``len()`` (served models known);
- ``DriftMonitor``: its presence (drift alerts come from ``policy.drain_alerts()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

COMPONENTS = (
    "UsagePatternAnalyzer",
    "PredictionEngine",
    "WarmupScheduler",
    "ResourceManager",
    "WarmupQueue",
    "PerformancePredictor",
    "ModelWarmupMetrics",
)

#: Class names of policy parts, and the component each belongs to.
PART_COMPONENT = {
    "UsagePatternAnalyzer": "UsagePatternAnalyzer",
    "PredictionEngine": "PredictionEngine",
    "WarmAccuracy": "PredictionEngine",
    "WarmupScheduler": "WarmupScheduler",
    "ResourceManager": "ResourceManager",
    "WarmupQueue": "WarmupQueue",
    "PerformancePredictor": "PerformancePredictor",
    "DriftMonitor": "PredictionEngine",
}


def policy_parts(policy: object) -> Iterator[tuple[str, Any]]:
    """``(class name, object)`` of each recognised part among a policy's attributes.

    >>> class WarmupQueue:
    ...     max_size = 8
    >>> class Policy:
    ...     def __init__(self):
    ...         self.queue, self.name = WarmupQueue(), "p"
    >>> [name for name, _ in policy_parts(Policy())]
    ['WarmupQueue']
    """
    seen: set[int] = set()
    values = list(getattr(policy, "__dict__", {}).values())
    for slot in getattr(type(policy), "__slots__", ()):
        values.append(getattr(policy, slot, None))
    for value in values:
        name = type(value).__name__
        if name in PART_COMPONENT and id(value) not in seen:
            seen.add(id(value))
            yield name, value


@dataclass(slots=True)
class PolicyProbe:
    """Figures of the policies of all of a worker's partitions, summed.

    >>> class ResourceManager:
    ...     max_memory = 10.0
    ...     def in_use(self, minute):
    ...         return 9.0
    >>> class Policy:
    ...     def __init__(self):
    ...         self.resources = ResourceManager()
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

    def add(self, policy: object, minute: int | None) -> None:
        for name, part in policy_parts(policy):
            self.components.add(PART_COMPONENT[name])
            if name == "WarmAccuracy":
                self._read_accuracy(part, minute)
            elif name == "WarmupQueue":
                self._read_queue(part)
            elif name == "ResourceManager":
                self._read_resources(part, minute)
            elif name == "DriftMonitor":
                self.drift_detection = True
            if hasattr(part, "__len__") and name in (
                "UsagePatternAnalyzer",
                "PerformancePredictor",
            ):
                self.models[name] = self.models.get(name, 0) + len(part)

    def _read_accuracy(self, part: Any, minute: int | None) -> None:
        counts = getattr(part, "total", None)
        counter = getattr(part, "counts", None)
        if callable(counter) and minute is not None:
            counts = counter(minute)
        if counts is not None:
            self.hits += int(getattr(counts, "hits", 0))
            self.loaded_minutes += int(getattr(counts, "loaded_minutes", 0))
            self.invoked_minutes += int(getattr(counts, "invoked_minutes", 0))

    def _read_queue(self, part: Any) -> None:
        depth, capacity = len(part), int(getattr(part, "max_size", 0))
        self.queue_depth = (self.queue_depth or 0) + depth
        self.queue_capacity = (self.queue_capacity or 0) + capacity
        self.queue_full = self.queue_full or (capacity > 0 and depth >= capacity)
        self.queue_overflows += int(getattr(getattr(part, "stats", None), "overflow", 0))

    def _read_resources(self, part: Any, minute: int | None) -> None:
        budget = getattr(part, "max_memory", None)
        in_use = getattr(part, "in_use", None)
        if budget and callable(in_use) and minute is not None:
            use = float(in_use(minute)) / float(budget)
            self.budget_use = use if self.budget_use is None else max(self.budget_use, use)

    @property
    def accuracy_samples(self) -> int:
        return self.loaded_minutes + self.invoked_minutes

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
    has = probe.components
    a = activity
    na = "the policy has no such component"
    outcomes = a.warmups_used + a.warmups_wasted
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
