"""The ``low_accuracy`` check on the demo's slice: the warmcast learner on the shipped sample
is healthy and passes (a learner fed shuffled labels fails: tests/engine/test_discrimination.py)."""

from __future__ import annotations

from engine.components import PolicyProbe
from engine.healthscore import Observations, evaluate, score
from engine.registry import make_policy
from tools.demo import SAMPLE, SAMPLE_T0
from tools.fleet import LocalFleet, by_minute
from tools.fleetsim import load_slice
from tools.traces import Trace


def probe_after(trace: Trace) -> PolicyProbe:
    """The worker's probe of a warmcast policy driven over ``trace`` (one partition)."""
    policy = make_policy("warmcast")
    fleet = LocalFleet([policy], None)
    events = by_minute(trace.events)
    first = int(trace.t0 // 60)
    end = first + trace.end_minute
    for minute in range(first, end + 1):
        fleet.step(minute, events.get(minute, []))
    fleet.finish(end)
    probe = PolicyProbe()
    probe.add(policy, minute=end - first + 1)
    return probe


def health(probe: PolicyProbe) -> tuple[str, float]:
    obs = Observations(
        1.0,
        5000,
        0,
        precision=probe.precision,
        recall=probe.recall,
        discrimination=probe.discrimination,
    )
    results = evaluate(obs)
    return {r.name: r.status for r in results}["low_accuracy"], score(results)


def test_the_healthy_demo_slice_does_not_alert_low_accuracy() -> None:
    trace = load_slice(str(SAMPLE), minutes=240, t0=SAMPLE_T0)
    probe = probe_after(trace)
    assert probe.discrimination is not None and probe.discrimination > 0.7
    assert probe.precision is not None and probe.precision < 0.7  # what used to alert
    assert health(probe) == ("ok", 1.0)
