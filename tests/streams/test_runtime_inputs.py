"""The worker runtime on hostile input, without a broker: a future event, floods of metric
names and model ids, events forwarded from the partitions they arrived on."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import generate_latest

from engine.health import ModelHealth
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from streams.prometheus import KNOWN_METRIC_NAMES
from streams.runtime import Runtime
from streams.settings import WarmcastSettings

NOW = 1_700_000_040.0


def runtime(**settings: Any) -> Runtime:
    return Runtime(WarmcastSettings(**settings))


def nothing(model_id: str) -> ModelHealth | None:
    return None


def series(rt: Runtime, name: str) -> list[str]:
    text = generate_latest(rt.metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_a_future_event_moves_neither_leases_nor_the_partition_clock() -> None:
    rt = runtime(policy="fixed:10")
    rt.apply_usage(0, [UsageEvent(model_id="a", ts=NOW)], nothing, NOW)
    commands, _ = rt.apply_usage(
        0,
        [UsageEvent(model_id="outlier", ts=NOW + 3500), UsageEvent(model_id="b", ts=NOW + 11)],
        nothing,
        NOW + 11,
    )
    assert {c.model_id: c.start for c in commands} == {"outlier": NOW + 60, "b": NOW + 60}
    assert rt.partition_event_time[0] == NOW + 11  # health is judged as of the real time
    rt.metrics.sync()
    assert rt.metrics.future_events._value.get() == 1


def test_an_event_after_a_gap_is_taken_when_the_wall_clock_confirms_it() -> None:
    rt = runtime(policy="fixed:10")
    rt.apply_usage(0, [UsageEvent(model_id="a", ts=NOW)], nothing, NOW)
    _, touched = rt.apply_usage(0, [UsageEvent(model_id="a", ts=NOW + 7200)], nothing, NOW)
    assert rt.engines[0].held_time == NOW + 7200
    assert rt.confirm_held(nothing, NOW) == ([], {})  # still two hours ahead of the clock
    commands, followed = rt.confirm_held(touched.get, NOW + 7200)  # a replay's quiet spell
    assert [(c.model_id, c.start) for c in commands] == [("a", NOW + 7260)]
    assert followed["a"].lease == [NOW + 7260, NOW + 7860, 0]
    assert followed["a"].warmups_issued_total == 2 and "a" in rt.dirty
    assert rt.partition_event_time[0] == NOW + 7200


def test_metric_floods_leave_the_series_and_the_state_bounded() -> None:
    rt = runtime(policy="warmcast", partitions=1)
    rt.apply_usage(0, [UsageEvent(model_id="served", ts=NOW)], nothing, NOW)
    base_bytes = len(generate_latest(rt.metrics.registry))
    rng = random.Random(7)
    names = [f"custom_{rng.getrandbits(64):x}" for _ in range(5000)]
    events = [MetricEvent(model_id="served", ts=NOW, name=n, value=1.0) for n in names]
    for i in range(50_000):
        for name in ("load_time_seconds", "load_time", "memory_bytes"):
            events.append(MetricEvent(model_id=f"ghost-{i}", ts=NOW, name=name, value=3.0))
    rt.apply_metrics(0, events, NOW)
    rt.check_alerts(NOW)

    kept = {*KNOWN_METRIC_NAMES, *rt.settings.anomaly_metric_names, "other"}
    counted = series(rt, "warmcast_metric_events_total")
    assert len(counted) == len(kept)
    assert f'warmcast_metric_events_total{{name="other"}} {len(names)}.0' in counted
    assert len(generate_latest(rt.metrics.registry)) - base_bytes < 4096
    bound = rt.engines[0].max_untracked_metric_models + 1  # and the served model
    assert rt.metric_state_size() <= 3 * bound  # load times, memory sizes, anomaly learners
    gauge = rt.metrics.metric_state._value.get()
    assert 2 * bound <= gauge == rt.metric_state_size()
    assert len(rt.anomalies[0].learners) <= bound


def test_anomaly_learners_follow_the_engine_evicting_a_model() -> None:
    rt = runtime(policy="fixed:10", partitions=1)
    rt.apply_usage(0, [UsageEvent(model_id="m", ts=NOW)], nothing, NOW)
    rt.apply_metrics(0, [MetricEvent(model_id="m", ts=NOW, name="load_time", value=2.0)], NOW)
    assert ("m", "load_time") in rt.anomalies[0].learners
    rt.forget_health(0, ["m"])
    assert rt.anomalies[0].learners == {}


def test_a_high_share_of_forwarded_events_fires_and_then_resolves() -> None:
    rt = runtime(
        policy="fixed:10",
        partitions=4,
        forwarded_window_seconds=60,
        alert_for_seconds=0,
        alert_keep_firing_seconds=0,
    )
    events = [UsageEvent(model_id=f"m{i}", ts=NOW) for i in range(40)]
    rt.apply_usage(0, events, nothing, NOW)
    rt.note_forwarded(2, 5, NOW)  # 5 of 40: under the share
    assert [a for a in rt.check_alerts(NOW + 1) if a.kind == "forwarded_events"] == []
    rt.note_forwarded(3, 28, NOW + 1)
    fired = [a for a in rt.check_alerts(NOW + 2) if a.kind == "forwarded_events"]
    assert [(a.state, a.subject, a.value) for a in fired] == [
        ("firing", "warmcast.usage.v1", round(33 / 40, 6))
    ]
    assert series(rt, "warmcast_forwarded_events_total")[2:] == [
        'warmcast_forwarded_events_total{partition="2"} 5.0',
        'warmcast_forwarded_events_total{partition="3"} 28.0',
    ]
    later = NOW + 200  # the window has moved past them
    rt.apply_usage(0, [UsageEvent(model_id="m0", ts=NOW + 190)], nothing, later)
    resolved = [a for a in rt.check_alerts(later) if a.kind == "forwarded_events"]
    assert [a.state for a in resolved] == ["resolved"]


def test_forwarded_events_can_be_left_unalerted() -> None:
    rt = runtime(policy="fixed:10", alert_for_seconds=0, alerts_disabled="forwarded_events")
    rt.apply_usage(0, [UsageEvent(model_id=f"m{i}", ts=NOW) for i in range(40)], nothing, NOW)
    rt.note_forwarded(1, 40, NOW)
    assert [a for a in rt.check_alerts(NOW) if a.kind == "forwarded_events"] == []
