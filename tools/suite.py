"""``warmcast backtest --suite SUITE``: the backtest over a suite of traces.

A suite is a small TOML (or JSON) file: the policies and warmcast knob values to run
(optional) and a list of traces, each either a trace file or a synthetic family::

    name = "small"
    knobs = [0.5, 1, 2, 4]                # optional (default: the backtest's)
    policies = ["fixed:10", "hybrid", "warmcast"]   # optional
    warmcast = { min_periods = 4 }        # optional warmcast policy settings

    [[trace]]
    name = "azure-day"
    path = "../data/azure.csv.gz"         # relative to the suite file's directory
    train_minutes = 480                   # and any load option: missing_model, fmt, ...

    [[trace]]
    synth = "timer"                       # a family of tools.synth
    seed = 1
    days = 7
    models = 40
    train_minutes = 1440
    params = { jitter = 2.0 }             # the family's own parameters

A trace file that does not exist is skipped, with a note in the output and the JSON.

Per trace the report gives every policy's three numbers (overall cold-start %, p75 over
models of the cold-start %, wasted memory as % of fixed:10's) and, for warmcast, the
ratio of its cold starts to hybrid's at hybrid's wasted memory, read off the knob curve
by linear interpolation between the two knob values whose memory brackets hybrid's
(:func:`ratio_at_memory`). Traces are listed worst ratio first.

Python API: :func:`load_suite`, :func:`run_suite`.
"""

from __future__ import annotations

import itertools
import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from tools.backtest import DEFAULT_KNOBS, BacktestResult, PolicyRun, format_table, run_backtest
from tools.oracle import oracle_cold_starts
from tools.scoring import Usage
from tools.synth import generate

_LOAD_OPTIONS = ("fmt", "time_col", "model_col", "time_format", "count_col", "t0",
                 "missing_model")  # fmt: skip
_TRACE_KEYS = {"name", "path", "synth", "seed", "days", "models", "params", "train_minutes",
               *_LOAD_OPTIONS}  # fmt: skip


@dataclass(slots=True)
class SuiteTrace:
    """One entry of a suite: a trace file or a synthetic family, and how to score it."""

    name: str
    train_minutes: int = 0
    path: Path | None = None
    synth: str | None = None
    seed: int = 0
    days: float | None = None
    models: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "synthetic" if self.synth is not None else "file"


@dataclass(slots=True)
class Suite:
    name: str
    traces: list[SuiteTrace]
    knobs: tuple[float, ...] = DEFAULT_KNOBS
    policies: tuple[str, ...] | None = None
    warmcast: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TraceReport:
    """One trace of a suite run: the backtest result and warmcast against hybrid."""

    entry: SuiteTrace
    result: BacktestResult
    ratio: float | None
    ratio_note: str
    oracle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "kind": self.entry.kind,
            "ratio_at_hybrid_memory": self.ratio,
            "ratio_note": self.ratio_note,
            "oracle": self.oracle,
            "knob_ratios": knob_ratios(self.result),
            **self.result.to_dict(),
        }


@dataclass(slots=True)
class SuiteResult:
    suite: str
    reports: list[TraceReport]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "traces": [r.to_dict() for r in self.reports],
            "skipped": self.skipped,
        }


# ------------------------------------------------------------------------------- loading


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Read a suite file (``.json``: JSON, anything else: TOML); ``ValueError`` if bad."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        data = orjson.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a valid suite file: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a suite is a table with a list of traces")
    entries = data.get("trace", data.get("traces"))
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{p}: no traces (a list named 'trace')")
    traces = [_entry(p, n, e) for n, e in enumerate(entries)]
    names = [t.name for t in traces]
    if len(set(names)) != len(names):
        raise ValueError(f"{p}: trace names must be unique")
    knobs = data.get("knobs", DEFAULT_KNOBS)
    policies = data.get("policies")
    warmcast = data.get("warmcast", {})
    if not isinstance(warmcast, dict):
        raise ValueError(f"{p}: 'warmcast' must be a table of warmcast policy settings")
    try:
        return Suite(
            name=str(data.get("name", p.stem)),
            traces=traces,
            knobs=tuple(float(k) for k in knobs),
            policies=None if policies is None else tuple(str(s) for s in policies),
            warmcast=dict(warmcast),
        )
    except (TypeError, ValueError):
        raise ValueError(f"{p}: knobs must be numbers and policies names") from None


def _entry(suite_path: Path, n: int, e: Any) -> SuiteTrace:
    where = f"{suite_path}: trace {n + 1}"
    if not isinstance(e, dict):
        raise ValueError(f"{where}: not a table")
    unknown = set(e) - _TRACE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if ("path" in e) == ("synth" in e):
        raise ValueError(f"{where}: give exactly one of 'path' and 'synth'")
    params = e.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{where}: params must be a table")
    train = e.get("train_minutes", 0)
    if not isinstance(train, int) or train < 0:
        raise ValueError(f"{where}: train_minutes must be a non-negative integer")
    if "path" in e:
        path = Path(str(e["path"]))
        if not path.is_absolute():
            path = suite_path.parent / path
        return SuiteTrace(
            name=str(e.get("name", path.name)),
            train_minutes=train,
            path=path,
            load={k: e[k] for k in _LOAD_OPTIONS if k in e},
        )
    seed = e.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError(f"{where}: seed must be an integer")
    return SuiteTrace(
        name=str(e.get("name", f"{e['synth']}-s{seed}")),
        train_minutes=train,
        synth=str(e["synth"]),
        seed=seed,
        days=e.get("days"),
        models=e.get("models"),
        params=dict(params),
    )


# ------------------------------------------------------------------------------- running


def ratio_at_memory(
    curve: Sequence[tuple[float, float]], memory: float, cold: float
) -> tuple[float | None, str]:
    """Cold starts of ``curve`` (``(wasted_memory, cold_starts)`` points) at ``memory``,
    over ``cold``, and how it was read.

    Between two points the curve is linear; past its most expensive point it is flat (more
    memory is not credited); below its cheapest point it has no value (``None``). A point
    with at least the memory and the cold starts of another is not on the curve: a setting
    that does better for less is what that memory buys.

    >>> ratio_at_memory([(100.0, 80.0), (200.0, 40.0)], 150.0, 100.0)
    (0.6, 'interpolated')
    >>> ratio_at_memory([(100.0, 80.0), (200.0, 40.0)], 300.0, 100.0)
    (0.4, 'curve ends below this memory: its most expensive point')
    >>> ratio_at_memory([(100.0, 80.0)], 50.0, 100.0)
    (None, 'curve needs more memory than this')
    >>> ratio_at_memory([(100.0, 80.0), (120.0, 90.0), (200.0, 40.0)], 150.0, 100.0)
    (0.6, 'interpolated')
    """
    points: list[tuple[float, float]] = []
    for point in sorted(curve):
        if not points or point[1] < points[-1][1]:
            points.append(point)
    if not points:
        return None, "no curve"
    if memory < points[0][0]:
        return None, "curve needs more memory than this"

    def over(value: float) -> float:
        if cold > 0:
            return value / cold
        return 1.0 if value == 0 else math.inf

    if memory >= points[-1][0]:
        note = (
            "interpolated"
            if memory == points[-1][0]
            else ("curve ends below this memory: its most expensive point")
        )
        return over(min(c for _, c in points)), note
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= memory <= x1:
            y = y0 if x1 == x0 else y0 + (y1 - y0) * (memory - x0) / (x1 - x0)
            return over(y), "interpolated"
    return None, "no curve"  # pragma: no cover - the loop always brackets memory


def knob_ratios(result: BacktestResult) -> list[dict[str, Any]]:
    """Per warmcast knob: its cold starts and wasted memory as multiples of hybrid's."""
    try:
        hybrid = result.run("hybrid").score
    except KeyError:
        return []
    out = []
    for r in _curve_runs(result):
        s = r.score
        out.append(
            {
                "knob": r.knob,
                "cold_ratio": _div(s.cold_starts, hybrid.cold_starts),
                "memory_ratio": _div(s.wasted_minutes, hybrid.wasted_minutes),
            }
        )
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else (1.0 if a == 0 else math.inf)


def _curve_runs(result: BacktestResult) -> list[PolicyRun]:
    return sorted((r for r in result.runs if r.policy == "warmcast"), key=lambda r: r.knob or 0)


def _report(entry: SuiteTrace, result: BacktestResult) -> TraceReport:
    try:
        hybrid = result.run("hybrid").score
    except KeyError:
        return TraceReport(entry, result, None, "no hybrid run")
    curve = [(float(r.score.wasted_minutes), float(r.score.cold_starts))
             for r in _curve_runs(result)]  # fmt: skip
    ratio, note = ratio_at_memory(curve, float(hybrid.wasted_minutes), float(hybrid.cold_starts))
    if ratio is None and curve:
        memory, cold = min(curve)
        note += (
            f"; its cheapest point: {_fmt_ratio(_div(cold, hybrid.cold_starts))} cold "
            f"starts at {_fmt_ratio(_div(memory, hybrid.wasted_minutes))} memory"
        )
    return TraceReport(entry, result, ratio, note)


def run_suite(
    suite: Suite,
    *,
    policies: Sequence[str] | None = None,
    knobs: Sequence[float] | None = None,
    progress: bool | None = None,
    warmcast_config: dict[str, Any] | None = None,
) -> SuiteResult:
    """Backtest every trace of ``suite``; missing trace files are skipped and named.

    ``warmcast_config`` is laid over the suite's own ``warmcast`` settings."""
    reports: list[TraceReport] = []
    skipped: dict[str, str] = {}
    pols = (
        list(policies)
        if policies is not None
        else (list(suite.policies) if suite.policies is not None else None)
    )
    ks = list(knobs) if knobs is not None else list(suite.knobs)
    for entry in suite.traces:
        if entry.synth is not None:
            trace: Any = generate(
                entry.synth, seed=entry.seed, days=entry.days, models=entry.models,
                **entry.params,
            )  # fmt: skip
        else:
            assert entry.path is not None
            if not entry.path.exists():
                skipped[entry.name] = f"trace file not found: {entry.path}"
                continue
            trace = entry.path
        result = run_backtest(
            trace,
            pols,
            knobs=ks,
            train_minutes=entry.train_minutes,
            progress=progress,
            warmcast_config={**suite.warmcast, **(warmcast_config or {})},
            **entry.load,
        )
        report = _report(entry, result)
        if entry.synth is not None:
            report.oracle = oracle_figures(report, trace)
        reports.append(report)
    reports.sort(key=_worst_first)
    return SuiteResult(suite.name, reports, skipped)


ORACLE_LOAD_MINUTES = 1
"""The oracle's load time: a pre-warm must be loaded the minute before the request."""


def oracle_figures(report: TraceReport, trace: Any) -> dict[str, Any] | None:
    """The clairvoyant oracle (:mod:`tools.oracle`) at hybrid's wasted memory, and
    hybrid's and warmcast's (interpolated at that memory) cold starts against it."""
    try:
        hybrid = report.result.run("hybrid").score
    except KeyError:
        return None
    minutes = Usage.from_events(trace.events, t0=trace.t0).minutes
    cold, used = oracle_cold_starts(
        minutes,
        hybrid.wasted_minutes,
        train_minutes=report.entry.train_minutes,
        load_minutes=ORACLE_LOAD_MINUTES,
    )
    wc = None if report.ratio is None else report.ratio * hybrid.cold_starts
    return {
        "load_minutes": ORACLE_LOAD_MINUTES,
        "budget_wasted_minutes": hybrid.wasted_minutes,
        "oracle_wasted_minutes": used,
        "oracle_cold_starts": cold,
        "hybrid_cold_starts": hybrid.cold_starts,
        "hybrid_over_oracle": _div(hybrid.cold_starts, cold),
        "hybrid_minus_oracle": hybrid.cold_starts - cold,
        "warmcast_cold_starts_at_memory": wc,
        "warmcast_over_oracle": None if wc is None else _div(wc, cold),
        "warmcast_minus_oracle": None if wc is None else wc - cold,
    }


def _worst_first(report: TraceReport) -> tuple[int, float]:
    if report.ratio is None:
        return (0 if report.ratio_note != "no hybrid run" else 2, 0.0)
    return (1, -report.ratio)


# -------------------------------------------------------------------------------- output


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def summary_table(result: SuiteResult, knob: float = 1.0) -> str:
    """One line per trace, worst first: hybrid's and warmcast@``knob``'s three numbers
    and the ratio of cold starts at hybrid's memory."""
    header = ("trace", "kind", "policy", "cold_pct", "p75_cold", "wasted_norm", "cold/hybrid@mem",
              "oracle_cold@mem", "cold-oracle@mem")  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for rep in result.reports:
        labels = ["hybrid", f"warmcast@{knob:g}"]
        first = True
        for label in labels:
            try:
                run = rep.result.run(label)
            except KeyError:
                continue
            s = run.score
            norm = s.wasted_norm_pct
            rows.append(
                (
                    rep.entry.name if first else "",
                    rep.entry.kind if first else "",
                    label,
                    f"{s.cold_pct_overall:.3f}",
                    f"{s.p75_cold_pct:.2f}",
                    "-" if norm is None else f"{norm:.1f}",
                    _fmt_ratio(rep.ratio) if first else "",
                    *_oracle_cells(rep, label),
                )
            )
            first = False
    return _grid(rows)


def _oracle_cells(rep: TraceReport, label: str) -> tuple[str, str]:
    o = rep.oracle
    if o is None:
        return ("-", "-")
    key = "hybrid_minus_oracle" if label == "hybrid" else "warmcast_minus_oracle"
    over = o[key]
    return (str(o["oracle_cold_starts"]), "n/a" if over is None else f"{over:+.0f}")


def _grid(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(result: SuiteResult, out: TextIO, knob: float = 1.0) -> None:
    """The suite report: per trace (worst first) its table and knob ratios, then a
    summary and the skipped traces."""
    for rep in result.reports:
        info = rep.result.trace
        print(
            f"== {rep.entry.name} ({rep.entry.kind}; {info['models']} models, "
            f"{info['requests']} requests, minutes 0..{info['end_minute']}, train "
            f"{info['train_minutes']}): warmcast cold starts at hybrid's memory: "
            f"{_fmt_ratio(rep.ratio)} of hybrid's ({rep.ratio_note})",
            file=out,
        )
        print(format_table(rep.result.runs), file=out)
        ratios = knob_ratios(rep.result)
        if ratios:
            print(
                "  knob vs hybrid: "
                + "; ".join(
                    f"{r['knob']:g}: cold {_fmt_ratio(r['cold_ratio'])}, "
                    f"memory {_fmt_ratio(r['memory_ratio'])}"
                    for r in ratios
                ),
                file=out,
            )
        print(file=out)
    print(f"== suite {result.suite}: worst trace first (knob {knob:g})", file=out)
    if result.reports:
        print(summary_table(result, knob), file=out)
    for name, why in result.skipped.items():
        print(f"skipped {name}: {why}", file=out)


__all__ = [
    "Suite",
    "SuiteResult",
    "SuiteTrace",
    "TraceReport",
    "knob_ratios",
    "load_suite",
    "print_report",
    "ratio_at_memory",
    "run_suite",
    "summary_table",
]
