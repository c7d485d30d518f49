"""``warmcast backtest`` end to end on a small excerpt, and the Python API around it."""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import math
import random
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.registry import PolicyUnavailable, make_policy
from tools import backtest_cli
from tools.backtest import run_backtest
from tools.traces import load_trace

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AZURE = DATA / "azure-functions-2019" / "invocations_per_minute_1000fn_24h.csv.gz"
HAS_WARMCAST = importlib.util.find_spec("engine.warmcast") is not None


def excerpt(path: Path, rows: int = 60, minutes: int = 240) -> Path:
    """The first rows and minutes of the Azure sample (or a synthetic stand-in)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if AZURE.exists():
        with gzip.open(AZURE, "rt", newline="") as f:
            reader = csv.reader(f)
            writer.writerow(next(reader)[: 3 + minutes])
            for _, row in zip(range(rows), reader, strict=False):
                writer.writerow(row[: 3 + minutes])
    else:
        rng = random.Random(7)
        writer.writerow(["HashFunction", "HashApp", "HashOwner"]
                        + [f"minute_{i}" for i in range(1, minutes + 1)])  # fmt: skip
        for r in range(rows):
            period = rng.choice([1, 5, 17, 60, 200])
            counts = [rng.randint(1, 9) if (i % period == 0 or rng.random() < 0.05) else 0
                      for i in range(minutes)]  # fmt: skip
            writer.writerow([f"f{r}", f"f{r}", f"o{r}", *counts])
    path.write_bytes(gzip.compress(out.getvalue().encode()))
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    backtest_cli.register(sub)
    return parser.parse_args(argv)


def naive_loaded(
    commands: list[dict[str, Any]], t0: float, lo: int, hi: int
) -> dict[str, set[int]]:
    """Per model, the minutes in [lo, hi] the commands keep it loaded, minute by minute."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in commands:
        by_model[c["model_id"]].append(c)

    def minute(t: float) -> int:
        return math.floor((t - t0) / 60)

    loaded: dict[str, set[int]] = {}
    for model_id, log in by_model.items():
        minutes = set()
        k = -1
        for m in range(lo, hi + 1):
            while k + 1 < len(log) and minute(log[k + 1]["issued_at"]) + 1 <= m:
                k += 1
            if (
                k >= 0
                and log[k]["action"] == "warm"
                and minute(log[k]["start"]) <= m < minute(log[k]["end"])
            ):
                minutes.add(m)
        loaded[model_id] = minutes
    return loaded


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace_path = excerpt(tmp_path / "excerpt.csv.gz")
    out_json, out_cmds, out_png = tmp_path / "r.json", tmp_path / "c.jsonl", tmp_path / "p.png"
    args = parse(
        ["backtest", str(trace_path), "--policy", "fixed:10", "fixed:30", "hybrid",
         "--train-minutes", "60", "--json", str(out_json), "--commands", str(out_cmds),
         "--plot", str(out_png)]
    )  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert "fixed:30" in printed.out and "hybrid" in printed.out
    assert printed.err == ""  # no progress bar when stderr is not a terminal

    result = orjson.loads(out_json.read_bytes())
    info = result["trace"]
    assert (info["format"], info["t0"], info["end_minute"]) == ("azure", 0.0, 239)
    assert info["score_minutes"] == [60, 239]
    runs = {r["policy"]: r for r in result["policies"]}
    assert list(runs) == ["fixed:10", "fixed:30", "hybrid"]
    assert runs["fixed:10"]["wasted_norm_pct"] == 100.0
    keys = {"policy", "knob", "p75_cold_pct", "cold_pct_overall", "wasted_norm_pct",
            "cold_starts", "requests", "wasted_minutes", "precision", "recall", "commands",
            "runtime_seconds"}  # fmt: skip
    assert all(keys <= set(r) for r in runs.values())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Everything the JSON says follows from the commands file and the trace alone.
    commands = [orjson.loads(line) for line in out_cmds.read_bytes().splitlines()]
    fields = {"command_id", "model_id", "action", "issued_at", "start", "end", "priority",
              "probability", "confidence", "reason", "policy_version"}  # fmt: skip
    assert all(set(c) == fields for c in commands)
    by_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in commands:
        by_version[c["policy_version"]].append(c)
    assert set(by_version) == {r["policy_version"] for r in runs.values()}
    usage: dict[str, dict[int, int]] = defaultdict(dict)
    for ts, model_id, count in load_trace(trace_path):
        m = math.floor(ts / 60)
        usage[model_id][m] = usage[model_id].get(m, 0) + count
    for run in runs.values():
        log = by_version[run["policy_version"]]
        assert len(log) == run["commands"]
        loaded = naive_loaded(log, info["t0"], 60, 239)
        total = sum(len(ms) for ms in loaded.values())
        used = sum(1 for mid, ms in loaded.items() for m in ms if m in usage[mid])
        cold = sum(1 for mid, bm in usage.items() for m in bm
                   if m >= 60 and m not in loaded.get(mid, set()))  # fmt: skip
        assert run["loaded_minutes"] == total
        assert run["wasted_minutes"] == total - used
        assert run["cold_starts"] == cold
        norm = 100 * run["wasted_minutes"] / runs["fixed:10"]["wasted_minutes"]
        assert run["wasted_norm_pct"] == pytest.approx(norm)


def test_fixed_10_is_always_run_for_normalising(tmp_path: Path) -> None:
    trace_path = excerpt(tmp_path / "e.csv.gz", rows=20, minutes=120)
    result = run_backtest(trace_path, ["fixed:60"], train_minutes=30)
    assert [r.label for r in result.runs] == ["fixed:60"]
    assert result.reference.label == "fixed:10"
    norm = result.runs[0].score.wasted_norm_pct
    ref = result.reference.score.wasted_minutes
    assert norm == pytest.approx(100 * result.runs[0].score.wasted_minutes / ref)
    assert "fixed:60" in result.table()


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["backtest", str(tmp_path / "missing.csv"), "--policy", "hybrid"])
    assert args.func(args) == 2
    assert "warmcast backtest:" in capsys.readouterr().err
    trace_path = excerpt(tmp_path / "e.csv.gz", rows=5, minutes=30)
    args = parse(["backtest", str(trace_path), "--policy", "mru"])
    assert args.func(args) == 2


def test_registry() -> None:
    assert make_policy("fixed:5").name == "fixed:5"
    assert make_policy(" Hybrid ", cv_threshold=3.0).cv_threshold == 3.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="whole minutes"):
        make_policy("fixed:ten")
    with pytest.raises(TypeError):
        make_policy("fixed:10", knob=1.0)


@pytest.mark.skipif(HAS_WARMCAST, reason="engine.warmcast exists: see the test below")
def test_warmcast_missing_is_reported(tmp_path: Path) -> None:
    trace_path = excerpt(tmp_path / "e.csv.gz", rows=5, minutes=30)
    with pytest.raises(PolicyUnavailable, match=r"engine\.warmcast"):
        make_policy("warmcast")
    result = run_backtest(trace_path)  # default list: skipped, not fatal
    assert "warmcast" in result.skipped_policies
    assert [r.label for r in result.runs] == ["fixed:10", "hybrid"]
    with pytest.raises(PolicyUnavailable):
        run_backtest(trace_path, ["warmcast"])


@pytest.mark.skipif(not HAS_WARMCAST, reason="engine.warmcast is not written yet")
def test_warmcast_knob_sweep(tmp_path: Path) -> None:
    trace_path = excerpt(tmp_path / "e.csv.gz", rows=10, minutes=90)
    cmds = tmp_path / "c.jsonl"
    result = run_backtest(trace_path, ["warmcast"], knobs=[0.5, 2.0], commands_path=cmds)
    assert [r.label for r in result.runs] == ["warmcast@0.5", "warmcast@2"]
    versions = {r.policy_version for r in result.runs}
    assert len(versions) == 2
    written = {orjson.loads(line)["policy_version"] for line in cmds.read_bytes().splitlines()}
    assert written <= versions | {result.reference.policy_version}


class _KnobbedKeepAlive:
    """Stands in for the learning policy: a keep-alive of 10 x knob minutes, one version."""

    name = "warmcast"
    version = "warmcast/test"

    def __init__(self, knob: float = 1.0) -> None:
        self._inner = make_policy(f"fixed:{max(1, round(10 * knob))}")

    def on_request(self, model_id: str, minute: int) -> Any:
        return self._inner.on_request(model_id, minute)

    def on_minute_closed(self, minute: int, counts: Any) -> Any:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        return None


def test_knob_sweep_with_a_stand_in_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("engine.warmcast")
    module.WarmcastPolicy = _KnobbedKeepAlive  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "engine.warmcast", module)
    trace_path = excerpt(tmp_path / "e.csv.gz", rows=20, minutes=120)
    out_json, out_cmds, out_png = tmp_path / "r.json", tmp_path / "c.jsonl", tmp_path / "p.png"
    args = parse(
        ["backtest", str(trace_path), "--knobs", "0.5", "2", "6", "--json", str(out_json),
         "--commands", str(out_cmds), "--plot", str(out_png), "--policy", "fixed:10",
         "fixed:30", "hybrid", "warmcast"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "warmcast@0.5" in capsys.readouterr().out
    runs = orjson.loads(out_json.read_bytes())["policies"]
    sweep = [r for r in runs if r["policy"] == "warmcast"]
    assert [r["knob"] for r in sweep] == [0.5, 2.0, 6.0]
    assert [r["policy_version"] for r in sweep] == [
        "warmcast/test+knob=0.5",
        "warmcast/test+knob=2",
        "warmcast/test+knob=6",
    ]
    by_version: dict[str, int] = defaultdict(int)
    for line in out_cmds.read_bytes().splitlines():
        by_version[orjson.loads(line)["policy_version"]] += 1
    assert {r["policy_version"]: r["commands"] for r in runs} == by_version
    # knob 2 keeps models 20 minutes, knob 6 an hour: fewer cold starts as the knob grows
    colds = [r["cold_starts"] for r in sweep]
    assert colds == sorted(colds, reverse=True)
    assert out_png.stat().st_size > 10_000
