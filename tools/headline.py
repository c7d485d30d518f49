"""The demo's headline: warmcast against hybrid and against a fixed keep-alive at equal
memory, from the backtest of the demo's slice.

A cold-start count alone cannot be judged without the memory it costs, so the headline
compares at equal wasted memory time (model-minutes loaded without requests):

- **vs hybrid**: warmcast's cold starts at hybrid's wasted memory, read off warmcast's knob
  curve by linear interpolation (:func:`tools.suite.ratio_at_memory`), over hybrid's;
- **vs fixed keep-alive**: the shortest fixed keep-alive that has no more cold starts than
  warmcast at its knob, and the wasted memory that costs against warmcast's; and the fixed
  keep-alive curve's cold starts at warmcast's wasted memory (interpolated between the
  keep-alive minutes tried).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tools.backtest import DEFAULT_KNOBS, run_backtest
from tools.suite import ratio_at_memory
from tools.traces import Trace

#: Fixed keep-alive minutes tried when matching warmcast's cold starts.
FIXED_MINUTES: tuple[int, ...] = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360)


@dataclass(frozen=True, slots=True)
class Headline:
    """What the demo's headline says, in cold starts and wasted model-minutes."""

    knob: float
    cold_starts: int
    wasted_minutes: int
    hybrid_cold_starts: int
    hybrid_wasted_minutes: int
    ratio_at_hybrid_memory: float | None  # warmcast's curve at hybrid's memory / hybrid
    ratio_note: str
    fixed_minutes: int | None  # shortest fixed keep-alive with no more cold starts
    fixed_cold_starts: int | None
    fixed_wasted_minutes: int | None
    fixed_cold_at_memory: float | None = None  # fixed keep-alive's curve at warmcast's memory

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The headline, one line per comparison.

        >>> h = Headline(1.0, 50, 1000, 100, 1200, 0.42, "interpolated", 60, 48, 3000)
        >>> print(h.text())
        warmcast vs hybrid at equal memory: 0.42x hybrid's cold starts (hybrid 100 cold starts, 1,200 wasted model-minutes)
        fixed keep-alive would need 60 min to match warmcast's 50 cold starts: 3,000 wasted model-minutes, 3.00x warmcast's 1,000
        """  # noqa: E501
        if self.ratio_at_hybrid_memory is None:
            vs_hybrid = f"warmcast vs hybrid at equal memory: no reading ({self.ratio_note})"
        else:
            vs_hybrid = (
                f"warmcast vs hybrid at equal memory: {self.ratio_at_hybrid_memory:.2f}x "
                "hybrid's cold starts"
            )
            if self.ratio_note != "interpolated":
                vs_hybrid += f" ({self.ratio_note})"
        vs_hybrid += (
            f" (hybrid {self.hybrid_cold_starts:,} cold starts, "
            f"{self.hybrid_wasted_minutes:,} wasted model-minutes)"
        )
        if self.fixed_minutes is None or self.fixed_wasted_minutes is None:
            vs_fixed = (
                f"no fixed keep-alive up to {FIXED_MINUTES[-1]} min matches warmcast's "
                f"{self.cold_starts:,} cold starts"
            )
        else:
            times = _times(self.fixed_wasted_minutes, self.wasted_minutes)
            vs_fixed = (
                f"fixed keep-alive would need {self.fixed_minutes} min to match warmcast's "
                f"{self.cold_starts:,} cold starts: {self.fixed_wasted_minutes:,} wasted "
                f"model-minutes, {times} warmcast's {self.wasted_minutes:,}"
            )
        if self.fixed_cold_at_memory is not None:
            vs_fixed += (
                f"; at warmcast's memory fixed keep-alive has "
                f"{self.fixed_cold_at_memory:,.0f} cold starts "
                f"({_times_f(self.fixed_cold_at_memory, self.cold_starts)} warmcast's)"
            )
        return f"{vs_hybrid}\n{vs_fixed}"


def _times(a: int, b: int) -> str:
    return f"{a / b:.2f}x" if b else "n/a vs"


def _times_f(a: float, b: int) -> str:
    return f"{a / b:.2f}x" if b else "n/a vs"


def fixed_to_match(
    fixed: Sequence[tuple[int, int, int]], cold_starts: int
) -> tuple[int, int, int] | None:
    """The shortest keep-alive of ``fixed`` (``(minutes, cold_starts, wasted)`` points)
    with no more than ``cold_starts``; ``None`` when none reaches it.

    >>> fixed_to_match([(10, 90, 100), (5, 120, 60), (30, 40, 300)], 50)
    (30, 40, 300)
    >>> fixed_to_match([(10, 90, 100)], 50) is None
    True
    """
    for point in sorted(fixed):
        if point[1] <= cold_starts:
            return point
    return None


def compute(
    trace: Trace,
    knob: float,
    knobs: Sequence[float] = DEFAULT_KNOBS,
    fixed_minutes: Sequence[int] = FIXED_MINUTES,
    sizes: Mapping[str, float] | None = None,
) -> Headline:
    """Backtest ``trace`` with hybrid, warmcast along ``knobs`` (and ``knob``) and the fixed
    keep-alives of ``fixed_minutes``, and compare them at equal memory (warmcast planning
    with the models' ``sizes`` when given)."""
    curve_knobs = sorted({*knobs, knob})
    policies = ["hybrid", "warmcast", *(f"fixed:{k}" for k in fixed_minutes)]
    result = run_backtest(trace, policies, knobs=curve_knobs, progress=False, sizes=sizes)
    hybrid = result.run("hybrid").score
    runs = {r.knob: r.score for r in result.runs if r.policy == "warmcast"}
    ours = runs[knob]
    curve = [(float(s.wasted_minutes), float(s.cold_starts)) for s in runs.values()]
    ratio, note = ratio_at_memory(curve, float(hybrid.wasted_minutes), float(hybrid.cold_starts))
    fixed = [
        (k, s.cold_starts, s.wasted_minutes)
        for k in fixed_minutes
        for s in [result.run(f"fixed:{k}").score]
    ]
    match = fixed_to_match(fixed, ours.cold_starts)
    fixed_ratio, _ = ratio_at_memory(
        [(float(w), float(c)) for _, c, w in fixed],
        float(ours.wasted_minutes),
        float(ours.cold_starts),
    )
    return Headline(
        knob=knob,
        cold_starts=ours.cold_starts,
        wasted_minutes=ours.wasted_minutes,
        hybrid_cold_starts=hybrid.cold_starts,
        hybrid_wasted_minutes=hybrid.wasted_minutes,
        ratio_at_hybrid_memory=ratio,
        ratio_note=note,
        fixed_minutes=match[0] if match else None,
        fixed_cold_starts=match[1] if match else None,
        fixed_wasted_minutes=match[2] if match else None,
        fixed_cold_at_memory=None if fixed_ratio is None else fixed_ratio * ours.cold_starts,
    )
