"""``warmcast synth``: deterministic traces whose families really have their structure."""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import Counter
from pathlib import Path

import pytest

from tools import synth
from tools.synth import DAY, FAMILIES, generate, per_model_minutes, write_trace
from tools.traces import load_trace


def gaps(minutes: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(minutes)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shape_and_determinism(family: str) -> None:
    a = generate(family, seed=3, days=2, models=10)
    b = generate(family, seed=3, days=2, models=10)
    c = generate(family, seed=4, days=2, models=10)
    assert a.events == b.events
    assert a.events != c.events
    assert a.end_minute == 2 * DAY - 1 and a.t0 == 0.0
    assert a.events == sorted(a.events)
    assert all(0 <= a.minute_of(ts) <= a.end_minute and n > 0 for ts, _, n in a.events)
    # one event per model and minute, at the minute's start
    assert len({(ts, m) for ts, m, _ in a.events}) == len(a.events)
    assert all(ts % 60 == 0 for ts, _, _ in a.events)
    assert a.models == 10  # every model asked for has requests


def test_timer_gaps_cluster_at_the_period() -> None:
    trace = generate("timer", seed=1, days=3, models=30, jitter=1.0, miss=0.05)
    checked = near = total = 0
    for model_id, minutes in per_model_minutes(trace).items():
        period = float(model_id.rsplit("-p", 1)[1])
        g = gaps(minutes)
        if len(g) < 4:
            continue
        checked += 1
        # gaps are whole numbers of periods (missed beats) within the jitter
        near += sum(1 for x in g if abs(x - period * max(1, round(x / period))) <= 3)
        total += len(g)
        assert abs(statistics.median(g) - period) <= 2, (model_id, g[:20])
    assert checked >= 10
    assert near >= 0.97 * total


def test_timer_misses_beats_when_told() -> None:
    none = generate("timer", seed=2, days=2, models=10, periods=[30], jitter=0.0, miss=0.0)
    half = generate("timer", seed=2, days=2, models=10, periods=[30], jitter=0.0, miss=0.5)
    for minutes in per_model_minutes(none).values():
        assert set(gaps(minutes)) == {30}
    long_gaps = sum(1 for m in per_model_minutes(half).values() for x in gaps(m) if x >= 60)
    assert long_gaps > 50


def test_poisson_rates_span_the_range_and_gaps_are_memoryless() -> None:
    trace = generate("poisson", seed=1, days=7, models=40)
    per_model = per_model_minutes(trace)
    requests = Counter[str]()
    for _, model_id, n in trace.events:
        requests[model_id] += n
    per_day = sorted(requests[m] / 7 for m in per_model)
    assert per_day[0] < 10 and per_day[-1] > 1000  # one a day .. many a minute
    # a sparse model's gaps look exponential: coefficient of variation near 1
    cvs = []
    for minutes in per_model.values():
        g = gaps(minutes)
        if len(g) >= 30 and statistics.mean(g) > 20:
            cvs.append(statistics.pstdev(g) / statistics.mean(g))
    assert cvs and 0.7 < statistics.median(cvs) < 1.3


def test_daily_rhythm_repeats_and_weekends_sleep() -> None:
    trace = generate("daily", seed=1, days=14, models=20)
    for model_id, minutes in per_model_minutes(trace).items():
        if len(minutes) < 100:
            continue
        hours = Counter((m % DAY) // 60 for m in minutes)
        busiest = sum(n for _, n in hours.most_common(10))
        assert busiest >= 0.9 * len(minutes), model_id
        days_used = Counter(m // DAY for m in minutes)
        if model_id.endswith("-wk"):
            weekend = sum(days_used[d] for d in (5, 6, 12, 13))
            assert weekend <= 0.02 * len(minutes), model_id
        # the same window every day: at least 8 distinct weekdays hold it
        assert sum(1 for n in days_used.values() if n >= 10) >= 8


def test_bursts_are_on_off() -> None:
    trace = generate("bursts", seed=1, days=7, models=20)
    short = long = 0
    for minutes in per_model_minutes(trace).values():
        for x in gaps(minutes):
            short += x <= 5
            long += x >= 30
    assert short > 5 * long > 0  # dense sessions, separated by long silences
    middle = sum(1 for m in per_model_minutes(trace).values() for x in gaps(m) if 10 < x < 30)
    assert middle < long


def test_drift_changes_the_period() -> None:
    trace = generate("drift", seed=1, days=7, models=30, change_share=1.0, jitter=0.0)
    changed = 0
    for minutes in per_model_minutes(trace).values():
        g = gaps(minutes)
        early, late = statistics.median(g[:5]), statistics.median(g[-5:])
        changed += max(early, late) / min(early, late) > 1.3
    assert changed >= 20


def test_group_members_wake_right_after_their_leader() -> None:
    trace = generate("groups", seed=1, days=7, models=20, group_size=5, lag_minutes=3)
    per_model = per_model_minutes(trace)
    for g in range(4):
        leader = set(per_model[f"group-{g:02d}-m0"])
        for k in range(1, 5):
            member = per_model[f"group-{g:02d}-m{k}"]
            onsets = [m for i, m in enumerate(member) if i == 0 or m - member[i - 1] > 30]
            assert onsets
            led = sum(1 for m in onsets if any(m - d in leader for d in (1, 2, 3)))
            assert led >= 0.9 * len(onsets)


def test_churn_models_are_born_and_die() -> None:
    trace = generate("churn", seed=1, days=8, models=30)
    end = trace.end_minute
    for model_id, minutes in per_model_minutes(trace).items():
        if "-born-" in model_id:
            assert minutes[0] >= end // 8 - 1
        elif "-dies-" in model_id:
            assert minutes[-1] < 7 * end // 8 + 1
        elif len(minutes) > 50:
            assert minutes[0] < end // 8 and minutes[-1] > 7 * end // 8


def test_mix_holds_every_part() -> None:
    trace = generate("mix", seed=1, days=2, models=40)
    kinds = {m.split("-")[1] for _, m, _ in trace.events}
    assert {"poisson", "timer", "daily", "bursts", "group", "churn"} <= kinds


def test_azure_file_reads_back_as_the_same_trace(tmp_path: Path) -> None:
    trace = generate("bursts", seed=5, days=1, models=8)
    path = tmp_path / "bursts.csv.gz"
    write_trace(trace, path, "azure")
    back = load_trace(path)
    assert back.fmt == "azure"
    assert (back.events, back.t0, back.end_minute) == (trace.events, trace.t0, trace.end_minute)


def test_jsonl_file_keeps_every_request(tmp_path: Path) -> None:
    trace = generate("timer", seed=5, days=1, models=8)
    path = tmp_path / "timer.jsonl"
    write_trace(trace, path, "jsonl")
    back = load_trace(path)
    assert sorted((ts, m, n) for ts, m, n in back.events) == trace.events


def test_unknown_family_and_parameter_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown synthetic family"):
        generate("nope")
    with pytest.raises(ValueError, match="timer"):
        generate("timer", bogus=1)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    synth.register(sub)
    return parser.parse_args(argv)


def test_cli_writes_a_trace_the_backtest_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.csv"
    args = parse(["synth", "timer", str(out), "--seed", "2", "--days", "1", "--models", "5",
                  "--param", "periods=[30]", "--param", "jitter=0"])  # fmt: skip
    assert args.func(args) == 0
    assert "5 models" in capsys.readouterr().out
    back = load_trace(out)
    assert back.events == generate("timer", seed=2, days=1, models=5, periods=[30], jitter=0).events
    bad = parse(["synth", "timer", str(out), "--param", "nope=1"])
    assert bad.func(bad) == 2
    assert "nope" in capsys.readouterr().err


def test_help_documents_every_family_perfect_predictor() -> None:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers()
    text = synth.register(sub).format_help()
    for name, fam in FAMILIES.items():
        assert f"{name} (default" in text
        assert "Perfect predictor" in fam.doc
