"""The seven components as a worker reports them, for the baselines and for policies with
parts like the learning policy's."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from engine.components import (
    COMPONENTS,
    ComponentReport,
    PolicyParts,
    PolicyProbe,
    WorkerActivity,
    component_reports,
)
from engine.lease import Lease
from engine.registry import make_policy


def reports(probe: PolicyProbe, **activity: Any) -> dict[str, ComponentReport]:
    return {r.name: r for r in component_reports(probe, WorkerActivity(**activity))}


@pytest.mark.parametrize("spec", ["hybrid", "fixed:10"])
def test_baselines_have_no_learned_components(spec: str) -> None:
    probe = PolicyProbe()
    probe.add(make_policy(spec), minute=10)
    out = reports(probe, usage_events_in_window=12.0, decision_latency_p95=0.002)
    assert list(out) == list(COMPONENTS)
    assert {n for n, r in out.items() if r.applicable} == {
        "UsagePatternAnalyzer",
        "WarmupScheduler",
        "ModelWarmupMetrics",
    }
    assert out["WarmupScheduler"].decision_latency_p95 == 0.002
    assert out["PredictionEngine"].note == "the policy has no such component"
    assert probe.precision is None and probe.budget_use is None and probe.queue_depth is None


def test_parts_of_the_learning_policy_are_read() -> None:
    try:
        accuracy = importlib.import_module("engine.accuracy")
        queue = importlib.import_module("engine.queue")
        resources = importlib.import_module("engine.resources")
    except ImportError:
        pytest.skip("the learning policy's parts are not in this tree")

    class Policy:
        def __init__(self) -> None:
            self.accuracy = accuracy.WarmAccuracy()
            self.queue = queue.WarmupQueue(max_size=2)
            self.resources = resources.ResourceManager(max_memory=4.0)

        def parts(self) -> PolicyParts:
            return PolicyParts(accuracy=self.accuracy, queue=self.queue, resources=self.resources)

    policy = Policy()
    policy.accuracy.decide("m", Lease("warm", 1, 11), minute=0)
    policy.accuracy.invoked("m", 3)
    for key in ("a", "b", "c"):
        policy.queue.push(key, 2, key)
    policy.resources.admit("m", Lease("warm", 11, 20), minute=10)
    probe = PolicyProbe()
    probe.add(policy, minute=12)
    assert (probe.precision, probe.recall) == (0.1, 1.0)  # 1 hit in 10 loaded minutes
    assert (probe.queue_depth, probe.queue_capacity, probe.queue_full) == (2, 2, True)
    assert probe.queue_overflows == 1
    assert probe.budget_use == 0.25
    out = reports(probe)
    assert out["WarmupQueue"].applicable and out["ResourceManager"].applicable


def test_partitions_add_up() -> None:
    class WarmupQueue:
        max_size = 10
        stats = None  # no overflow count

        def __init__(self, depth: int) -> None:
            self.depth = depth

        def __len__(self) -> int:
            return self.depth

    class Policy:
        def __init__(self, depth: int) -> None:
            self.queue = WarmupQueue(depth)

        def parts(self) -> PolicyParts:
            return PolicyParts(queue=self.queue)  # type: ignore[arg-type]

    probe = PolicyProbe()
    probe.add(Policy(3), minute=None)
    probe.add(Policy(10), minute=None)
    assert (probe.queue_depth, probe.queue_capacity, probe.queue_full) == (13, 20, True)
