"""Promotion and rollback of the active policy, judged on the shadows' online scores.

Every policy of a partition (the active one and the shadow candidates, engine/shadow.py)
is scored with the backtest's definitions; :class:`BucketRecorder` cuts those running
figures into buckets of event time (``WARMCAST_PROMOTION_BUCKET_SECONDS``): for each policy
and bucket, the cold starts, the requests, the minutes with requests and the wasted loaded
minutes. Every policy sees the same requests, so one bucket pairs them.

**Promotion** (:func:`judge_promotion`). Only the closed buckets of the rolling window
(``WARMCAST_PROMOTION_WINDOW_SECONDS``) that start after the latest change of the active
policy and its cool-down (``WARMCAST_PROMOTION_COOLDOWN_SECONDS``) are judged. A candidate
``C`` is promoted over the active ``A`` when all of these hold:

1. at least ``min_buckets`` such buckets, with ``min_requests`` requests in them together;
2. a one-sided paired t-test over the buckets rejects "C is no better": with
   ``d_b = 100 * (cold_A - cold_C) / minutes with requests`` of bucket ``b`` (percentage
   points of cold minutes), ``t = mean(d) / (sd(d) / sqrt(n))`` and its p-value under
   Student's t with ``n - 1`` degrees of freedom is below ``alpha`` (0.01) (every
   difference equal: p is 0 when they are positive, 1 otherwise);
3. the gain is worth having: ``mean(d) >= min_gain_pct`` (1 point);
4. memory is not given away: over the window, ``(wasted_C - wasted_A) / minutes with
   requests <= waste_tolerance`` (extra wasted model-minutes per minute served).

Of several candidates that pass, the one with the largest ``t`` is promoted.

**Rollback** (:func:`judge_rollback`). The reference is the policy active before the latest
promotion, or else the fallback (``hybrid``) when it runs as a candidate. A closed bucket
after the latest change regresses when the active policy's cold minutes exceed the
reference's by more than ``rollback_margin_pct`` points, or its wasted minutes exceed the
reference's by more than ``waste_tolerance`` per minute with requests while it saves fewer
than ``min_gain_pct`` points of cold minutes against it (waste for nothing). Buckets without a
request are skipped; any other bucket ends a run. Once a run of regressed buckets covers
``rollback_after_minutes`` and holds ``min_requests`` requests, the active policy is
rolled back to the reference (no
cool-down: a bad promotion is undone as soon as it has shown itself bad for that long).

A worker sums the buckets of the partitions it owns (:func:`merge`) and judges over them;
only buckets closed before the newest event's bucket count.

Nothing here reads a clock: buckets and minutes are event time.

>>> rule = PromotionRule(bucket_minutes=10, min_buckets=4, min_requests=40)
>>> lineup = Lineup("fixed:1", ["warmcast"])
>>> better = {b: {"fixed:1": Figures(9, 10, 10, 0), "warmcast": Figures(2, 10, 10, 3)}
...           for b in range(6)}
>>> decision = judge_promotion(better, lineup, rule, minute=60)
>>> decision.action, decision.policy, decision.replaced, decision.buckets
('promote', 'warmcast', 'fixed:1', 6)
>>> decision.p_value
0.0
>>> same = {b: {"fixed:1": Figures(5, 10, 10, 0), "warmcast": Figures(5 + b % 2, 10, 10, 0)}
...         for b in range(6)}
>>> judge_promotion(same, lineup, rule, minute=60) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from engine.alerting import AlertTransition, fingerprint

#: The alert kind of each change of the active policy.
POLICY_CHANGE_KINDS = {"promote": "policy_promoted", "rollback": "policy_rolled_back"}
#: bucket index -> policy label -> figures of that bucket
History = Mapping[int, Mapping[str, "Figures"]]


@dataclass(frozen=True, slots=True)
class Figures:
    """One policy's figures over a bucket (or a sum of buckets)."""

    cold_starts: int = 0
    requests: int = 0
    requested_minutes: int = 0
    wasted_minutes: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            self.cold_starts + other.cold_starts,
            self.requests + other.requests,
            self.requested_minutes + other.requested_minutes,
            self.wasted_minutes + other.wasted_minutes,
        )

    def __sub__(self, other: Figures) -> Figures:
        return Figures(
            self.cold_starts - other.cold_starts,
            self.requests - other.requests,
            self.requested_minutes - other.requested_minutes,
            self.wasted_minutes - other.wasted_minutes,
        )

    @property
    def cold_pct(self) -> float:
        """Cold minutes per 100 minutes with requests (0 without any)."""
        return 100.0 * self.cold_starts / self.requested_minutes if self.requested_minutes else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "cold_starts": self.cold_starts,
            "requests": self.requests,
            "requested_minutes": self.requested_minutes,
            "wasted_minutes": self.wasted_minutes,
            "cold_pct": round(self.cold_pct, 6),
        }


@dataclass(frozen=True, slots=True)
class PromotionRule:
    """The settings of :func:`judge_promotion` and :func:`judge_rollback` (minutes)."""

    bucket_minutes: int = 5
    window_buckets: int = 12
    min_buckets: int = 6
    min_requests: int = 500
    alpha: float = 0.01
    min_gain_pct: float = 1.0
    waste_tolerance: float = 1.0
    cooldown_minutes: int = 30
    rollback_after_minutes: int = 15
    rollback_margin_pct: float = 5.0


@dataclass(slots=True)
class Lineup:
    """Which policy is active, which run as candidates, and what the active replaced.

    >>> lineup = Lineup("fixed:1", ["hybrid", "warmcast"])
    >>> lineup.change("warmcast", minute=90)
    'fixed:1'
    >>> lineup.active, lineup.candidates, lineup.previous, lineup.generation
    ('warmcast', ['hybrid', 'fixed:1'], 'fixed:1', 1)
    >>> lineup.version
    'warmcast#1'
    """

    active: str
    candidates: list[str]
    previous: str | None = None
    generation: int = 0
    #: event-time minute of the latest change (``None``: none yet)
    changed_minute: int | None = None

    @property
    def version(self) -> str:
        """The active policy and the generation: what a checkpoint says it holds."""
        return f"{self.active}#{self.generation}"

    def change(self, label: str, minute: int, *, rollback: bool = False) -> str:
        """Make candidate ``label`` active; the active one takes its place among the
        candidates (and is remembered as the previous one, unless this is a rollback).
        Returns the label replaced."""
        if label not in self.candidates:
            raise ValueError(f"{label!r} is no candidate: {', '.join(self.candidates)}")
        replaced = self.active
        self.candidates[self.candidates.index(label)] = replaced
        self.active = label
        self.previous = None if rollback else replaced
        self.generation += 1
        self.changed_minute = minute
        return replaced

    def rollback_target(self, fallback: str) -> str | None:
        """The previous policy, else the fallback, if it runs as a candidate."""
        for label in (self.previous, fallback):
            if label is not None and label in self.candidates:
                return label
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    """A change of the active policy and the figures that justify it."""

    action: Literal["promote", "rollback"]
    policy: str  # made active
    replaced: str  # active before
    reason: str
    active: Figures  # the replaced policy's figures over the buckets judged
    candidate: Figures  # the new active policy's
    statistic: float  # t of the paired test; for a rollback, the regressed minutes
    p_value: float | None
    buckets: int
    first_minute: int  # of the buckets judged
    last_minute: int
    generation: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, float | str | None]:
        """The figures, flat, as an alert's ``details``."""
        out: dict[str, float | str | None] = {
            "action": self.action,
            "policy": self.policy,
            "replaced": self.replaced,
            "statistic": _finite(self.statistic),
            "p_value": self.p_value,
            "buckets": self.buckets,
            "window_first_minute": self.first_minute,
            "window_last_minute": self.last_minute,
            "generation": self.generation,
        }
        for role, figures in (("replaced", self.active), ("policy", self.candidate)):
            for name, value in figures.as_dict().items():
                out[f"{role}_{name}"] = value
        out.update(self.extra)
        return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _threshold(decision: Decision) -> float | None:
    found = decision.extra.get("alpha", decision.extra.get("rollback_after_minutes"))
    return None if found is None else float(found)


def t_upper_tail(t: float, df: int) -> float:
    """P(T >= t) under Student's t with ``df`` degrees of freedom (Abramowitz & Stegun
    26.7.3-4, exact for whole ``df``).

    >>> round(t_upper_tail(0.0, 5), 6), round(t_upper_tail(3.365, 5), 4)
    (0.5, 0.01)
    >>> round(t_upper_tail(2.0, 1), 4), round(t_upper_tail(1.812, 10), 3)
    (0.1476, 0.05)
    """
    if df < 1:
        raise ValueError("df >= 1")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    theta = math.atan2(abs(t), math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = term = 1.0
            for k in range(3, df - 1, 2):
                term *= c2 * (k - 1) / k
                total += term
        within = 2.0 / math.pi * (theta + s * math.cos(theta) * total)
    else:
        total = term = 1.0
        for k in range(2, df - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        within = s * total
    tail = max(0.0, (1.0 - within) / 2.0)
    return tail if t >= 0 else 1.0 - tail


def paired_t(diffs: list[float]) -> tuple[float, float]:
    """One-sided paired t-test of ``mean(diffs) > 0``: (t, p-value).

    >>> round(paired_t([1.0, 2.0, 3.0])[0], 6)
    3.464102
    >>> paired_t([1.0, 1.0, 1.0]), paired_t([0.0, 0.0])
    ((inf, 0.0), (0.0, 1.0))
    """
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    if var <= 0.0:
        if mean > 0:
            return math.inf, 0.0
        return 0.0, 1.0
    t = mean / math.sqrt(var / n)
    return t, t_upper_tail(t, n - 1)


def judged_buckets(history: History, lineup: Lineup, rule: PromotionRule, minute: int) -> list[int]:
    """The closed buckets of the window, after the latest change (and, with ``cooldown``,
    its cool-down), oldest first."""
    now = minute // rule.bucket_minutes
    first = now - rule.window_buckets
    if lineup.changed_minute is not None:
        after = lineup.changed_minute + 1 + rule.cooldown_minutes
        first = max(first, -(-after // rule.bucket_minutes))
    return [b for b in sorted(history) if first <= b < now]


def compare(
    history: History, lineup: Lineup, rule: PromotionRule, buckets: list[int], label: str
) -> Decision | None:
    """Candidate ``label`` against the active policy over ``buckets`` (those with
    requests), as a promotion; ``None`` without a bucket to pair."""
    active = lineup.active
    pairs = [
        (history[b][active], history[b][label], b)
        for b in buckets
        if active in history[b] and label in history[b]
    ]
    pairs = [(a, c, b) for a, c, b in pairs if a.requested_minutes > 0]
    if not pairs:
        return None
    a_sum = sum((a for a, _, _ in pairs), Figures())
    c_sum = sum((c for _, c, _ in pairs), Figures())
    diffs = [a.cold_pct - c.cold_pct for a, c, _ in pairs]
    t, p = paired_t(diffs) if len(diffs) > 1 else (0.0, 1.0)
    gain = sum(diffs) / len(diffs)
    extra_waste = (c_sum.wasted_minutes - a_sum.wasted_minutes) / a_sum.requested_minutes
    return Decision(
        "promote",
        label,
        active,
        f"{label} had {gain:.1f} points fewer cold minutes than {active} over "
        f"{len(pairs)} buckets (paired t {t:.2f}, p {p:.2g}), "
        f"{extra_waste:+.2f} wasted minutes per minute served",
        a_sum,
        c_sum,
        t,
        p,
        len(pairs),
        pairs[0][2] * rule.bucket_minutes,
        (pairs[-1][2] + 1) * rule.bucket_minutes - 1,
        lineup.generation + 1,
        {"mean_gain_pct": round(gain, 6), "extra_waste_per_minute": round(extra_waste, 6)},
    )


def judge_promotion(
    history: History, lineup: Lineup, rule: PromotionRule, minute: int
) -> Decision | None:
    """The candidate to promote at event-time ``minute``, if one dominates the active
    policy (module docstring); ``None`` otherwise."""
    buckets = judged_buckets(history, lineup, rule, minute)
    best: Decision | None = None
    for label in lineup.candidates:
        found = compare(history, lineup, rule, buckets, label)
        if found is None or found.buckets < rule.min_buckets:
            continue
        if found.active.requests < rule.min_requests:
            continue
        assert found.p_value is not None
        if (
            found.p_value >= rule.alpha
            or found.extra["mean_gain_pct"] < rule.min_gain_pct
            or found.extra["extra_waste_per_minute"] > rule.waste_tolerance
        ):
            continue
        if best is None or found.statistic > best.statistic:
            best = found
    if best is None:
        return None
    return replace(
        best,
        reason=f"automatic (p < {rule.alpha:g}): {best.reason}",
        extra={**best.extra, "alpha": rule.alpha},
    )


def evidence(
    history: History,
    lineup: Lineup,
    rule: PromotionRule,
    minute: int,
    label: str,
    action: Literal["promote", "rollback"],
    by: str = "",
) -> Decision:
    """An operator's change to ``label``, with the figures of the window as they stand
    (the cool-down and the thresholds do not apply).

    >>> lineup = Lineup("fixed:1", ["hybrid"])
    >>> d = evidence({}, lineup, PromotionRule(), 60, "hybrid", "promote", "ops")
    >>> d.reason, d.buckets, d.policy
    ('by an operator (ops): no buckets with requests to compare yet', 0, 'hybrid')
    """
    no_cooldown = replace(rule, cooldown_minutes=0)
    buckets = judged_buckets(history, lineup, no_cooldown, minute)
    found = compare(history, lineup, rule, buckets, label)
    who = f"by an operator ({by})" if by else "by an operator"
    if found is None:
        first = minute - rule.window_buckets * rule.bucket_minutes
        return Decision(
            action,
            label,
            lineup.active,
            f"{who}: no buckets with requests to compare yet",
            Figures(),
            Figures(),
            0.0,
            None,
            0,
            max(first, 0),
            minute,
            lineup.generation + 1,
        )
    return replace(found, action=action, reason=f"{who}: {found.reason}")


def policy_alert(decision: Decision, app_id: str, ts: float) -> AlertTransition:
    """A change of the active policy as an alert and audit record: kind
    ``policy_promoted`` or ``policy_rolled_back``, one fingerprint per change, ``resolved``
    (a change done, as a control acknowledgement), the figures in its details. Its value
    is the p-value of an automatic promotion (threshold: alpha) or the regressed minutes
    of an automatic rollback (threshold: the minutes a rollback waits for); an operator's
    change has the p-value as it stands and no threshold.

    >>> d = evidence({}, Lineup("fixed:1", ["hybrid"]), PromotionRule(), 60, "hybrid",
    ...              "rollback")
    >>> a = policy_alert(d, "warmcast", 1.0)
    >>> a.kind, a.severity, a.subject, dict(a.details)["policy"]
    ('policy_rolled_back', 'warning', 'warmcast/fixed:1->hybrid#1', 'hybrid')
    """
    kind = POLICY_CHANGE_KINDS[decision.action]
    subject = f"{app_id}/{decision.replaced}->{decision.policy}#{decision.generation}"
    return AlertTransition(
        fingerprint(kind, subject),
        kind,
        "info" if decision.action == "promote" else "warning",
        "resolved",
        subject,
        f"{decision.policy} made active in place of {decision.replaced}, {decision.reason}",
        decision.p_value if decision.action == "promote" else _finite(decision.statistic),
        _threshold(decision),
        ts,
        decision.last_minute,
        tuple(decision.details().items()),
    )


def judge_rollback(
    history: History, lineup: Lineup, rule: PromotionRule, minute: int, fallback: str
) -> Decision | None:
    """The rollback due at event-time ``minute``, if the active policy has regressed past
    its reference for ``rollback_after_minutes`` (module docstring); ``None`` otherwise.

    >>> rule = PromotionRule(bucket_minutes=5, rollback_after_minutes=15, min_requests=30)
    >>> lineup = Lineup("fixed:1", ["hybrid"])
    >>> broken = {b: {"fixed:1": Figures(10, 10, 10, 0), "hybrid": Figures(1, 10, 10, 2)}
    ...           for b in range(3)}
    >>> judge_rollback(broken, lineup, rule, minute=15, fallback="hybrid").policy
    'hybrid'
    >>> judge_rollback(broken, lineup, rule, minute=14, fallback="hybrid") is None
    True
    """
    reference = lineup.rollback_target(fallback)
    if reference is None:
        return None
    active = lineup.active
    no_cooldown = replace(rule, cooldown_minutes=0)
    run: list[int] = []
    for b in judged_buckets(history, lineup, no_cooldown, minute):
        a, r = history[b].get(active), history[b].get(reference)
        if a is None or r is None or a.requested_minutes == 0:
            continue
        served = a.requested_minutes
        colder = a.cold_pct - r.cold_pct > rule.rollback_margin_pct
        wasteful = (a.wasted_minutes - r.wasted_minutes) / served > rule.waste_tolerance
        wasteful = wasteful and r.cold_pct - a.cold_pct < rule.min_gain_pct  # for nothing
        run = [*run, b] if colder or wasteful else []
    if len(run) * rule.bucket_minutes < rule.rollback_after_minutes:
        return None
    a_sum = sum((history[b][active] for b in run), Figures())
    if a_sum.requests < rule.min_requests:
        return None
    r_sum = sum((history[b][reference] for b in run), Figures())
    minutes = len(run) * rule.bucket_minutes
    return Decision(
        "rollback",
        reference,
        active,
        f"{active} regressed past {reference} for {minutes} minutes: "
        f"{a_sum.cold_pct:.1f}% cold minutes against {r_sum.cold_pct:.1f}%, "
        f"{a_sum.wasted_minutes} wasted minutes against {r_sum.wasted_minutes} (automatic)",
        a_sum,
        r_sum,
        float(minutes),
        None,
        len(run),
        run[0] * rule.bucket_minutes,
        (run[-1] + 1) * rule.bucket_minutes - 1,
        lineup.generation + 1,
        {"rollback_after_minutes": rule.rollback_after_minutes},
    )


class BucketRecorder:
    """Cuts one partition's running figures (``totals(end_minute)``: label -> figures up
    to and including ``end_minute``) into buckets of event time, closed when the first
    event of a later bucket arrives. A partition quiet for several buckets puts what it
    saw since its last bucket into that bucket (its requests all fell there).

    >>> seen = {"a": Figures(0, 0, 0, 0)}
    >>> rec = BucketRecorder(5)
    >>> rec.roll(3, lambda end: seen)
    >>> seen = {"a": Figures(2, 4, 3, 1)}
    >>> rec.roll(12, lambda end: seen)
    >>> rec.take()
    {0: {'a': Figures(cold_starts=2, requests=4, requested_minutes=3, wasted_minutes=1)}}
    """

    def __init__(self, bucket_minutes: int) -> None:
        self.bucket_minutes = bucket_minutes
        self.current: int | None = None
        self.last: dict[str, Figures] = {}
        self.closed: dict[int, dict[str, Figures]] = {}

    def roll(self, minute: int, totals: Callable[[int], Mapping[str, Figures]]) -> None:
        """An event at ``minute`` is about to be scored."""
        bucket = minute // self.bucket_minutes
        current = self.current
        if current is not None and bucket <= current:
            return
        now = dict(totals(bucket * self.bucket_minutes - 1))
        if current is not None:
            zero = Figures()
            self.closed[current] = {k: v - self.last.get(k, zero) for k, v in now.items()}
        self.last = now
        self.current = bucket

    def relabel(self, a: str, b: str) -> None:
        """Two policies swapped places: what was scored as ``a`` is scored as ``b`` from
        now on, and the other way round."""
        last = self.last
        found_a, found_b = last.pop(a, None), last.pop(b, None)
        if found_a is not None:
            last[b] = found_a
        if found_b is not None:
            last[a] = found_b

    def take(self) -> dict[int, dict[str, Figures]]:
        """The buckets closed since the last call."""
        out, self.closed = self.closed, {}
        return out


def merge(into: dict[int, dict[str, Figures]], buckets: History, keep_from: int) -> None:
    """Add one partition's closed buckets into a worker's history, dropping buckets
    before ``keep_from``."""
    for b, by_label in buckets.items():
        row = into.setdefault(b, {})
        for label, figures in by_label.items():
            row[label] = row.get(label, Figures()) + figures
    for b in [b for b in into if b < keep_from]:
        del into[b]


__all__ = [
    "POLICY_CHANGE_KINDS",
    "BucketRecorder",
    "Decision",
    "Figures",
    "History",
    "Lineup",
    "PromotionRule",
    "compare",
    "evidence",
    "judge_promotion",
    "judge_rollback",
    "merge",
    "paired_t",
    "policy_alert",
    "t_upper_tail",
]
