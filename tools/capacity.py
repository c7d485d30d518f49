"""``warmcast backtest --capacities``: cold starts against a hard memory budget.

For each capacity, a share of the fleet's total size (the sum of every served model's
size in the trace), every policy runs over the trace under the same budget
(:class:`tools.backtest.Capacity`); the sweep reports each run's cold starts, byte-minutes
wasted, peak bytes loaded (never above the capacity) and evictions, and per capacity the
ratio of warmcast's cold starts to the best baseline's (lowest of ``lru``, ``gdsf`` and
``hybrid+lru``). Under a budget memory that is free costs nothing, so at a capacity the
score is the cold starts; at one where every model fits, only first requests are cold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.backtest import Capacity, PolicyRun, default_size, run_backtest
from tools.traces import Trace

SWEEP_POLICIES: tuple[str, ...] = ("lru", "gdsf", "hybrid+lru", "warmcast")
BASELINES: tuple[str, ...] = ("lru", "gdsf", "hybrid+lru")
DEFAULT_SHARES: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)


def share_arg(text: str) -> float:
    """A capacity as a share of the fleet's size: ``25%`` or ``0.25``.

    >>> share_arg("25%"), share_arg("0.5"), share_arg("100%")
    (0.25, 0.5, 1.0)
    """
    value = text.strip()
    share = float(value[:-1]) / 100.0 if value.endswith("%") else float(value)
    if not 0.0 < share <= 10.0:
        raise ValueError(f"bad capacity {text!r}: a share of the fleet's size, e.g. 25%")
    return share


@dataclass(slots=True)
class SweepPoint:
    """Every policy's run at one capacity."""

    share: float
    capacity: Capacity
    runs: list[PolicyRun]

    def run(self, label: str) -> PolicyRun:
        return next(r for r in self.runs if r.label == label or r.policy == label)

    def best_baseline(self) -> PolicyRun | None:
        baselines = [r for r in self.runs if r.policy in BASELINES]
        return min(baselines, key=lambda r: r.score.cold_starts) if baselines else None

    def warmcast_ratio(self) -> float | None:
        """warmcast's cold starts over the best baseline's (``None`` if either is missing)."""
        best = self.best_baseline()
        warm = [r for r in self.runs if r.policy == "warmcast"]
        if best is None or not warm:
            return None
        return warm[0].score.cold_starts / max(best.score.cold_starts, 1)

    def to_dict(self) -> dict[str, Any]:
        best = self.best_baseline()
        return {
            "share": self.share,
            "capacity_bytes": self.capacity.limit,
            "capacity": self.capacity.describe(),
            "best_baseline": best.label if best is not None else None,
            "warmcast_to_best_baseline": self.warmcast_ratio(),
            "policies": [r.to_dict() for r in self.runs],
        }


@dataclass(slots=True)
class SweepResult:
    trace: dict[str, Any]
    fleet_bytes: float
    points: list[SweepPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "fleet_bytes": self.fleet_bytes,
            "capacities": [p.to_dict() for p in self.points],
        }


def run_sweep(
    trace: Trace,
    shares: Sequence[float] = DEFAULT_SHARES,
    *,
    policies: Sequence[str] = SWEEP_POLICIES,
    sizes: Mapping[str, float] | None = None,
    unit: bool = False,
    knob: float = 1.0,
    train_minutes: int = 0,
    warmcast_config: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run ``policies`` under a budget of each share of the fleet's size. ``unit``: every
    model is size 1 (the capacity counts models; ``sizes`` is ignored)."""
    models = sorted({model_id for _, model_id, _ in trace.events})
    known = {} if unit or sizes is None else dict(sizes)
    fallback = 1.0 if unit else default_size(known, models)
    fleet = sum(known.get(m, fallback) for m in models)
    result = SweepResult(trace={}, fleet_bytes=fleet)
    for share in shares:
        if unit:
            capacity = Capacity.of_models(max(1, round(share * len(models))))
        else:
            capacity = Capacity(share * fleet, known, fallback)
        run = run_backtest(
            trace,
            list(policies),
            knobs=(knob,),
            train_minutes=train_minutes,
            warmcast_config=warmcast_config,
            capacity=capacity,
            progress=progress,
        )
        result.trace = run.trace
        result.points.append(SweepPoint(share, capacity, list(run.runs)))
    return result


def sweep_table(result: SweepResult) -> str:
    """Cold starts per policy (columns) and capacity (rows), with warmcast's ratio to the
    best baseline; then byte-minutes wasted and evictions."""
    if not result.points:
        return "(no capacities)"
    labels = [r.label for r in result.points[0].runs]
    header = ("capacity", *labels, "warmcast/best")
    rows: list[tuple[str, ...]] = [header]
    for p in result.points:
        ratio = p.warmcast_ratio()
        rows.append(
            (
                f"{p.share:.0%} ({p.capacity.describe()})",
                *(str(r.score.cold_starts) for r in p.runs),
                "-" if ratio is None else f"{ratio:.2f}x",
            )
        )
    unit = "model" if result.points[0].capacity.unit else "GiB"
    lines = [_grid(rows), "", f"wasted {unit}-minutes / peak loaded share of capacity / evictions"]
    rows = [("capacity", *labels)]
    for p in result.points:
        cells = []
        for r in p.runs:
            m = r.memory
            if m is None:
                cells.append("-")
                continue
            scale = 1.0 if p.capacity.unit else 2**30
            peak = m.peak_loaded_bytes / p.capacity.limit
            cells.append(f"{m.wasted_byte_minutes / scale:,.0f} / {peak:.2f} / {r.evictions}")
        rows.append((f"{p.share:.0%}", *cells))
    lines.append(_grid(rows))
    return "\n".join(lines)


def _grid(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append(
            "  ".join(
                [row[0].ljust(widths[0])]
                + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot_sweep(result: SweepResult, path: str | os.PathLike[str]) -> None:
    """Cold starts against capacity (share of the fleet's size), one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if result.points:
        labels = [r.label for r in result.points[0].runs]
        shares = [100.0 * p.share for p in result.points]
        for label in labels:
            ys = [p.run(label).score.cold_starts for p in result.points]
            style = "s-" if label.startswith("warmcast") else "o--"
            ax.plot(shares, ys, style, label=label)
    ax.set_xlabel("capacity, % of the fleet's total size")
    ax.set_ylabel("cold starts")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    name = Path(str(result.trace.get("path", ""))).name
    ax.set_title(f"{name}: cold starts under a memory budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "DEFAULT_SHARES",
    "SWEEP_POLICIES",
    "plot_sweep",
    "run_sweep",
    "share_arg",
    "sweep_table",
]
