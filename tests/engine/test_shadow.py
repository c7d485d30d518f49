"""Shadow policies scored online give the backtest's figures (tools.scoring) for the same
events, on the shipped trace and on synthetic ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.registry import make_policy
from engine.shadow import OnlineScore, ShadowPolicies
from engine.timebase import MinuteGrid
from tools.backtest import simulate
from tools.scoring import Usage, score
from tools.traces import Trace, load_trace

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"
FIELDS = ("cold_starts", "requests", "requested_minutes", "warm_minutes", "loaded_minutes")


def offline(spec: str, trace: Trace) -> dict[str, float]:
    commands, _ = simulate(make_policy(spec), trace)
    usage = Usage.from_events(trace.events, t0=trace.t0)
    return score(usage, commands, t0=trace.t0, end_minute=trace.end_minute).to_dict()


@pytest.mark.parametrize("spec", ["fixed:10", "hybrid", "warmcast"])
def test_shadow_scores_equal_the_backtest(spec: str) -> None:
    trace = load_trace(SAMPLE)
    shadows = ShadowPolicies({spec: make_policy(spec)}, grid=MinuteGrid(origin=trace.t0))
    for ts, model_id, count in trace.events:
        shadows.observe(model_id, ts, count)
    shadows.finish(trace.end_ts)
    online = shadows.scores(trace.end_minute)[spec]
    expected = offline(spec, trace)
    for name in (*FIELDS, "wasted_minutes", "models"):
        assert online[name] == expected[name], name
    for name in ("p75_cold_pct", "cold_pct_overall", "precision", "recall"):
        assert online[name] == pytest.approx(expected[name]), name


def test_the_active_policy_is_scored_from_its_commands() -> None:
    trace = load_trace(SAMPLE)
    commands, _ = simulate(make_policy("fixed:10"), trace)
    by_time = sorted(commands, key=lambda c: c.issued_at)
    active = OnlineScore(trace.t0)
    i = 0
    for ts, model_id, count in trace.events:
        # what was issued before this request's minute ended rules from the next minute
        while i < len(by_time) and by_time[i].issued_at <= ts:
            active.command(by_time[i])
            i += 1
        active.request(model_id, ts, count)
    for c in by_time[i:]:
        active.command(c)
    online = active.score(trace.end_minute)
    expected = offline("fixed:10", trace)
    assert {k: online[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}


def test_a_release_ends_the_lease_and_the_latest_command_of_a_minute_wins() -> None:
    from engine.lease import Command

    s = OnlineScore(0.0)
    s.command(Command("a", "m", "warm", 0.0, 60.0, 600.0, 0, None, None, "", "p/1"))  # 1..10
    s.command(Command("b", "m", "release", 200.0, 0.0, 0.0, 0, None, None, "", "p/1"))  # from 4
    s.request("m", 130.0)  # minute 2: warm
    s.request("m", 310.0)  # minute 5: cold, released
    figures = s.score(end_minute=9)
    assert (figures["warm_minutes"], figures["cold_starts"]) == (1, 1)
    assert figures["loaded_minutes"] == 3  # minutes 1, 2, 3
