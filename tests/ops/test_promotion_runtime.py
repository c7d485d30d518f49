"""Promotion and rollback in the worker's runtime (no broker): the lineup changes on every
partition, the policy replaced runs on as a candidate with its own learners, a rollback
brings those learners back, and checkpoints carry every policy's learners and the lineup's
version (old checkpoints still restore)."""

from __future__ import annotations

import pickle
import random
import zlib
from typing import Any

import pytest

from engine.checkpoint import CheckpointHeader, PartitionState, pack, restore
from engine.core import WarmupEngine
from engine.policies import FixedKeepAlive
from engine.registry import make_policy
from schemas.usage import UsageEvent
from streams.publishers import alert_record
from streams.runtime import Runtime
from streams.settings import WarmcastSettings


def periodic(models: int = 40, hours: float = 3.0, seed: int = 1) -> list[tuple[float, str]]:
    """Each model requested every 4 to 7 minutes: a 1-minute keep-alive is always cold,
    a policy that learns the idle times is mostly warm."""
    rng = random.Random(seed)
    events = []
    for i in range(models):
        t = 60.0 * rng.randint(0, 5) + rng.uniform(1, 50)
        while t < hours * 3600:
            events.append((t, f"model-{i}"))
            t += 60.0 * (4 + i % 4)
    return sorted(events)


def feed(rt: Runtime, events: list[tuple[float, str]], partitions: int = 2) -> list[Any]:
    """Events in batches of 20, spread over partitions by model; judged after each."""
    changes = []
    for i in range(0, len(events), 20):
        by_partition: dict[int, list[UsageEvent]] = {}
        for ts, model in events[i : i + 20]:
            p = int(model.rsplit("-", 1)[1]) % partitions
            by_partition.setdefault(p, []).append(UsageEvent(model_id=model, ts=ts))
        for p, batch in by_partition.items():
            rt.apply_usage(p, batch, lambda m: None, 0.0)
        changes += rt.judge_policies()
    return changes


def settings(**overrides: Any) -> WarmcastSettings:
    base: dict[str, Any] = dict(
        partitions=2, promotion_min_requests=200, promotion_waste_tolerance=2.0
    )
    return WarmcastSettings(**{**base, **overrides})


def test_a_clearly_better_candidate_is_promoted_on_every_partition() -> None:
    rt = Runtime(settings(policy="fixed:1", shadow_policies="warmcast", promotion_auto=True))
    changes = feed(rt, periodic())
    assert [(d.action, d.policy, d.replaced) for d in changes] == [
        ("promote", "warmcast", "fixed:1")
    ]
    (decision,) = changes
    assert decision.p_value is not None and decision.p_value < 0.01
    assert decision.candidate.cold_pct < decision.active.cold_pct - 50
    assert rt.lineup.version == "warmcast#1" and rt.lineup.previous == "fixed:1"
    for step in rt.steps.values():
        assert type(step.engine.policy).__name__ == "WarmcastPolicy"
        assert isinstance(step.shadows.engines["fixed:1"].policy, FixedKeepAlive)
    scores = rt.policy_scores()
    assert scores["active"]["policy"] == "warmcast"
    assert [c["policy"] for c in scores["candidates"]] == ["fixed:1"]
    assert scores["changes"][0]["policy"] == "warmcast"
    assert scores["buckets"] and set(scores["buckets"][-1]["cold_pct"]) == {"warmcast", "fixed:1"}
    record = alert_record(rt.policy_alert(decision, 1.0))
    assert record["kind"] == "policy_promoted"
    assert record["details"]["replaced_cold_starts"] == decision.active.cold_starts
    assert record["details"]["p_value"] == decision.p_value


def test_an_equal_candidate_is_not_promoted() -> None:
    rt = Runtime(settings(policy="hybrid", shadow_policies="hybrid:margin=0.1,fixed:10"))
    rt.settings.promotion_auto = True
    rt.settings.rollback_auto = False
    rt.lineup.candidates = ["hybrid:margin=0.1"]
    rt.specs["hybrid:margin=0.1"] = ("hybrid", {})  # the same policy under another name
    assert feed(rt, periodic()) == []
    assert rt.lineup.generation == 0


def test_a_broken_active_policy_is_rolled_back_to_the_fallback() -> None:
    rt = Runtime(settings(policy="fixed:1", shadow_policies="hybrid"))
    changes = feed(rt, periodic(hours=1.0))
    assert [(d.action, d.policy, d.replaced) for d in changes] == [
        ("rollback", "hybrid", "fixed:1")
    ]
    assert changes[0].last_minute - changes[0].first_minute + 1 >= 15
    assert rt.lineup.active == "hybrid" and rt.lineup.previous is None
    assert alert_record(rt.policy_alert(changes[0], 1.0))["kind"] == "policy_rolled_back"


def test_a_rollback_restores_the_previous_learners_not_fresh_ones() -> None:
    rt = Runtime(settings(policy="hybrid", shadow_policies="fixed:1", rollback_auto=False))
    events = periodic(hours=2.0)
    feed(rt, events[: len(events) // 2])
    learned = {p: step.engine.policy for p, step in rt.steps.items()}
    rt.promote("fixed:1", "ops")
    for p, step in rt.steps.items():
        assert step.shadows.engines["hybrid"].policy is learned[p]  # it runs on
    before = {p: pickle.dumps(policy) for p, policy in learned.items()}
    feed(rt, events[len(events) // 2 :])
    assert all(pickle.dumps(learned[p]) != before[p] for p in learned)  # it learned meanwhile
    decision = rt.rollback("ops")
    assert (decision.action, decision.policy) == ("rollback", "hybrid")
    assert "by an operator (ops)" in decision.reason and decision.buckets > 0
    fresh = pickle.dumps(make_policy("hybrid"))
    for p, step in rt.steps.items():
        assert step.engine.policy is learned[p]
        assert pickle.dumps(step.engine.policy) != fresh
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rt.rollback()
    with pytest.raises(ValueError, match="no shadow candidate"):
        rt.promote("warmcast")


def test_checkpoints_carry_every_policys_learners_and_the_lineup() -> None:
    rt = Runtime(settings(policy="fixed:1", shadow_policies="warmcast", promotion_auto=True))
    feed(rt, periodic())
    assert rt.lineup.version == "warmcast#1"
    states = {p: restore(zlib.compress(pack(rt.partition_state(p)))) for p in rt.steps}
    again = Runtime(settings(policy="fixed:1", shadow_policies="warmcast"))
    again.apply_usage(1, [UsageEvent(model_id="model-1", ts=60.0)], lambda m: None, 0.0)
    assert isinstance(again.steps[1].engine.policy, FixedKeepAlive)
    again.install_state(0, states[0])
    # partition 1 had started here before: it follows the lineup restored
    assert type(again.steps[1].engine.policy).__name__ == "WarmcastPolicy"
    assert again.steps[1].active_label == "warmcast"
    again.install_state(1, states[1])
    assert again.lineup.version == "warmcast#1" and again.lineup.previous == "fixed:1"
    assert again.new_policy().__class__.__name__ == "WarmcastPolicy"
    later = [(ts + 4 * 3600, model) for ts, model in periodic(hours=0.5, seed=2)]
    for p, step in again.steps.items():
        original = rt.steps[p]
        assert step.active_label == "warmcast"
        assert step.shadows.engines["fixed:1"].leases == original.shadows.engines["fixed:1"].leases
        decided = [
            [c.to_dict() for ts, m in later for c in s.engine.observe(m, ts)]
            for s in (step, original)
        ]
        assert len(decided[0]) > 20 and decided[0] == decided[1]  # the same learners
    assert (
        again.policy_scores()["active"]["cold_starts"]
        == rt.policy_scores()["active"]["cold_starts"]
    )
    decision = again.rollback()
    assert decision.policy == "fixed:1"
    assert all(isinstance(s.engine.policy, FixedKeepAlive) for s in again.steps.values())


def test_a_checkpoint_written_before_the_shadows_still_restores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("m", 125.0)

    def before_the_shadows(self: PartitionState) -> Any:  # the slots a state had then
        return None, {"engine": self.engine, "anomalies": None, "learned_policy": None}

    with monkeypatch.context() as patch:
        patch.setattr(PartitionState, "__getstate__", before_the_shadows, raising=False)
        pickled = pack(PartitionState(engine))
    assert b"lineup" not in pickled and b"learned_policy" in pickled
    state = restore(zlib.compress(pickled))
    assert state.engine.lease_of("m") == engine.lease_of("m")
    assert (state.shadows, state.scored, state.lineup) == (None, None, None)
    rt = Runtime(settings(policy="fixed:10", shadow_policies="hybrid"))
    rt.install_state(0, state)
    assert rt.steps[0].shadows is not None and rt.lineup.generation == 0


def test_a_checkpoint_header_says_the_policy_version() -> None:
    header = CheckpointHeader(
        partition=1,
        offsets={"usage": 5},
        policy="fixed:1",
        policy_version="warmcast#1",
        generation=1,
    )
    again = CheckpointHeader.from_json(header.to_json())
    assert (again.policy_version, again.generation) == ("warmcast#1", 1)
    old = CheckpointHeader.from_json(b'{"partition": 1, "offsets": {}, "policy": "hybrid"}')
    assert (old.policy_version, old.generation) == ("", 0)
