"""``warmcast backtest --suite``: a suite of traces, worst first, warmcast against hybrid."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import orjson
import pytest

from tools import backtest_cli
from tools.backtest import run_backtest
from tools.suite import load_suite, ratio_at_memory, run_suite
from tools.synth import generate

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tools" / "suites" / "small.toml"
FULL = ROOT / "tools" / "suites" / "full.toml"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    backtest_cli.register(sub)
    return parser.parse_args(argv)


def test_ratio_reads_the_curve_at_hybrid_memory() -> None:
    curve = [(300.0, 20.0), (100.0, 60.0), (200.0, 40.0)]  # any order
    assert ratio_at_memory(curve, 250.0, 50.0) == (pytest.approx(0.6), "interpolated")
    assert ratio_at_memory(curve, 100.0, 60.0)[0] == pytest.approx(1.0)
    assert ratio_at_memory(curve, 400.0, 40.0)[0] == pytest.approx(0.5)  # flat past its end
    assert ratio_at_memory(curve, 50.0, 40.0)[0] is None  # cheaper than the whole curve
    assert ratio_at_memory([(10.0, 0.0)], 20.0, 0.0)[0] == 1.0
    assert math.isinf(ratio_at_memory([(10.0, 3.0)], 20.0, 0.0)[0] or 0.0)


def test_a_dominated_point_is_not_on_the_curve() -> None:
    # knob 0.5 spends more memory than knob 1 for more cold starts: knob 1 is what that
    # memory buys, and the reading between knob 1 and knob 2 skips knob 0.5
    curve = [(96.5, 48.8), (97.5, 59.3), (104.0, 37.6)]
    ratio, note = ratio_at_memory(curve, 100.0, 100.0)
    assert note == "interpolated"
    assert ratio == pytest.approx((48.8 + (37.6 - 48.8) * (100.0 - 96.5) / 7.5) / 100.0)
    assert ratio_at_memory(curve, 97.5, 100.0)[0] == pytest.approx(
        (48.8 + (37.6 - 48.8) * 1.0 / 7.5) / 100.0
    )
    # equal memory: the point with fewer cold starts stands
    assert ratio_at_memory([(50.0, 9.0), (50.0, 7.0)], 50.0, 10.0)[0] == pytest.approx(0.7)


def test_small_suite_runs_and_lists_worst_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "suite.json"
    args = parse(["backtest", "--suite", str(SMALL), "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    data = orjson.loads(out.read_bytes())
    suite = load_suite(SMALL)
    names = [t["name"] for t in data["traces"]]
    assert sorted(names) == sorted(t.name for t in suite.traces)
    ratios = [t["ratio_at_hybrid_memory"] for t in data["traces"]]
    assert all(r is not None for r in ratios)
    assert ratios == sorted(ratios, reverse=True)
    for t in data["traces"]:
        labels = {(p["policy"], p["knob"]) for p in t["policies"]}
        assert {("fixed:10", None), ("hybrid", None)} <= labels
        assert {k for p, k in labels if p == "warmcast"} == set(suite.knobs)
        for p in t["policies"]:
            assert {"cold_pct_overall", "p75_cold_pct", "wasted_norm_pct"} <= set(p)
        assert [r["knob"] for r in t["knob_ratios"]] == sorted(suite.knobs)
        assert f"== {t['name']} (synthetic" in text
    summary = text.split("== suite small")[1]
    rows = [line.split()[0] for line in summary.splitlines()[3:] if line and line[0] != " "]
    assert rows == names  # the printed summary in the same, worst-first order


def test_suite_numbers_equal_a_plain_backtest_of_the_same_trace(tmp_path: Path) -> None:
    suite_file = tmp_path / "one.json"
    suite_file.write_bytes(
        orjson.dumps(
            {
                "knobs": [1.0],
                "policies": ["fixed:10", "hybrid", "fixed:30"],
                "trace": [
                    {"synth": "bursts", "seed": 9, "days": 1, "models": 6, "train_minutes": 60}
                ],
            }
        )
    )
    result = run_suite(load_suite(suite_file), progress=False)
    (report,) = result.reports
    direct = run_backtest(
        generate("bursts", seed=9, days=1, models=6),
        ["fixed:10", "hybrid", "fixed:30"],
        train_minutes=60,
        progress=False,
    )
    assert [r.to_dict() | {"runtime_seconds": 0} for r in report.result.runs] == [
        r.to_dict() | {"runtime_seconds": 0} for r in direct.runs
    ]
    assert report.ratio is None and report.ratio_note == "no curve"


def test_missing_trace_file_is_skipped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'knobs = [1]\npolicies = ["fixed:10", "hybrid"]\n'
        '[[trace]]\nname = "gone"\npath = "no/such/file.csv.gz"\n'
        '[[trace]]\nsynth = "timer"\ndays = 1\nmodels = 4\n'
    )
    args = parse(["backtest", "--suite", str(suite_file)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "skipped gone: trace file not found:" in text
    assert str(tmp_path / "no" / "such" / "file.csv.gz") in text
    only_missing = tmp_path / "m.toml"
    only_missing.write_text('[[trace]]\npath = "nothing.csv"\n')
    args = parse(["backtest", "--suite", str(only_missing)])
    assert args.func(args) == 2
    assert "every trace of the suite was skipped" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name = 'x'\n", "no traces"),
        ("[[trace]]\nsynth = 'timer'\npath = 'a'\n", "exactly one of"),
        ("[[trace]]\nsynth = 'timer'\ncolour = 'red'\n", "unknown keys"),
        ("[[trace]]\nsynth = 'timer'\ntrain_minutes = -1\n", "train_minutes"),
        ("[[trace]]\nsynth = 'timer'\n[[trace]]\nsynth = 'timer'\n", "unique"),
        ("[[trace\n", "not a valid suite file"),
    ],
)
def test_bad_suite_files_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_suite(path)
    args = parse(["backtest", "--suite", str(path)])
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_a_trace_or_a_suite_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["backtest"], ["backtest", "x.csv", "--suite", str(SMALL)]):
        args = parse(argv)
        assert args.func(args) == 2
        assert "give a trace file or --suite" in capsys.readouterr().err


def test_full_suite_names_every_family_and_both_development_traces() -> None:
    from tools.synth import FAMILIES

    suite = load_suite(FULL)
    assert {t.synth for t in suite.traces if t.synth} == set(FAMILIES)
    paths = [t.path for t in suite.traces if t.path is not None]
    assert [p.name for p in paths] == [
        "invocations_per_minute_1000fn_24h.csv.gz",
        "requests_2024-11-15_to_2024-11-28.csv.gz",
    ]
    assert all(p.resolve().parent.parent.name == "data" for p in paths)


def test_warmcast_settings_reach_every_knob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_file = tmp_path / "w.toml"
    suite_file.write_text(
        'knobs = [1, 2]\n[[trace]]\nsynth = "timer"\ndays = 1\nmodels = 8\ntrain_minutes = 60\n'
    )
    plain = run_suite(load_suite(suite_file), progress=False).reports[0].result
    eager = (
        run_suite(load_suite(suite_file), progress=False, warmcast_config={"min_samples": 0})
        .reports[0]
        .result
    )
    for label in ("warmcast@1", "warmcast@2"):  # a learner trusted from the start decides
        assert plain.run(label).to_dict() != eager.run(label).to_dict()
    assert plain.run("hybrid").score == eager.run("hybrid").score
    suite_file.write_text(
        suite_file.read_text().replace("knobs", "warmcast = {min_samples = 0}\nknobs")
    )
    again = run_suite(load_suite(suite_file), progress=False).reports[0].result
    assert again.run("warmcast@1").score == eager.run("warmcast@1").score
    args = parse(["backtest", "--suite", str(suite_file), "--warmcast-param", "no_such=1"])
    assert args.func(args) == 2
    assert "no_such" in capsys.readouterr().err


def test_a_curve_that_never_gets_as_cheap_as_hybrid_names_its_cheapest_point() -> None:
    from tools.backtest import BacktestResult, PolicyRun
    from tools.scoring import Score
    from tools.suite import SuiteTrace, _report

    def run(policy: str, knob: float | None, cold: int, wasted: int) -> PolicyRun:
        score = Score(cold, 1000, 500, 500 - cold, 900, wasted, 10, 0.0, 0.0, 0.0, 0.0)
        return PolicyRun(policy, knob, policy, score, 0, 0.0)

    ref = run("fixed:10", None, 300, 100)
    cheap = BacktestResult(
        {},
        ref,
        [
            run("hybrid", None, 100, 200),
            run("warmcast", 1.0, 90, 210),
            run("warmcast", 2.0, 50, 400),
        ],
    )
    report = _report(SuiteTrace("t"), cheap)
    assert report.ratio is None
    assert report.ratio_note.endswith("its cheapest point: 0.90x cold starts at 1.05x memory")
    inside = BacktestResult(
        {},
        ref,
        [
            run("hybrid", None, 100, 200),
            run("warmcast", 1.0, 90, 100),
            run("warmcast", 2.0, 50, 300),
        ],
    )
    assert _report(SuiteTrace("t"), inside).ratio == pytest.approx(0.7)
