"""``warmcast backtest --maintenance SPEC``: what maintenance windows would cost on a trace.

Every policy runs twice over the trace, through the same partition step the workers run:
once as it is, once under the windows (:mod:`engine.maintenance`, the specs of
``WARMCAST_MAINTENANCE``). Both runs are scored alike (:mod:`tools.scoring`); the impact is
the difference:

- ``cold_starts_caused``: cold starts with the windows less those without (requests that
  found their model cold because its warm-up was held; under a memory budget, ``--capacity-*``,
  it may be negative: a held warm-up evicts nothing);
- ``memory_minutes_saved``: loaded model-minutes without the windows less those with them
  (memory time the held warm-ups did not take), and ``wasted_minutes_saved`` likewise of
  loaded minutes without a request;
- ``held`` warm leases held back, ``started_later`` those of them started in the window's
  last minutes or after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.maintenance import MaintenanceSchedule, Window, parse_windows
from tools.backtest import DEFAULT_KNOBS, Capacity, _plan, simulate
from tools.scoring import Score, Usage, score
from tools.traces import Trace


@dataclass(slots=True)
class PolicyImpact:
    """One policy (at one knob value) with and without the windows."""

    label: str
    policy_version: str
    without: Score
    within: Score
    held: int
    started_later: int

    @property
    def cold_starts_caused(self) -> int:
        return self.within.cold_starts - self.without.cold_starts

    @property
    def memory_minutes_saved(self) -> int:
        return self.without.loaded_minutes - self.within.loaded_minutes

    @property
    def wasted_minutes_saved(self) -> int:
        return self.without.wasted_minutes - self.within.wasted_minutes

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.label,
            "policy_version": self.policy_version,
            "cold_starts_caused": self.cold_starts_caused,
            "memory_minutes_saved": self.memory_minutes_saved,
            "wasted_minutes_saved": self.wasted_minutes_saved,
            "cold_starts": [self.without.cold_starts, self.within.cold_starts],
            "loaded_minutes": [self.without.loaded_minutes, self.within.loaded_minutes],
            "cold_pct_overall": [self.without.cold_pct_overall, self.within.cold_pct_overall],
            "held": self.held,
            "started_later": self.started_later,
        }


@dataclass(slots=True)
class MaintenanceImpact:
    """What :func:`assess` returns: the windows as they fall on the trace, and each policy."""

    windows: list[dict[str, Any]]
    policies: list[PolicyImpact]

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "policies": [p.to_dict() for p in self.policies]}

    def table(self) -> str:
        header = ["policy", "cold_starts_caused", "memory_min_saved", "wasted_min_saved"]
        header += ["cold_starts", "loaded_min", "held", "started_later"]
        rows = [header]
        for p in self.policies:
            rows.append(
                [
                    p.label,
                    str(p.cold_starts_caused),
                    str(p.memory_minutes_saved),
                    str(p.wasted_minutes_saved),
                    f"{p.without.cold_starts}->{p.within.cold_starts}",
                    f"{p.without.loaded_minutes}->{p.within.loaded_minutes}",
                    str(p.held),
                    str(p.started_later),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                [r[0].ljust(widths[0])]
                + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
            )
            for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        windows = "; ".join(
            f"{w['id']} ({w['mode']}, models {w['models']}): {len(w['occurrences'])} in the trace"
            for w in self.windows
        )
        return f"maintenance windows: {windows}\n" + "\n".join(lines)


def windows_of(specs: Sequence[str]) -> MaintenanceSchedule:
    """The windows of ``--maintenance`` specs (each one window; raises
    :class:`~engine.maintenance.WindowSpecError` naming the bad one)."""
    return MaintenanceSchedule(parse_windows(";".join(specs)))


def assess(
    trace: Trace,
    schedule: MaintenanceSchedule,
    policies: Sequence[str] | None = None,
    *,
    knobs: Sequence[float] = DEFAULT_KNOBS,
    train_minutes: int = 0,
    warmcast_config: Mapping[str, Any] | None = None,
    capacity: Capacity | None = None,
) -> MaintenanceImpact:
    """Run each policy over ``trace`` with and without the windows of ``schedule`` (under
    the memory budget of ``capacity`` both times, if given)."""
    usage = Usage.from_events(trace.events, t0=trace.t0)
    plain, _ = _plan(policies, knobs, warmcast_config)
    gated, _ = _plan(policies, knobs, warmcast_config)  # fresh learners for the second run

    def scored(commands: list[Any]) -> Score:
        return score(
            usage, commands, t0=trace.t0, end_minute=trace.end_minute, train_minutes=train_minutes
        )

    out: list[PolicyImpact] = []
    for (spec, knob, policy), (_, _, twin) in zip(plain, gated, strict=True):
        budget = capacity.budget(spec) if capacity is not None else None
        without, _ = simulate(policy, trace, budget=budget)
        budget = capacity.budget(spec) if capacity is not None else None
        within, engine = simulate(twin, trace, budget=budget, maintenance=schedule)
        stats = engine.stats
        label = spec if knob is None else f"{spec}@{knob:g}"
        out.append(
            PolicyImpact(
                label,
                policy.version,
                scored(without),
                scored(within),
                stats.maintenance_held,
                stats.maintenance_started,
            )
        )
    end = trace.end_ts
    windows = [_window_info(w, trace.t0, end) for w in schedule.windows.values()]
    return MaintenanceImpact(windows, out)


def _window_info(window: Window, since: float, until: float) -> dict[str, Any]:
    occurrences = [[_iso(start), _iso(end)] for start, end in window.occurrences(since, until)]
    return {
        "id": window.id,
        "spec": window.spec,
        "mode": window.mode,
        "models": window.models,
        "occurrences": occurrences,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


__all__ = ["MaintenanceImpact", "PolicyImpact", "assess", "windows_of"]
