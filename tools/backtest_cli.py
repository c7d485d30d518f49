"""``warmcast backtest``: the command line of :mod:`tools.backtest` and of suites
(:mod:`tools.suite`, ``--suite SUITE``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from engine.maintenance import MaintenanceSchedule
from engine.registry import PolicyUnavailable
from tools.backtest import (
    _KNOBS_TEXT,
    DEFAULT_KNOBS,
    DESCRIPTION,
    Capacity,
    _t0_arg,
    default_size,
    key_value_arg,
    plot,
    run_backtest,
)
from tools.capacity import SWEEP_POLICIES, plot_sweep, run_sweep, share_arg, sweep_table
from tools.maintenance_impact import MaintenanceImpact, assess, windows_of
from tools.suite import load_suite, print_report, run_suite
from tools.traces import Trace, load_trace, read_sizes


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``backtest`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "backtest",
        help="run policies offline over a trace and score their warmup decisions",
        description=DESCRIPTION,
    )
    p.add_argument("path", nargs="?", help="trace file (plain or gzip)")
    p.add_argument(
        "--suite",
        metavar="SUITE",
        help="instead of one trace: every trace of a suite file (TOML or JSON; see "
        "tools/suites/), worst trace first, with warmcast's cold starts against hybrid's "
        "at hybrid's wasted memory",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("auto", "azure", "csv", "jsonl"),
        default="auto",
        help="trace layout (default: sniffed)",
    )
    p.add_argument("--time-col", help="CSV: time column (default: gmt_create, ts, ...)")
    p.add_argument(
        "--model-col",
        help="CSV: model column (default: checkpoint_model_version_id, model_id, ...)",
    )
    p.add_argument("--count-col", help="CSV: column with a request count per row (default 1)")
    p.add_argument(
        "--time-format",
        default="auto",
        help="CSV: s, ms, iso or a strptime format (default: auto; naive = UTC)",
    )
    p.add_argument(
        "--missing-model",
        metavar="ID",
        help="CSV: count rows without a model id as model ID instead of skipping them",
    )
    p.add_argument(
        "--t0",
        type=_t0_arg,
        help="start of minute 0 (epoch s or ISO; default: Azure 0, else the first request)",
    )
    p.add_argument(
        "--policy",
        nargs="+",
        metavar="SPEC",
        help="warmcast, hybrid, fixed:K (default: fixed:10 hybrid warmcast)",
    )
    p.add_argument(
        "--knobs",
        nargs="+",
        type=float,
        default=list(DEFAULT_KNOBS),
        help=f"warmcast trade-off knob values (default: {_KNOBS_TEXT})",
    )
    p.add_argument(
        "--train-minutes",
        type=int,
        default=0,
        metavar="N",
        help="learn from minutes before N, score from N on (default 0)",
    )
    p.add_argument(
        "--warmcast-param",
        action="append",
        type=key_value_arg,
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the warmcast policy for every knob value (JSON value), e.g. "
        "--warmcast-param min_periods=4",
    )
    memory = p.add_argument_group("memory budget")
    memory.add_argument(
        "--sizes",
        metavar="CSV",
        help="model sizes: model_id,bytes (or memory_mb, or the Azure 2019 memory file's "
        "HashApp,AverageAllocatedMb); adds byte-minutes and peak bytes to every run",
    )
    memory.add_argument(
        "--capacity-mb",
        type=float,
        metavar="X",
        help="a hard budget: at most X MiB loaded by lease at any minute (with --sizes; "
        "a model without a size counts as the median of the known sizes)",
    )
    memory.add_argument(
        "--capacity-models",
        type=int,
        metavar="N",
        help="a hard budget of N models, every model of size 1",
    )
    memory.add_argument(
        "--capacities",
        nargs="+",
        type=share_arg,
        metavar="SHARE",
        help="a capacity sweep: each SHARE of the fleet's total size (e.g. 10%% 25%% 50%% "
        f"100%%), policies {' '.join(SWEEP_POLICIES)} unless --policy, warmcast at knob 1 (or "
        "the first --knobs value); without --sizes, or with --capacity-models, the shares "
        "count models",
    )
    p.add_argument(
        "--maintenance",
        action="append",
        default=[],
        metavar="SPEC",
        help="also run each policy under this maintenance window (repeatable; the spec of "
        "WARMCAST_MAINTENANCE, e.g. 'cron=0 2 * * SUN,duration=90m,models=llama-*') and "
        "report the cold starts it causes and the memory time it saves",
    )
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--commands", metavar="OUT.jsonl", help="write every command (JSONL)")
    p.add_argument("--plot", metavar="OUT.png", help="plot cold starts vs wasted memory")
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``backtest`` subcommand from parsed arguments; the exit status."""
    out = stdout if stdout is not None else sys.stdout
    if (args.path is None) == (getattr(args, "suite", None) is None):
        print("warmcast backtest: give a trace file or --suite SUITE (not both)", file=sys.stderr)
        return 2
    if args.suite is not None:
        return _suite_command(args, out)
    if args.capacity_mb is not None and args.capacity_models is not None:
        print("warmcast backtest: --capacity-mb or --capacity-models, not both", file=sys.stderr)
        return 2
    try:
        schedule = windows_of(args.maintenance) if args.maintenance else None
        trace = load_trace(
            args.path,
            args.fmt,
            time_col=args.time_col,
            model_col=args.model_col,
            time_format=args.time_format,
            count_col=args.count_col,
            t0=args.t0,
            missing_model=args.missing_model,
        )
        sizes = read_sizes(args.sizes) if args.sizes else None
        if args.capacities:
            return _sweep_command(args, trace, sizes, out)
        result = run_backtest(
            trace,
            args.policy,
            knobs=args.knobs,
            train_minutes=args.train_minutes,
            commands_path=args.commands,
            warmcast_config=dict(args.warmcast_param),
            capacity=_capacity(args, trace, sizes),
            sizes=sizes,
        )
        impact = None if schedule is None else _impact(args, trace, schedule, sizes)
    except (OSError, ValueError, TypeError, PolicyUnavailable) as exc:
        print(f"warmcast backtest: {exc}", file=sys.stderr)
        return 2
    for name, why in result.skipped_policies.items():
        print(f"warmcast backtest: skipped {name}: {why}", file=sys.stderr)
    _describe_trace(result.trace, out)
    print(result.table(), file=out)
    doc = result.to_dict()
    if impact is not None:
        print(impact.table(), file=out)
        doc["maintenance"] = impact.to_dict()
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if args.plot:
        plot(result, args.plot)
    return 0


def _impact(
    args: argparse.Namespace,
    trace: Trace,
    schedule: MaintenanceSchedule,
    sizes: dict[str, float] | None,
) -> MaintenanceImpact:
    """What the maintenance windows of ``schedule`` cost the policies of ``args``."""
    return assess(
        trace,
        schedule,
        args.policy,
        knobs=args.knobs,
        train_minutes=args.train_minutes,
        warmcast_config=dict(args.warmcast_param),
        capacity=_capacity(args, trace, sizes),
    )


def _describe_trace(info: dict[str, Any], out: TextIO) -> None:
    """The trace's line: its models, requests, minutes, what is scored, the rows skipped."""
    skipped_rows = ", ".join(f"{why}: {n}" for why, n in info["skipped_rows"].items())
    print(
        f"{info['path']} ({info['format']}): {info['models']} models, {info['requests']} "
        f"requests, minutes 0..{info['end_minute']} from t0 {info['t0_utc']}; scored minutes "
        f"{info['train_minutes']}..{info['end_minute']}: {info['scored_requests']} requests"
        f" of {info['scored_models']} models"
        + (f"; skipped rows: {skipped_rows}" if skipped_rows else ""),
        file=out,
    )
    if "missing model id" in info["skipped_rows"]:
        print(
            "  (--missing-model ID counts rows without a model id as one more served model, "
            "as the reference numbers of docs/evaluation.md do)",
            file=out,
        )


def _capacity(
    args: argparse.Namespace, trace: Trace, sizes: dict[str, float] | None
) -> Capacity | None:
    if args.capacity_models is not None:
        return Capacity.of_models(args.capacity_models)
    if args.capacity_mb is None:
        return None
    if not args.capacity_mb > 0:
        raise ValueError("--capacity-mb must be positive")
    known = sizes or {}
    models = {model_id for _, model_id, _ in trace.events}
    return Capacity(args.capacity_mb * 2**20, known, default_size(known, models))


def _sweep_command(
    args: argparse.Namespace, trace: Trace, sizes: dict[str, float] | None, out: TextIO
) -> int:
    result = run_sweep(
        trace,
        args.capacities,
        policies=args.policy or SWEEP_POLICIES,
        sizes=sizes,
        unit=args.capacity_models is not None or sizes is None,
        knob=args.knobs[0] if args.knobs != list(DEFAULT_KNOBS) else 1.0,
        train_minutes=args.train_minutes,
        warmcast_config=dict(args.warmcast_param),
    )
    info = result.trace
    unit = "models" if info.get("unit_sizes") else "bytes"
    print(
        f"{info['path']}: {info['models']} models, fleet size {result.fleet_bytes:,.0f} {unit}"
        + (
            f", {info['default_sized_models']} of them without a size (counted as "
            f"{info['default_size_bytes'] / 2**20:,.0f} MiB)"
            if info.get("default_sized_models")
            else ""
        ),
        file=out,
    )
    print(sweep_table(result), file=out)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    if args.plot:
        plot_sweep(result, args.plot)
    return 0


def _suite_command(args: argparse.Namespace, out: TextIO) -> int:
    explicit_knobs = args.knobs != list(DEFAULT_KNOBS)
    try:
        suite = load_suite(args.suite)
        result = run_suite(
            suite,
            policies=args.policy,
            knobs=args.knobs if explicit_knobs else None,
            warmcast_config=dict(args.warmcast_param),
        )
    except (OSError, ValueError, TypeError, PolicyUnavailable) as exc:
        print(f"warmcast backtest: {exc}", file=sys.stderr)
        return 2
    print_report(result, out)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    if not result.reports:
        print("warmcast backtest: every trace of the suite was skipped", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.backtest_cli PATH ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["backtest", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["command", "main", "register"]
