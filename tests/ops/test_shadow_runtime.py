"""Shadow candidates in the worker's runtime (no broker): fed the same usage as the active
policy, scored as the backtest scores, within 2 % of it on the shipped trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.registry import make_policy
from schemas.usage import UsageEvent
from streams.runtime import Runtime
from streams.settings import SettingsError, WarmcastSettings, check_policies
from tools.backtest import simulate
from tools.scoring import Usage, score
from tools.traces import load_trace

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"


def test_candidates_are_scored_as_the_backtest_scores_them() -> None:
    trace = load_trace(SAMPLE)
    assert trace.t0 == 0.0  # the worker's grid starts at 0 too
    rt = Runtime(
        WarmcastSettings(policy="fixed:10", shadow_policies="hybrid,fixed:1", partitions=1)
    )
    batch: list[UsageEvent] = []
    for ts, model_id, count in trace.events:
        batch.append(UsageEvent(model_id=model_id, ts=ts, count=count))
        if len(batch) == 100:
            rt.apply_usage(0, batch, lambda m: None, 0.0)
            batch = []
    rt.apply_usage(0, batch, lambda m: None, 0.0)
    scores = rt.policy_scores()
    assert scores["through_minute"] == trace.end_minute
    usage = Usage.from_events(trace.events, t0=0.0)
    rows = [scores["active"], *scores["candidates"]]
    assert [r["policy"] for r in rows] == ["fixed:10", "hybrid", "fixed:1"]
    for row in rows:
        commands, _ = simulate(make_policy(row["policy"]), trace)
        expected = score(usage, commands, t0=0.0, end_minute=trace.end_minute)
        assert row["requests"] == expected.requests
        for figure in ("cold_starts", "wasted_minutes", "p75_cold_pct"):
            assert row[figure] == pytest.approx(getattr(expected, figure), rel=0.02), figure
    assert scores["candidates"][1]["cold_starts"] > scores["active"]["cold_starts"]
    rt.check_alerts(1.0)
    gauge = rt.metrics.policy_figures["cold_starts"]
    assert gauge.labels(policy="fixed:1", role="candidate")._value.get() == rows[2]["cold_starts"]


def test_no_candidates_cost_nothing() -> None:
    rt = Runtime(WarmcastSettings(policy="fixed:10", partitions=1))
    rt.apply_usage(0, [UsageEvent(model_id="m", ts=60.0)], lambda m: None, 0.0)
    assert rt.steps[0].shadows is None and rt.steps[0].active is None


def test_a_bad_candidate_is_refused_before_the_worker_starts() -> None:
    with pytest.raises(SettingsError, match="SHADOW_POLICIES"):
        check_policies(WarmcastSettings(shadow_policies="hybrid,nosuch"))
    with pytest.raises(SettingsError, match="SHADOW_POLICIES"):
        check_policies(WarmcastSettings(shadow_policies="warmcast:knob"))
