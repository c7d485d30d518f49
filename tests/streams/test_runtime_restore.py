"""A partition restored from a checkpoint keeps what its policy learned and runs under
today's settings (the knob and the size weight a worker is started with)."""

from __future__ import annotations

from engine.checkpoint import CheckpointHeader, PartitionState, pack, restore, seal, unseal
from engine.health import ModelHealth
from engine.warmcast import WarmcastPolicy
from schemas.usage import UsageEvent
from streams.runtime import Runtime
from streams.settings import WarmcastSettings

NOW = 1_700_000_040.0
KEY = b"a checkpoint key for the tests"


def nothing(model_id: str) -> ModelHealth | None:
    return None


def test_a_restored_warmcast_policy_takes_todays_knob_and_size_weight() -> None:
    before = Runtime(WarmcastSettings(policy="warmcast", knob=1.0, partitions=1))
    for minute in range(0, 600, 7):
        ts = NOW + 60.0 * minute
        before.apply_usage(0, [UsageEvent(model_id="m", ts=ts)], nothing, ts)
    engine = before.engines[0]
    assert isinstance(engine.policy, WarmcastPolicy)
    requests = engine.policy.analyzer.usage("m").minutes
    header = CheckpointHeader(partition=0, offsets={"usage": 86}, policy="warmcast")
    sealed = seal(pack(PartitionState(engine, None)), header, KEY)

    after = Runtime(WarmcastSettings(policy="warmcast", knob=2.0, size_weight=1.0, partitions=1))
    restored = after.install_state(0, restore(unseal(sealed, KEY)[1]))
    policy = restored.policy
    assert isinstance(policy, WarmcastPolicy)
    assert (policy.knob, policy.scheduler.knob, policy.config.size_weight) == (2.0, 2.0, 1.0)
    assert policy.analyzer.usage("m").minutes == requests  # what it learned is kept


def test_a_restored_policy_of_another_kind_is_left_alone() -> None:
    before = Runtime(WarmcastSettings(policy="hybrid", partitions=1))
    before.apply_usage(0, [UsageEvent(model_id="m", ts=NOW)], nothing, NOW)
    engine = before.engines[0]
    after = Runtime(WarmcastSettings(policy="hybrid", knob=3.0, partitions=1))
    assert after.install_state(0, PartitionState(engine, None)).policy is engine.policy
