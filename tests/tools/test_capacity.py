"""``warmcast backtest`` under a memory budget: sizes, one capacity, and a sweep."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import orjson
import pytest

from tools import backtest_cli
from tools.backtest import Capacity, run_backtest
from tools.capacity import run_sweep, share_arg
from tools.traces import load_trace, read_sizes

SAMPLES = Path(__file__).resolve().parents[2] / "tools" / "samples"
TRACE = SAMPLES / "azure2019_150fn_4h.csv.gz"
SIZES = SAMPLES / "azure2019_150fn_memory.csv"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    backtest_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_a_sweep_never_exceeds_its_capacity_and_everything_fits_at_the_fleet_size(
    tmp_path: Path,
) -> None:
    out, js = io.StringIO(), tmp_path / "sweep.json"
    args = parse(
        [
            "backtest",
            str(TRACE),
            "--sizes",
            str(SIZES),
            "--capacities",
            "10%",
            "100%",
            "--json",
            str(js),
            "--plot",
            str(tmp_path / "sweep.png"),
        ]
    )
    assert backtest_cli.command(args, out) == 0
    text = out.getvalue()
    assert "warmcast/best" in text and "150 models" in text
    result = orjson.loads(js.read_bytes())
    small, full = result["capacities"]
    assert small["share"] == 0.1 and full["share"] == 1.0
    for point in (small, full):
        for run in point["policies"]:
            assert run["peak_loaded_bytes"] <= point["capacity_bytes"] + 1e-6
    for run in full["policies"]:  # every model fits: only first requests are cold
        if run["policy"] in ("lru", "gdsf", "warmcast"):
            assert run["cold_starts"] == 150 and run["evictions"] == 0
    for run in small["policies"]:  # a tenth of the fleet: the budget binds
        assert run["evictions"] > 0 and run["cold_starts"] > 150
    assert small["warmcast_to_best_baseline"] is not None
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert result["trace"]["default_sized_models"] == 0


def test_one_capacity_in_mib_and_models_without_a_size(tmp_path: Path) -> None:
    sizes = tmp_path / "sizes.csv"
    known = list(read_sizes(SIZES).items())[:100]
    sizes.write_text("model_id,bytes\n" + "".join(f"{m},{b}\n" for m, b in known))
    out, js = io.StringIO(), tmp_path / "one.json"
    args = parse(
        [
            "backtest",
            str(TRACE),
            "--policy",
            "hybrid",
            "gdsf",
            "--sizes",
            str(sizes),
            "--capacity-mb",
            "20000",
            "--json",
            str(js),
        ]
    )
    assert backtest_cli.command(args, out) == 0
    result = orjson.loads(js.read_bytes())
    assert result["trace"]["default_sized_models"] == 50
    assert result["trace"]["sized_models"] == 100
    assert result["trace"]["capacity_bytes"] == 20000 * 2**20
    for run in result["policies"]:
        assert 0 < run["peak_loaded_bytes"] <= 20000 * 2**20
        assert run["wasted_byte_minutes"] > 0
    assert "peak_GiB" in out.getvalue()


def test_a_capacity_in_models_counts_every_model_as_one() -> None:
    trace = load_trace(TRACE)
    result = run_backtest(trace, ["lru"], capacity=Capacity.of_models(15))
    run = result.run("lru")
    assert run.memory is not None and run.memory.peak_loaded_bytes == 15.0
    assert run.evictions > 0
    assert result.trace["unit_sizes"] is True and result.trace["fleet_bytes"] == 150


def test_sweep_in_models_for_a_trace_without_sizes() -> None:
    trace = load_trace(TRACE)
    sweep = run_sweep(trace, [0.2], policies=["lru", "gdsf"], unit=True)
    (point,) = sweep.points
    assert point.capacity.limit == 30.0
    assert point.best_baseline() is not None and point.warmcast_ratio() is None


def test_bad_capacities_exit_2(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        share_arg("0%")
    args = parse(["backtest", str(TRACE), "--capacity-mb", "1", "--capacity-models", "3"])
    assert backtest_cli.command(args, io.StringIO()) == 2
    args = parse(["backtest", str(TRACE), "--capacity-mb", "-5"])
    assert backtest_cli.command(args, io.StringIO()) == 2
