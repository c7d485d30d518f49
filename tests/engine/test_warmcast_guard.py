"""The warmcast policy's per-model guard: a model the learner serves worse than the
hybrid baseline would is handed to the baseline."""

from __future__ import annotations

from engine.lease import Lease
from engine.policies import HybridHistogram
from engine.warmcast import WarmcastPolicy


def drive(policy: WarmcastPolicy, every: int, beats: int, first: int = 0) -> list[Lease | None]:
    """A model requested every ``every`` minutes (beats ``first`` to ``first + beats - 1``);
    the lease decided at each request."""
    leases: list[Lease | None] = []
    for n in range(first, first + beats):
        minute = n * every
        leases.append(policy.on_request("m", minute))
        policy.on_minute_closed(minute, {"m": 1})
    return leases


def stingy(**guard: object) -> WarmcastPolicy:
    # a knob so small that no minute is worth keeping loaded: the learner releases the
    # model after every request, while hybrid keeps it four hours
    return WarmcastPolicy(knob=1e-9, min_samples=0, min_periods=1, **guard)


def test_a_model_the_learner_serves_worse_goes_to_the_baseline() -> None:
    policy = stingy()  # the defaults guard
    leases = drive(policy, every=30, beats=12)
    assert "m" in policy._guarded
    late = leases[-1]
    assert late is not None and late.action == "warm"
    baseline = HybridHistogram()
    for n in range(12):
        expected = baseline.on_request("m", n * 30)
    assert late == expected  # the hybrid baseline's pre-warm window for a 30-minute timer
    assert policy.stats.fallback_decisions >= 6


def test_without_the_guard_the_learner_keeps_the_model() -> None:
    policy = stingy(guard_min=0)
    leases = drive(policy, every=30, beats=12)
    assert not policy._guarded
    assert all(lease is None or lease.action == "release" for lease in leases[3:])


def test_a_model_the_learner_serves_well_stays_with_it() -> None:
    policy = WarmcastPolicy(min_samples=0, min_periods=1, guard_min=3, guard_slack=0.0)
    drive(policy, every=10, beats=30)  # a timer the learner pre-warms
    assert not policy._guarded
    assert policy._guard["m"][0] <= policy._guard["m"][1]


def test_the_guard_lets_go_after_its_hold_and_forget_clears_it() -> None:
    policy = stingy(guard_min=3, guard_slack=0.0, guard_hold=2)
    drive(policy, every=30, beats=5)
    assert "m" in policy._guarded
    policy.on_request("m", 200)
    policy.on_request("m", 230)
    assert "m" not in policy._guarded  # its hold is over: the learner is tried again
    policy.forget("m")
    assert "m" not in policy._guard and "m" not in policy._shadow


def test_by_default_a_guarded_model_is_tried_on_the_learner_again() -> None:
    policy = stingy()  # the defaults: a hold of guard_hold requests, then the learner
    hold = policy.config.guard_hold
    drive(policy, every=30, beats=12)
    assert "m" in policy._guarded
    tried = policy.stats.learner_decisions
    drive(policy, every=30, beats=hold + 8, first=12)
    assert policy.stats.learner_decisions > tried  # the hold ran out: the learner decided
    assert "m" in policy._guarded  # and, still worse than the baseline, lost it again
