"""``warmcast backtest``: run policies offline over a real trace and score their decisions.

Every policy run drives a fresh :class:`engine.partition.PartitionStep` (the very step
each Faust worker runs per partition) with each usage event, and each metric event when the
trace has them (load times, memory), in event-time order, and ``advance(end)`` once the
trace is over, then scores the commands it emitted,
and nothing else, with :mod:`tools.scoring` (definitions in docs/evaluation.md). The grid's
minute 0 starts at the trace's ``t0`` (the first request; Azure: 0 or ``--t0``).

``fixed:10`` is always run: wasted memory time is reported as a percentage of its own.
``warmcast`` is run once per value of its trade-off knob (``--knobs``), giving a curve.

``--commands OUT.jsonl`` writes every command of every run to one file, one WarmupCommand
JSON object a line, in the order issued within a run and the runs one after the other. The
run a command belongs to is its ``policy_version``: ``fixed-10/1``, ``hybrid/1``, the
warmcast policy's own version, and when that version would not tell knob values apart,
the version with ``+knob=<k>`` appended (set on the policy before the run, so that the
``command_id`` of each command is computed from the version written).

Under a memory budget (``capacity``, a :class:`Capacity`) every run's engine holds a
:class:`engine.budget.Budget` made for its policy (:func:`engine.registry.make_budget`),
and each run also reports byte-minutes loaded and wasted, the peak bytes loaded by lease
(never above the capacity) and its evictions. Sizes come from a sizes file
(:func:`tools.traces.read_sizes`); a model without one counts as the median of the known
sizes (1 GiB when none is known), and the trace's JSON says how many did.
:mod:`tools.capacity` sweeps capacities.

Python API: :func:`run_backtest`. The command line is :mod:`tools.backtest_cli`.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.budget import DEFAULT_SIZE_BYTES, Budget
from engine.capabilities import LearnsMetrics
from engine.core import WarmupEngine
from engine.lease import Command
from engine.maintenance import MaintenanceGate, MaintenanceSchedule
from engine.partition import PartitionStep
from engine.policies import Policy
from engine.registry import PolicyUnavailable, make_budget, make_policy
from engine.timebase import MinuteGrid
from tools.progress import Progress
from tools.scoring import (
    MemoryFigures,
    Score,
    Usage,
    command_tuples,
    memory_figures,
    normalise,
    score,
)
from tools.traces import Trace, load_trace, parse_time

DESCRIPTION = (
    "Replays a trace through the same warmup engine the workers run, one fresh engine per "
    "policy (and per warmcast knob value), and scores the warmup commands it issued: "
    "cold starts (p75 over models and overall) against wasted memory time, as a "
    "percentage of fixed:10's (docs/evaluation.md). Minute 0 starts at the first request "
    "(Azure per-minute files: at 0, or --t0)."
)
REFERENCE_POLICY = "fixed:10"
DEFAULT_POLICIES: tuple[str, ...] = ("fixed:10", "hybrid", "warmcast")
DEFAULT_KNOBS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_KNOBS_TEXT = " ".join(f"{k:g}" for k in DEFAULT_KNOBS)
_CHUNK = 8192  # events between progress updates
EVICTED = "evicted for "  # how the reason of a release forced by the budget begins


@dataclass(frozen=True, slots=True)
class Capacity:
    """A hard memory budget for every run: ``limit`` bytes loaded by lease at any minute,
    the served models ``sizes`` bytes each (``unit``: every model is 1 and ``limit`` counts
    models). A model without a size counts as ``default_size``.

    >>> c = Capacity.of_models(3)
    >>> c.limit, c.size_of("any"), c.describe()
    (3.0, 1.0, '3 models')
    """

    limit: float
    sizes: Mapping[str, float] = field(default_factory=dict)
    default_size: float = DEFAULT_SIZE_BYTES
    unit: bool = False

    @classmethod
    def of_models(cls, n: int) -> Capacity:
        if n < 1:
            raise ValueError("--capacity-models needs at least 1")
        return cls(float(n), {}, 1.0, unit=True)

    def size_of(self, model_id: str) -> float:
        size = self.sizes.get(model_id)
        return size if size is not None else self.default_size

    def budget(self, spec: str) -> Budget:
        """The budget of a run of ``spec``, every size known to it."""
        budget = make_budget(spec, self.limit, default_size=self.default_size)
        for model_id, size in self.sizes.items():
            budget.set_size(model_id, size)
        return budget

    def describe(self) -> str:
        if self.unit:
            return f"{self.limit:g} models"
        return f"{self.limit / 2**20:,.0f} MiB"


def default_size(sizes: Mapping[str, float], models: Iterable[str]) -> float:
    """The size a model without one counts as: the median of the known sizes of
    ``models`` (1 GiB when none is known).

    >>> default_size({"a": 1.0, "b": 5.0, "c": 9.0, "x": 100.0}, ["a", "b", "c", "d"])
    5.0
    """
    known = sorted(sizes[m] for m in models if m in sizes)
    return known[len(known) // 2] if known else DEFAULT_SIZE_BYTES


@dataclass(slots=True)
class PolicyRun:
    """One policy (at one knob value) over the trace, scored."""

    policy: str
    knob: float | None
    policy_version: str
    score: Score
    commands: int
    runtime_seconds: float
    memory: MemoryFigures | None = None
    evictions: int = 0

    @property
    def label(self) -> str:
        """``fixed:10``, ``hybrid``, ``warmcast@1``.

        >>> from tools.scoring import Score
        >>> s = Score(0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
        >>> PolicyRun("warmcast", 0.5, "w/1", s, 0, 0.0).label
        'warmcast@0.5'
        """
        return self.policy if self.knob is None else f"{self.policy}@{self.knob:g}"

    def to_dict(self) -> dict[str, Any]:
        s = self.score
        return {
            "policy": self.policy,
            "knob": self.knob,
            "policy_version": self.policy_version,
            "p75_cold_pct": s.p75_cold_pct,
            "cold_pct_overall": s.cold_pct_overall,
            "wasted_norm_pct": s.wasted_norm_pct,
            "cold_starts": s.cold_starts,
            "requests": s.requests,
            "wasted_minutes": s.wasted_minutes,
            "loaded_minutes": s.loaded_minutes,
            "requested_minutes": s.requested_minutes,
            "warm_minutes": s.warm_minutes,
            "models": s.models,
            "precision": s.precision,
            "recall": s.recall,
            "commands": self.commands,
            "runtime_seconds": self.runtime_seconds,
            **(
                {**self.memory.to_dict(), "evictions": self.evictions}
                if self.memory is not None
                else {}
            ),
        }


@dataclass(slots=True)
class BacktestResult:
    """What :func:`run_backtest` returns: the trace, the reference run and every run asked."""

    trace: dict[str, Any]
    reference: PolicyRun
    runs: list[PolicyRun]
    skipped_policies: dict[str, str] = field(default_factory=dict)

    def run(self, label: str) -> PolicyRun:
        """The run labelled ``label`` (``fixed:10``, ``hybrid``, ``warmcast@1``)."""
        for r in self.runs:
            if r.label == label:
                return r
        if label == self.reference.label:
            return self.reference
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "reference_policy": self.reference.policy,
            "reference_wasted_minutes": self.reference.score.wasted_minutes,
            "policies": [r.to_dict() for r in self.runs],
            "skipped_policies": self.skipped_policies,
        }

    def table(self) -> str:
        return format_table(self.runs)


# ------------------------------------------------------------------------------ simulation


def simulate(
    policy: Policy,
    trace: Trace,
    *,
    progress: Progress | None = None,
    budget: Budget | None = None,
    sizes: Mapping[str, float] | None = None,
    maintenance: MaintenanceSchedule | None = None,
) -> tuple[list[Command], WarmupEngine]:
    """Drive a fresh partition step with every event of ``trace`` (its metric events
    before the usage events of the same time, as they were measured then); the commands it
    emitted, and its engine (holding ``budget``, and under the ``maintenance`` windows, if
    given). ``sizes`` (bytes) reach a policy that learns from metric events as
    ``memory_bytes`` measurements before the first event, as a fleet that reports its
    models' sizes would have them."""
    if sizes and isinstance(policy, LearnsMetrics):
        for model_id, size in sizes.items():
            policy.observe_metric(model_id, "memory_bytes", size)
    engine = WarmupEngine(policy, grid=MinuteGrid(origin=trace.t0), budget=budget)
    if maintenance is not None:
        engine.maintenance = MaintenanceGate(maintenance, engine.grid)
    step = PartitionStep(engine)
    observe = step.observe
    metrics = trace.metrics
    m, n_metrics = 0, len(metrics)
    commands: list[Command] = []
    extend = commands.extend
    events = trace.events
    for i in range(0, len(events), _CHUNK):
        chunk = events[i : i + _CHUNK]
        for ts, model_id, count in chunk:
            while m < n_metrics and metrics[m].ts <= ts:
                step.feed_metric(metrics[m])
                m += 1
            out = observe(model_id, ts, count)
            if out:
                extend(out)
        if progress is not None:
            progress.update(len(chunk))
    for point in metrics[m:]:
        step.feed_metric(point)
    commands.extend(step.engine.advance(trace.end_ts))
    return commands, step.engine


def _plan(
    policies: Sequence[str] | None,
    knobs: Sequence[float],
    warmcast_config: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[str, float | None, Policy]], dict[str, str]]:
    """Build every policy object of the runs asked for (each run gets a fresh one)."""
    explicit = policies is not None
    specs: list[str] = []
    for spec in policies if policies is not None else DEFAULT_POLICIES:
        name = spec.strip().lower()
        if name not in specs:
            specs.append(name)
    plan: list[tuple[str, float | None, Policy]] = []
    skipped: dict[str, str] = {}
    for spec in specs:
        if spec == "warmcast":
            try:
                config = dict(warmcast_config or {})
                runs = [(spec, float(k), make_policy(spec, knob=float(k), **config)) for k in knobs]
            except PolicyUnavailable as exc:
                if explicit:
                    raise
                skipped[spec] = str(exc)
                continue
            versions = [p.version for _, _, p in runs]
            if len(set(versions)) < len(versions):
                for _, k, p in runs:
                    try:
                        p.version = f"{p.version}+knob={k:g}"
                    except AttributeError:
                        warnings.warn(
                            f"cannot tell {spec} runs apart in the commands file: its "
                            "policy_version is read-only and the same for every knob",
                            stacklevel=2,
                        )
                        break
            plan.extend(runs)
        else:
            plan.append((spec, None, make_policy(spec)))
    return plan, skipped


def run_backtest(
    trace: Trace | str | os.PathLike[str],
    policies: Sequence[str] | None = None,
    *,
    knobs: Sequence[float] = DEFAULT_KNOBS,
    train_minutes: int = 0,
    fmt: str = "auto",
    time_col: str | None = None,
    model_col: str | None = None,
    time_format: str = "auto",
    count_col: str | None = None,
    t0: float | None = None,
    missing_model: str | None = None,
    commands_path: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    warmcast_config: Mapping[str, Any] | None = None,
    capacity: Capacity | None = None,
    sizes: Mapping[str, float] | None = None,
    plan_with_sizes: bool = True,
) -> BacktestResult:
    """Run and score policies over a trace.

    ``trace`` is a loaded :class:`~tools.traces.Trace` or a path (loaded with
    :func:`~tools.traces.load_trace` and the format/mapping arguments). ``policies`` are
    specs for :func:`engine.registry.make_policy` (default ``fixed:10 hybrid warmcast``;
    with the default list a warmcast policy that cannot be imported yet is skipped and
    reported in ``skipped_policies``, named explicitly it raises). ``warmcast`` runs once
    per ``knobs`` value. ``commands_path`` writes every command as JSONL (see the module
    docstring). ``progress``: draw a bar on stderr (default: when stderr is a terminal).
    ``warmcast_config``: settings of the warmcast policy (``engine.warmcast.WarmcastConfig``
    names) for every knob value. ``capacity``: a memory budget for every run (see the
    module docstring); ``sizes`` (bytes per model) without a capacity adds the byte-weighted
    memory figures to every run. The sizes known (of ``capacity`` or ``sizes``) reach the
    policies that learn from metric events unless ``plan_with_sizes`` is false.
    """
    if isinstance(trace, str | os.PathLike):
        mapping = {"time_col": time_col, "model_col": model_col, "count_col": count_col}
        trace = load_trace(
            trace, fmt, **mapping, time_format=time_format, t0=t0, missing_model=missing_model
        )
    if train_minutes < 0:
        raise ValueError("train_minutes must not be negative")
    plan, skipped = _plan(policies, knobs, warmcast_config)
    reference_asked = any(spec == REFERENCE_POLICY for spec, _, _ in plan)
    if not reference_asked:
        plan.insert(0, (REFERENCE_POLICY, None, make_policy(REFERENCE_POLICY)))
    plan.sort(key=lambda run: run[0] != REFERENCE_POLICY)  # reference first, stable
    usage = Usage.from_events(trace.events, t0=trace.t0)
    weigh = capacity
    if capacity is None and sizes is not None:
        weigh = Capacity(0.0, dict(sizes), default_size(sizes, usage.minutes))

    sink = open(commands_path, "wb") if commands_path is not None else None  # noqa: SIM115
    runs: list[PolicyRun] = []
    known = weigh.sizes if weigh is not None and plan_with_sizes else None
    try:
        for spec, knob, policy in plan:
            budget = capacity.budget(spec) if capacity is not None else None
            run = _one_run(
                spec,
                knob,
                policy,
                trace,
                usage,
                train_minutes,
                budget,
                known,
                weigh,
                sink,
                progress,
            )
            runs.append(run)
    finally:
        if sink is not None:
            sink.close()
    first = runs[0].score
    runs = [replace(r, score=normalise(r.score, first)) for r in runs]
    reference = runs[0]
    if not reference_asked:
        runs = runs[1:]
    info = trace_info(trace, train_minutes, reference.score)
    if weigh is not None:
        info.update(sizes_info(weigh, usage.minutes, capacity is not None))
    return BacktestResult(
        trace=info,
        reference=reference,
        runs=runs,
        skipped_policies=skipped,
    )


def _one_run(
    spec: str,
    knob: float | None,
    policy: Policy,
    trace: Trace,
    usage: Usage,
    train_minutes: int,
    budget: Budget | None,
    sizes: Mapping[str, float] | None,
    weigh: Capacity | None,
    sink: Any,
    progress: bool | None,
) -> PolicyRun:
    """One policy over the trace: simulated with ``budget`` and the ``sizes`` it may plan
    with, scored (by bytes too with ``weigh``), its commands written to ``sink``."""
    bar = Progress(
        len(trace.events), spec if knob is None else f"{spec}@{knob:g}", enabled=progress
    )
    started = time.perf_counter()
    with bar:
        commands, _ = simulate(policy, trace, progress=bar, budget=budget, sizes=sizes)
    tuples = command_tuples(commands)
    t0, end = trace.t0, trace.end_minute
    result = score(usage, tuples, t0=t0, end_minute=end, train_minutes=train_minutes)
    memory = None
    if weigh is not None:
        memory = memory_figures(
            usage, tuples, weigh.size_of, t0=t0, end_minute=end, train_minutes=train_minutes
        )
    evictions = sum(1 for c in commands if c.reason.startswith(EVICTED))
    elapsed = time.perf_counter() - started
    if sink is not None:
        _write_commands(sink, commands)
    return PolicyRun(spec, knob, policy.version, result, len(commands), elapsed, memory, evictions)


def _write_commands(sink: Any, commands: Iterable[Command]) -> None:
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    sink.write(b"".join(dumps(c.to_dict(), option=opt) for c in commands))


def trace_info(trace: Trace, train_minutes: int, reference: Score) -> dict[str, Any]:
    """What the JSON says about the trace and the train/score split."""
    info: dict[str, Any] = {
        "path": trace.path,
        "format": trace.fmt,
        "t0": trace.t0,
        "t0_utc": _iso(trace.t0),
        "end_minute": trace.end_minute,
        "end": trace.end_ts,
        "end_utc": _iso(trace.end_ts),
        "minutes": trace.end_minute + 1,
        "train_minutes": train_minutes,
        "score_minutes": [train_minutes, trace.end_minute],
        "models": trace.models,
        "events": len(trace.events),
        "requests": trace.requests,
        "scored_models": reference.models,
        "scored_requests": reference.requests,
        "train_requests": trace.requests - reference.requests,
        "skipped_rows": trace.skipped,
    }
    return info


def sizes_info(weigh: Capacity, models: Iterable[str], budget: bool) -> dict[str, Any]:
    """What the JSON says about the models' sizes and the budget."""
    models = list(models)
    unsized = sum(1 for m in models if m not in weigh.sizes)
    info: dict[str, Any] = {
        "unit_sizes": weigh.unit,
        "sized_models": 0 if weigh.unit else len(models) - unsized,
        "default_sized_models": 0 if weigh.unit else unsized,
        "default_size_bytes": weigh.default_size,
        "fleet_bytes": sum(weigh.size_of(m) for m in models),
    }
    if budget:
        info["capacity_bytes"] = weigh.limit
    return info


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# ---------------------------------------------------------------------------------- output


def format_table(runs: Sequence[PolicyRun]) -> str:
    """The runs as a plain-text table (the numbers as docs/evaluation.md shows them)."""
    header: tuple[str, ...] = (
        "policy",
        "p75_cold_pct",
        "cold_pct_overall",
        "wasted_norm_pct",
        "cold_starts",
        "requests",
        "wasted_min",
        "precision",
        "recall",
        "commands",
        "runtime_s",
    )
    weighed = any(r.memory is not None for r in runs)
    if weighed:
        header = (*header, "wasted_GiB_min", "peak_GiB", "evictions")
    rows: list[tuple[str, ...]] = [header]
    for r in runs:
        s = r.score
        norm = s.wasted_norm_pct
        rows.append(
            (
                r.label,
                f"{s.p75_cold_pct:.2f}",
                f"{s.cold_pct_overall:.3f}",
                "-" if norm is None else f"{norm:.1f}",
                str(s.cold_starts),
                str(s.requests),
                str(s.wasted_minutes),
                f"{s.precision:.3f}",
                f"{s.recall:.4f}",
                str(r.commands),
                f"{r.runtime_seconds:.2f}",
            )
        )
        if weighed:
            m = r.memory
            rows[-1] = (
                *rows[-1],
                "-" if m is None else f"{m.wasted_byte_minutes / 2**30:,.1f}",
                "-" if m is None else f"{m.peak_loaded_bytes / 2**30:,.2f}",
                str(r.evictions),
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(result: BacktestResult, path: str | os.PathLike[str]) -> None:
    """Cold starts against wasted memory time: overall (left) and p75 per model (right).

    Every run is a point; fixed:K runs (with the fixed:10 reference) form a curve over K,
    warmcast runs a curve over their knob.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(result.runs)
    if all(r.label != result.reference.label for r in runs):
        runs.append(result.reference)
    fixed = sorted((r for r in runs if r.policy.startswith("fixed:")), key=_keepalive)
    warm = sorted((r for r in runs if r.policy == "warmcast"), key=lambda r: r.knob or 0.0)
    others = [r for r in runs if r not in fixed and r not in warm]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = (
        ("cold_pct_overall", "cold starts, % of requests"),
        ("p75_cold_pct", "p75 over models of cold-start %"),
    )
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):

        def xy(rs: Sequence[PolicyRun], metric: str = metric) -> tuple[list[float], list[float]]:
            return [r.score.wasted_norm_pct or 0.0 for r in rs], [
                float(getattr(r.score, metric)) for r in rs
            ]

        if fixed:
            xs, ys = xy(fixed)
            ax.plot(xs, ys, "o-", color="tab:gray", label="fixed keep-alive")
            for r, x, y in zip(fixed, xs, ys, strict=True):
                ax.annotate(
                    r.policy.partition(":")[2],
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                    color="tab:gray",
                )
        if warm:
            xs, ys = xy(warm)
            ax.plot(xs, ys, "s-", color="tab:blue", label="warmcast (knob)")
            for r, x, y in zip(warm, xs, ys, strict=True):
                ax.annotate(
                    f"{r.knob:g}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=8,
                    color="tab:blue",
                )
        colours = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown")
        for n, r in enumerate(others):
            xs, ys = xy([r])
            marker, colour = "D^v<>PX*"[n % 8], colours[n % len(colours)]
            ax.plot(xs, ys, marker, color=colour, markersize=8, label=r.label)
        ax.set_xlabel("wasted memory time, % of fixed:10")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(result.trace['path']).name}: train {result.trace['train_minutes']} min")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _keepalive(run: PolicyRun) -> int:
    try:
        return int(run.policy.partition(":")[2])
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------- CLI


def _t0_arg(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {value!r} (epoch seconds or ISO 8601)"
        ) from None


def key_value_arg(value: str) -> tuple[str, Any]:
    """An argparse type for ``KEY=VALUE`` (VALUE as JSON, else the plain string).

    >>> key_value_arg("min-periods=4"), key_value_arg("name=abc")
    (('min_periods', 4), ('name', 'abc'))
    """
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {value!r}")
    try:
        return key.replace("-", "_"), orjson.loads(raw)
    except orjson.JSONDecodeError:
        return key.replace("-", "_"), raw


__all__ = [
    "DEFAULT_KNOBS",
    "DEFAULT_POLICIES",
    "BacktestResult",
    "PolicyRun",
    "format_table",
    "key_value_arg",
    "plot",
    "run_backtest",
    "simulate",
]
