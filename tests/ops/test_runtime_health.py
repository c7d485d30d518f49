"""The worker runtime without a broker: rolling health kept beside the engine, decoded
health dropped with revoked partitions, policy alerts deduplicated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from engine.checkpoint import PartitionState
from engine.core import WarmupEngine
from engine.health import ModelHealth
from engine.lease import Lease
from schemas.usage import UsageEvent
from streams.partitioning import partition_for
from streams.runtime import Runtime
from streams.settings import WarmcastSettings
from tests.ops.standin import DriftAlert, StandInPolicy

T0 = 1_700_000_040.0


class KeepsItsLease:
    """Issues one short lease at the first request and keeps it (returns ``None``) after."""

    name = "keeps"
    version = "keeps/1"

    def __init__(self) -> None:
        self.asked = 0

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        self.asked += 1
        return Lease("warm", minute + 1, minute + 3) if self.asked == 1 else None

    def on_minute_closed(self, minute: int, counts: Mapping[str, int]) -> Iterable[Any]:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        return None


def runtime(**settings: Any) -> Runtime:
    return Runtime(WarmcastSettings(**settings))


def test_a_lease_kept_by_the_policy_is_counted_once() -> None:
    rt = runtime(policy="fixed:10")
    rt.take_engine(0, WarmupEngine(KeepsItsLease()))
    stored: dict[str, ModelHealth] = {}
    for ts in (0.0, 70.0, 1000.0, 2000.0, 3000.0):
        _, touched = rt.apply_usage(0, [UsageEvent(model_id="m", ts=T0 + ts)], stored.get, 0.0)
        stored.update(touched)
    health = stored["m"]
    assert (health.warmups_issued_total, health.warmups_used_total) == (1, 1)
    assert health.warmups_wasted_total == 0


def test_decoded_health_goes_with_a_revoked_partition() -> None:
    rt = runtime(policy="fixed:10")
    table: dict[str, dict[str, Any]] = {}

    def load(model_id: str) -> ModelHealth | None:
        return ModelHealth.from_dict(table[model_id]) if model_id in table else None

    def apply(ts: float) -> None:
        _, touched = rt.apply_usage(0, [UsageEvent(model_id="m", ts=ts)], load, 0.0)
        table.update({m: h.to_dict() for m, h in touched.items()})

    apply(T0)
    table["m"]["requests_total"] = 10  # another worker owned it meanwhile
    apply(T0 + 1)
    assert table["m"]["requests_total"] == 2  # still the decoded copy
    rt.drop_decoded({0})
    table["m"]["requests_total"] = 10
    apply(T0 + 2)
    assert table["m"]["requests_total"] == 11  # read again from the table


def test_errors_latency_and_decisions_are_measured() -> None:
    rt = runtime(policy="fixed:10")
    events = [
        UsageEvent(model_id="m", ts=T0, count=3, error=True, latency=0.2),
        UsageEvent(model_id="n", ts=T0 + 1, cold_start=True),
    ]
    commands, touched = rt.apply_usage(0, events, lambda m: None, 100.0)
    assert [c.model_id for c in commands] == ["m", "n"]
    assert (touched["m"].errors_total, touched["n"].cold_starts_total) == (3, 1)
    rt.metrics.sync()
    assert rt.metrics.request_errors._value.get() == 3
    assert rt.decisions.view(100.0).latency.count == 1
    assert rt.usage_events_in_window() == 2
    assert rt.dirty == {"m", "n"}


def test_a_slow_step_counts_for_a_whole_window_after_it_is_done() -> None:
    rt = runtime(policy="fixed:10", decision_latency_window_seconds=1.5)
    rt.take_engine(0, WarmupEngine(StandInPolicy(delay=0.2)))
    now = 100.4  # the step starts in the window slot [99.0, 100.5) and ends in the next one
    rt.apply_usage(0, [UsageEvent(model_id="m", ts=T0)], lambda m: None, now)
    p95 = rt.decisions.view(now + 1.6).quantile(0.95)  # less than 1.5 s after it is done
    assert p95 is not None and p95 > 0.15  # the sketch is 2 % accurate


def test_a_replay_feeds_what_the_live_worker_took_and_skips_what_it_refused() -> None:
    rt = runtime(policy="fixed:10", partitions=2, max_future_skew_seconds=60)
    policy = StandInPolicy()
    state = PartitionState(WarmupEngine(policy))
    mine = [m for m in ("a", "b", "c", "d", "e", "f") if partition_for(m, 2) == 0]
    theirs = next(m for m in ("a", "b", "c", "d", "e", "f") if partition_for(m, 2) == 1)

    def metric(name: str, value: float, ts: float) -> bytes:
        return orjson.dumps({"model_id": "probe", "ts": ts, "name": name, "value": value})

    def usage(model_id: str, ts: float) -> bytes:
        return orjson.dumps({"model_id": model_id, "ts": ts})

    records = [
        (T0, "metrics", metric("standin.precision", 0.5, T0)),
        (T0, "metrics", metric("standin.decision_delay", 0.3, T0 + 3600)),  # an hour ahead
        (T0, "metrics", b"{not json"),
        (T0, "metrics", metric("load_time", 20.0, T0)),
        (T0, "metrics", metric("load_time", 300.0, T0 + 3600)),
        (T0 + 1, "usage", usage(mine[0], T0 + 1)),
        (T0 + 1, "usage", usage(mine[1], T0 + 7200)),  # two hours ahead of its broker time
        (T0 + 1, "usage", usage(theirs, T0 + 1)),  # the other partition's
    ]
    commands = rt.replay(state, 0, records)
    assert (policy.accuracy.total.hits, policy.delay) == (500, 0.0)
    assert [(c.model_id, c.action) for c in commands] == [(mine[0], "warm")]
    assert state.anomalies is not None
    learners = state.anomalies.learners
    assert list(learners) == [("probe", "load_time")]
    assert learners["probe", "load_time"].anomaly_detector.n == 1


def test_policy_alerts_are_recorded_once_and_queue_overflow_left_to_the_check() -> None:
    rt = runtime(policy="fixed:10", alert_for_seconds=0, alert_keep_firing_seconds=0)
    policy = StandInPolicy()
    rt.take_engine(0, WarmupEngine(policy))
    policy.alerts += [
        DriftAlert("learner_drift", None, 1.0, 0.0, "firing"),
        DriftAlert("learner_drift", None, 1.0, 0.0, "firing"),
        DriftAlert("queue_overflow", None, 3.0, 10.0, "firing"),
    ]
    kinds = [(a.kind, a.state) for a in rt.check_alerts(T0)]
    assert kinds.count(("learner_drift", "firing")) == 1
    assert ("queue_overflow", "firing") not in kinds
    assert {c.name: c.status for c in rt.checks}["drift"] == "failing"
