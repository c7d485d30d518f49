"""The worker's memory budget (WARMCAST_CAPACITY_BYTES): each partition keeps to its share,
with sizes from metric events, whatever the usage; a restored engine takes today's share."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.health import ModelHealth
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from streams.runtime import Runtime
from streams.settings import WarmcastSettings
from tools.scoring import Usage, command_tuples, memory_figures

NOW = 1_700_000_040.0
MIB = float(2**20)


def nothing(model_id: str) -> ModelHealth | None:
    return None


usage_st = st.lists(
    st.tuples(st.integers(0, 180), st.sampled_from("abcdefg"), st.integers(1, 3)),
    min_size=1,
    max_size=120,
).map(sorted)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=usage_st,
    sizes=st.fixed_dictionaries({m: st.integers(1, 6) for m in "abcdefg"}),
    capacity_mb=st.integers(2, 24),
    policy=st.sampled_from(["warmcast", "hybrid", "lru", "gdsf", "fixed:10"]),
)
def test_each_partition_keeps_to_its_share(
    rows: list[tuple[int, str, int]], sizes: dict[str, int], capacity_mb: int, policy: str
) -> None:
    rt = Runtime(
        WarmcastSettings(policy=policy, capacity_bytes=capacity_mb * MIB * 2, partitions=2)
    )
    rt.apply_metrics(
        0,
        [
            MetricEvent(model_id=m, ts=NOW, name="memory_mb", value=float(size))
            for m, size in sizes.items()
        ],
        NOW,
    )
    commands = []
    events = []
    for minute, model, count in rows:
        ts = NOW + 60.0 * minute + 5.0
        events.append((ts, model, count))
        out, _ = rt.apply_usage(0, [UsageEvent(model_id=model, ts=ts, count=count)], nothing, ts)
        commands.extend(out)
    commands.extend(rt.steps[0].advance(NOW + 60.0 * 200))
    usage = Usage.from_events(events, t0=NOW)
    memory = memory_figures(
        usage,
        command_tuples(commands),
        lambda m: sizes[m] * MIB,
        t0=NOW,
        end_minute=200,
    )
    assert memory.peak_loaded_bytes <= capacity_mb * MIB + 1e-6


def test_a_restored_engine_takes_the_capacity_of_todays_settings() -> None:
    rt = Runtime(WarmcastSettings(policy="lru", capacity_models=8, partitions=2))
    for n, model in enumerate("abcd"):
        rt.apply_usage(0, [UsageEvent(model_id=model, ts=NOW + n)], nothing, NOW + n)
    engine = rt.engines[0]
    assert engine.budget is not None and engine.budget.capacity == 4.0
    assert engine.budget.loaded() == 4
    smaller = Runtime(WarmcastSettings(policy="lru", capacity_models=4, partitions=2))
    smaller._under_controls(0, engine)
    assert engine.budget.capacity == 2.0 and engine.budget.holds("a")
    released = engine.advance(NOW + 61)  # the next minute's loaded set fits the new share
    assert sorted(c.model_id for c in released if c.action == "release") == ["a", "b"]
    assert engine.budget.loaded() == 2
    unlimited = Runtime(WarmcastSettings(policy="lru"))
    unlimited._under_controls(0, engine)
    assert engine.budget is None
