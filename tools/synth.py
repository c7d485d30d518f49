"""``warmcast synth``: seeded synthetic usage traces from families with known structure.

Each family draws, per served model, the minutes that hold requests and how many, on a
grid whose minute 0 starts at epoch 0 (the Azure per-minute convention), over ``days``
days. The result is a :class:`~tools.traces.Trace` (what the backtest reads), which
:func:`write_trace` saves as an Azure per-minute CSV (read back exactly, grid and end
included) or as JSONL usage events. The same family, parameters and seed always give the
same trace.

Every family's docstring says what a perfect predictor would do on it: how far a policy
is from that is what is left to learn. The families:

- ``timer``: periodic jobs with jitter and missed beats;
- ``poisson``: memoryless arrivals, from one a day to many a minute;
- ``daily``: daily rhythms (working hours, optionally weekdays only) over weeks;
- ``bursts``: on/off sessions;
- ``drift``: timers whose period drifts or changes once;
- ``groups``: groups of models that wake together, a leader first;
- ``churn``: models that appear mid-trace and models that die;
- ``mix``: a realistic mix of all of the above.

>>> t = generate("timer", seed=1, days=1, models=3)
>>> t.models, t.end_minute, generate("timer", seed=1, days=1, models=3).events == t.events
(3, 1439, True)
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from tools.backtest import key_value_arg
from tools.traces import Trace

DAY = 1440
WEEK = 7 * DAY

#: Per-model usage: minute -> requests in that minute.
Minutes = dict[int, int]


@dataclass(frozen=True, slots=True)
class Family:
    """A trace family: its generator, default parameters and documentation."""

    name: str
    make: Callable[..., dict[str, Minutes]]
    defaults: dict[str, Any]

    @property
    def doc(self) -> str:
        return (self.make.__doc__ or "").strip()

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else self.name


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _requests(rng: random.Random, mean: float) -> int:
    """Requests in a minute that holds some: at least one, ``mean`` on average."""
    return 1 + _poisson(rng, max(0.0, mean - 1.0))


def _arrivals(
    rng: random.Random, out: Minutes, rate: float, start: int, stop: int, mean: float = 1.0
) -> None:
    """Poisson arrivals at ``rate`` per minute over ``[start, stop)`` into ``out``."""
    if rate <= 0 or stop <= start:
        return
    if rate >= 0.2:  # dense: draw per minute
        for m in range(start, stop):
            n = _poisson(rng, rate * mean)
            if n:
                out[m] = out.get(m, 0) + n
        return
    t = start + rng.expovariate(rate)
    while t < stop:
        m = int(t)
        out[m] = out.get(m, 0) + _requests(rng, mean)
        t += rng.expovariate(rate)


def _timer(
    rng: random.Random,
    out: Minutes,
    period: float,
    start: int,
    stop: int,
    *,
    jitter: float = 0.0,
    miss: float = 0.0,
    mean: float = 1.0,
    phase: float | None = None,
) -> None:
    """Beats every ``period`` minutes over ``[start, stop)``, jittered, some missed."""
    t = start + (rng.uniform(0, period) if phase is None else phase)
    while t < stop:
        if rng.random() >= miss:
            m = round(t + (rng.gauss(0.0, jitter) if jitter > 0 else 0.0))
            if start <= m < stop:
                out[m] = out.get(m, 0) + _requests(rng, mean)
        t += period


# ------------------------------------------------------------------------------ families


def timer(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    periods: Sequence[float] = (5, 15, 30, 60, 120, 360, 720, 1440),
    jitter: float = 1.0,
    miss: float = 0.05,
) -> dict[str, Minutes]:
    """Timers: each model fires every P minutes (P drawn from ``periods``), jittered by a
    normal of ``jitter`` minutes, each beat missed with probability ``miss``.

    Perfect predictor: loads each model just before its next beat and unloads it after:
    no cold starts (a missed beat costs the few minutes it was loaded for nothing), about
    ``1 + 2 x jitter`` loaded minutes per beat. Keep-alive alone cannot do this for
    periods longer than its window.
    """
    out: dict[str, Minutes] = {}
    for i in range(models):
        period = float(rng.choice(list(periods)))
        usage: Minutes = {}
        _timer(rng, usage, period, 0, minutes, jitter=jitter, miss=miss, mean=2.0)
        out[f"timer-{i:03d}-p{period:g}"] = usage
    return out


def poisson(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    min_per_day: float = 1.0,
    max_per_minute: float = 5.0,
) -> dict[str, Minutes]:
    """Poisson arrivals: each model's requests arrive at a constant rate, log-uniform
    between ``min_per_day`` a day and ``max_per_minute`` a minute.

    Perfect predictor (knowing only the past): nothing to learn beyond the rate; the best
    memory-for-cold-start trade is a per-model keep-alive (always loaded for busy models,
    released at once for models far rarer than the memory a load is worth). Every gap of
    a rare model ends in a cold start whatever the policy; an oracle that sees the future
    would load exactly the requested minutes.
    """
    lo, hi = math.log(min_per_day / DAY), math.log(max_per_minute)
    out: dict[str, Minutes] = {}
    for i in range(models):
        rate = math.exp(rng.uniform(lo, hi))
        usage: Minutes = {}
        _arrivals(rng, usage, rate, 0, minutes)
        out[f"poisson-{i:03d}-r{rate * DAY:.0f}d"] = usage
    return out


def daily(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    weekdays_only: float = 0.5,
    busy_rate: float = 0.5,
    night_rate: float = 0.0005,
) -> dict[str, Minutes]:
    """Daily and weekly rhythms: each model is busy in a window of the day (start hour
    and length drawn per model, Poisson at up to ``busy_rate`` a minute inside it) and
    nearly idle outside (``night_rate``); a share ``weekdays_only`` of models also sleeps
    on days 5 and 6 of every week.

    Perfect predictor: loads each model a minute before its window opens on the days it
    is used, keeps it through the window, unloads it when the window closes: one cold
    start per stray night request, none at the daily return. Keep-alive pays either a
    cold start every morning or memory all night.
    """
    out: dict[str, Minutes] = {}
    for i in range(models):
        start = rng.randrange(0, 18 * 60)
        length = rng.randrange(2 * 60, 10 * 60)
        rate = busy_rate * math.exp(rng.uniform(math.log(0.05), 0.0))
        weekly = rng.random() < weekdays_only
        usage: Minutes = {}
        for day in range(minutes // DAY + 1):
            base = day * DAY
            if weekly and day % 7 in (5, 6):
                _arrivals(rng, usage, night_rate, base, min(base + DAY, minutes))
                continue
            lo, hi = base + start, min(base + start + length, minutes)
            _arrivals(rng, usage, night_rate, base, min(lo, minutes))
            _arrivals(rng, usage, rate, lo, hi)
            _arrivals(rng, usage, night_rate, hi, min(base + DAY, minutes))
        out[f"daily-{i:03d}{'-wk' if weekly else ''}"] = usage
    return out


def bursts(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    on_minutes: float = 30.0,
    off_minutes: float = 240.0,
    on_rate: float = 0.8,
) -> dict[str, Minutes]:
    """On/off bursts: sessions of exponential length (mean ``on_minutes`` x a per-model
    factor) at ``on_rate`` requests a minute, separated by exponential silences (mean
    ``off_minutes`` x a per-model factor).

    Perfect predictor: the start of a session cannot be foreseen (silences are
    memoryless), so one cold start per session is unavoidable; inside a session the model
    stays loaded, and it is released as soon as the session is over (a few idle minutes
    tell a session's end from a pause inside it), wasting almost nothing.
    """
    out: dict[str, Minutes] = {}
    for i in range(models):
        scale = math.exp(rng.uniform(math.log(0.25), math.log(4.0)))
        on, off = on_minutes * scale, off_minutes * math.exp(rng.uniform(-1.0, 1.0))
        usage: Minutes = {}
        t = rng.expovariate(1.0 / off)
        while t < minutes:
            length = max(1.0, rng.expovariate(1.0 / on))
            _arrivals(rng, usage, on_rate, int(t), min(int(t + length), minutes))
            if int(t) < minutes:
                usage.setdefault(int(t), 1)
            t += length + rng.expovariate(1.0 / off)
        out[f"bursts-{i:03d}"] = usage
    return out


def drift(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    periods: Sequence[float] = (10, 30, 60, 180, 480),
    change_share: float = 0.5,
    jitter: float = 1.0,
) -> dict[str, Minutes]:
    """Periods that drift or change: a share ``change_share`` of timers switch once, at a
    random minute, to a period 0.3x to 3x the old one; the others drift linearly to
    0.5x..2x their first period by the end of the trace.

    Perfect predictor: like ``timer``, loaded just before each beat; it notices a change
    after one or two beats (each a cold start, or a wasted load) and a drift by following
    the recent gaps rather than the whole history.
    """
    out: dict[str, Minutes] = {}
    for i in range(models):
        p0 = float(rng.choice(list(periods)))
        usage: Minutes = {}
        if rng.random() < change_share:
            at = rng.randrange(minutes // 4, 3 * minutes // 4)
            p1 = max(2.0, p0 * math.exp(rng.uniform(math.log(0.3), math.log(3.0))))
            _timer(rng, usage, p0, 0, at, jitter=jitter, mean=2.0)
            _timer(rng, usage, p1, at, minutes, jitter=jitter, mean=2.0, phase=0.0)
            out[f"drift-{i:03d}-change"] = usage
            continue
        p_end = p0 * math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        t = rng.uniform(0, p0)
        while t < minutes:
            m = round(t + rng.gauss(0.0, jitter))
            if 0 <= m < minutes:
                usage[m] = usage.get(m, 0) + _requests(rng, 2.0)
            t += max(2.0, p0 + (p_end - p0) * t / minutes)
        out[f"drift-{i:03d}-slide"] = usage
    return out


def groups(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    group_size: int = 5,
    wakes_per_day: float = 6.0,
    lag_minutes: int = 3,
    session_minutes: float = 10.0,
) -> dict[str, Minutes]:
    """Models that wake together: groups of ``group_size``; a group wakes at Poisson times
    (``wakes_per_day`` on average, per-group factor 0.3x..3x), its leader first and every
    other member within ``lag_minutes`` after it, each for a short session.

    Perfect predictor: one cold start per wake (the leader's: wakes are memoryless); the
    followers are loaded the minute the leader is seen and released after the session,
    so they never start cold. Per-model rules see only rare, unpredictable wakes.
    """
    out: dict[str, Minutes] = {}
    n_groups = max(1, models // max(1, group_size))
    for g in range(n_groups):
        rate = wakes_per_day * math.exp(rng.uniform(math.log(0.3), math.log(3.0))) / DAY
        size = len(range(g, models, n_groups))  # ``models`` in all, dealt round-robin
        members = [f"group-{g:02d}-m{k}" for k in range(size)]
        usage: dict[str, Minutes] = {m: {} for m in members}
        t = rng.expovariate(rate)
        while t < minutes:
            start = int(t)
            for k, member in enumerate(members):
                lag = 0 if k == 0 else rng.randint(1, lag_minutes)
                length = max(1, round(rng.expovariate(1.0 / session_minutes)))
                begin = start + lag
                if begin < minutes:
                    usage[member][begin] = usage[member].get(begin, 0) + 1
                _arrivals(rng, usage[member], 0.5, begin + 1, min(begin + length, minutes))
            t += rng.expovariate(rate)
        out.update(usage)
    return out


def churn(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    rate_per_day: float = 200.0,
) -> dict[str, Minutes]:
    """Models that appear mid-trace and models that die: a third live throughout, a third
    start at a random minute, a third stop at one; while alive each is a timer or Poisson
    arrivals (about ``rate_per_day`` a day x a per-model factor 0.1x..10x).

    Perfect predictor: a new model's first request is a cold start whatever the policy;
    from its second beat on it is handled as a timer or Poisson model; a dead model is
    released right after its last request (no memory spent waiting for it).
    """
    out: dict[str, Minutes] = {}
    for i in range(models):
        kind = i % 3
        start, stop = 0, minutes
        if kind == 1:
            start = rng.randrange(minutes // 8, 7 * minutes // 8)
        elif kind == 2:
            stop = rng.randrange(minutes // 8, 7 * minutes // 8)
        rate = rate_per_day * math.exp(rng.uniform(math.log(0.1), math.log(10.0))) / DAY
        usage: Minutes = {}
        if rng.random() < 0.5:
            _timer(rng, usage, max(2.0, 1.0 / rate), start, stop, jitter=1.0)
            shape = "timer"
        else:
            _arrivals(rng, usage, rate, start, stop)
            shape = "poisson"
        label = ("steady", "born", "dies")[kind]
        out[f"churn-{i:03d}-{label}-{shape}"] = usage
    return out


def mix(
    rng: random.Random,
    models: int,
    minutes: int,
    *,
    shares: dict[str, float] | None = None,
) -> dict[str, Minutes]:
    """A realistic mix: most models rare and irregular, a few busy, the rest timers,
    daily rhythms, bursts, groups and churn (``shares`` per family; default roughly the
    proportions serverless traces show: 35 % Poisson over the whole rate range, 20 %
    timers, 15 % daily, 10 % bursts, 10 % groups, 10 % churn).

    Perfect predictor: each part as its family says; the mix checks that a policy's
    defaults hold when the patterns are served side by side.
    """
    weights = shares or {
        "poisson": 0.35,
        "timer": 0.2,
        "daily": 0.15,
        "bursts": 0.1,
        "groups": 0.1,
        "churn": 0.1,
    }
    total = sum(weights.values())
    names = sorted(weights)
    exact = {name: models * weights[name] / total for name in names}
    counts = {name: int(exact[name]) for name in names}
    by_remainder = sorted(names, key=lambda n: counts[n] - exact[n])
    for name in by_remainder[: models - sum(counts.values())]:
        counts[name] += 1  # largest remainders: ``models`` in all
    out: dict[str, Minutes] = {}
    for name in names:
        seed = rng.random()
        if counts[name] == 0:
            continue
        part = FAMILIES[name].make(random.Random(seed), counts[name], minutes)
        out.update({f"mix-{k}": v for k, v in part.items()})
    return out


FAMILIES: dict[str, Family] = {
    "timer": Family("timer", timer, {"models": 40, "days": 7}),
    "poisson": Family("poisson", poisson, {"models": 40, "days": 7}),
    "daily": Family("daily", daily, {"models": 30, "days": 21}),
    "bursts": Family("bursts", bursts, {"models": 40, "days": 7}),
    "drift": Family("drift", drift, {"models": 40, "days": 7}),
    "groups": Family("groups", groups, {"models": 40, "days": 7}),
    "churn": Family("churn", churn, {"models": 45, "days": 7}),
    "mix": Family("mix", mix, {"models": 60, "days": 14}),
}


# ---------------------------------------------------------------------------------- API


def generate(
    family: str,
    *,
    seed: int = 0,
    days: float | None = None,
    models: int | None = None,
    **params: Any,
) -> Trace:
    """The trace of ``family`` (a key of :data:`FAMILIES`) for ``seed``.

    ``days`` and ``models`` default to the family's own; ``params`` are the family's
    keyword arguments (see its docstring). Minute 0 starts at epoch 0 and the trace ends
    at its last minute, as an Azure per-minute file of that length would.
    """
    try:
        fam = FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"unknown synthetic family {family!r} (one of: {', '.join(FAMILIES)})"
        ) from None
    n_days = float(fam.defaults["days"] if days is None else days)
    n_models = int(fam.defaults["models"] if models is None else models)
    minutes = round(n_days * DAY)
    if minutes <= 0 or n_models <= 0:
        raise ValueError("days and models must be positive")
    try:
        per_model = fam.make(random.Random(f"{family}:{seed}"), n_models, minutes, **params)
    except TypeError as exc:
        raise ValueError(f"synthetic family {family}: {exc}") from None
    events = sorted(
        (60.0 * m, model_id, n)
        for model_id, usage in per_model.items()
        for m, n in usage.items()
        if n > 0 and 0 <= m < minutes
    )
    label = f"synth:{family}:seed={seed}"
    return Trace(label, "synth", events, t0=0.0, end_minute=minutes - 1)


def per_model_minutes(trace: Trace) -> dict[str, list[int]]:
    """Sorted minutes with requests, per model.

    >>> per_model_minutes(Trace("x", "synth", [(0.0, "a", 1), (120.0, "a", 2)], 0.0, 2))
    {'a': [0, 2]}
    """
    out: dict[str, list[int]] = {}
    for ts, model_id, _ in trace.events:
        out.setdefault(model_id, []).append(trace.minute_of(ts))
    for minutes in out.values():
        minutes.sort()
    return out


def write_trace(trace: Trace, path: str | os.PathLike[str], fmt: str = "azure") -> None:
    """Save ``trace`` as an Azure per-minute CSV (``azure``) or JSONL usage events
    (``jsonl``); gzip-compressed when ``path`` ends in ``.gz``.

    The Azure layout keeps the grid and the trace's end exactly (``warmcast backtest``
    reads it back as the same trace); JSONL starts minute 0 at the first request.
    """
    p = os.fspath(path)
    if fmt == "azure":
        body = _azure_csv(trace)
    elif fmt == "jsonl":
        opt = orjson.OPT_APPEND_NEWLINE
        body = b"".join(
            orjson.dumps({"model_id": m, "ts": ts, "count": n}, option=opt)
            for ts, m, n in trace.events
        )
    else:
        raise ValueError(f"unknown output format {fmt!r} (azure, jsonl)")
    Path(p).write_bytes(gzip.compress(body, mtime=0) if p.endswith(".gz") else body)


def _azure_csv(trace: Trace) -> bytes:
    width = trace.end_minute + 1
    rows: dict[str, list[int]] = {}
    for ts, model_id, n in trace.events:
        row = rows.get(model_id)
        if row is None:
            row = rows[model_id] = [0] * width
        row[trace.minute_of(ts)] += n
    lines = [",".join(["HashFunction", "HashApp", "HashOwner"]
                      + [f"minute_{i}" for i in range(1, width + 1)])]  # fmt: skip
    for model_id in sorted(rows):
        lines.append(",".join([model_id, model_id, "synth", *map(str, rows[model_id])]))
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------------------------- CLI


def _epilog() -> str:
    parts = ["families (what a perfect predictor would do on each):", ""]
    for fam in FAMILIES.values():
        days, models = fam.defaults["days"], fam.defaults["models"]
        parts.append(f"{fam.name} (default {models} models, {days} days):")
        parts.extend("  " + line.strip() for line in fam.doc.splitlines())
        parts.append("")
    return "\n".join(parts)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="write a seeded synthetic trace from a family with known structure",
        description=(
            "Writes a seeded synthetic usage trace in a format warmcast backtest reads\n"
            "(Azure per-minute CSV, or JSONL usage events). The same family, parameters\n"
            "and seed always give the same file."
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("family", choices=sorted(FAMILIES), help="trace family")
    p.add_argument("out", help="output file (.gz: gzip-compressed)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--days", type=float, help="trace length in days (family default)")
    p.add_argument("--models", type=int, help="served models (family default)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("azure", "jsonl"),
        default="azure",
        help="azure: per-minute CSV, exact grid (default); jsonl: usage events",
    )
    p.add_argument(
        "--param",
        action="append",
        type=key_value_arg,
        default=[],
        metavar="KEY=VALUE",
        help="a family parameter (JSON value), e.g. --param jitter=2 --param 'periods=[5,60]'",
    )
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``synth`` subcommand from parsed arguments; the exit status."""
    out = stdout if stdout is not None else sys.stdout
    try:
        trace = generate(
            args.family, seed=args.seed, days=args.days, models=args.models, **dict(args.param)
        )
        write_trace(trace, args.out, args.fmt)
    except (OSError, ValueError) as exc:
        print(f"warmcast synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {args.family} seed {args.seed}: {trace.models} models, "
        f"{trace.requests} requests, minutes 0..{trace.end_minute}",
        file=out,
    )
    return 0


__all__ = ["FAMILIES", "Family", "command", "generate", "per_model_minutes", "register",
           "write_trace"]  # fmt: skip
