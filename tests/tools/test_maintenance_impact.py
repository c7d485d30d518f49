"""``warmcast backtest --maintenance``: a window's cost on a synthetic trace."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from tools import backtest_cli
from tools.maintenance_impact import assess, windows_of
from tools.synth import generate, write_trace

#: Minutes 600..690 of the first day of a trace from t0 0: 10:00 to 11:30 UTC.
WINDOW = "from=1970-01-01T10:00Z,until=1970-01-01T11:30Z,id=upgrade"


def test_a_pause_window_causes_cold_starts_and_saves_memory() -> None:
    trace = generate("poisson", seed=5, days=1, models=20)
    impact = assess(trace, windows_of([WINDOW]), ["fixed:10", "hybrid"])
    assert [p.label for p in impact.policies] == ["fixed:10", "hybrid"]
    for p in impact.policies:
        assert p.cold_starts_caused >= 0 and p.memory_minutes_saved > 0, p.to_dict()
        assert p.held > 0
    # the windows, as they fall on the trace
    assert impact.windows[0]["occurrences"] == [
        ["1970-01-01T10:00:00+00:00", "1970-01-01T11:30:00+00:00"]
    ]


def test_a_window_of_models_the_trace_lacks_changes_nothing() -> None:
    trace = generate("poisson", seed=5, days=1, models=10)
    impact = assess(trace, windows_of([WINDOW + ",models=nothing-*"]), ["fixed:10"])
    (p,) = impact.policies
    assert (p.cold_starts_caused, p.memory_minutes_saved, p.held) == (0, 0, 0)


def test_the_command_line_prints_and_writes_the_impact(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    write_trace(generate("timer", seed=2, days=1, models=15), path)
    out = io.StringIO()
    parser = backtest_cli.argparse.ArgumentParser(prog="warmcast")
    backtest_cli.register(parser.add_subparsers())
    windows = ["--maintenance", WINDOW, "--maintenance", "cron=0 20 * * *,duration=30m,cap=1"]
    json_out = str(tmp_path / "r.json")
    args = parser.parse_args(
        ["backtest", str(path), "--policy", "fixed:10", "--json", json_out, *windows]
    )
    assert backtest_cli.command(args, stdout=out) == 0
    text = out.getvalue()
    assert "cold_starts_caused" in text and "upgrade (pause, models *): 1 in the trace" in text
    doc = orjson.loads((tmp_path / "r.json").read_bytes())
    (row,) = doc["maintenance"]["policies"]
    assert row["policy"] == "fixed:10" and row["cold_starts_caused"] >= 0
    assert row["memory_minutes_saved"] > 0
    assert [w["mode"] for w in doc["maintenance"]["windows"]] == ["pause", "cap=1"]


def test_a_bad_spec_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = backtest_cli.argparse.ArgumentParser(prog="warmcast")
    backtest_cli.register(parser.add_subparsers())
    args = parser.parse_args(["backtest", "missing.csv", "--maintenance", "cron=0 2 * * *"])
    assert backtest_cli.command(args) == 2
    assert "window 1: a cron window needs duration=" in capsys.readouterr().err
