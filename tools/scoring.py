"""Score a policy run from its decision log alone, as docs/evaluation.md defines it.

Inputs: per served model, the minutes that hold requests and how many (:class:`Usage`), and
the warmup commands the policy issued. Minute ``m`` is ``floor((t - t0) / 60)``.

The simulation:

- A command issued at minute ``i`` replaces the model's lease from minute ``i + 1`` on:
  ``warm`` means loaded during minutes ``[start, end)``, ``release`` means not loaded. The
  latest command wins, so the commands of one model, in the order issued, cut time into
  pieces ``[i_k + 1, i_{k+1} + 1)`` each ruled by command ``k`` (the last piece runs to
  the end of the trace). The loaded minutes are the union of each warm command's
  ``[start, end)`` clipped to its piece: a handful of intervals per command, never a
  per-minute loop.
- A minute with requests that finds the model not loaded is **one cold start** (the other
  requests of that minute are warm).
- Scoring covers minutes ``[train_minutes, end_minute]``: requests before ``train_minutes``
  are not counted, and loaded minutes are counted only inside that window (never past the
  trace's last minute).

Metrics (:class:`Score`):

- ``cold_starts``, ``requests``: cold minutes and requests in the window;
- ``p75_cold_pct``: sort the per-model cold-start percentages ``100 * cold / requests`` of
  the models with at least one request in the window; take the element at index
  ``int(0.75 * n)``;
- ``cold_pct_overall``: ``100 * cold_starts / requests``;
- ``loaded_minutes``: minutes the leases keep a model loaded, summed over models (a cold
  start loads the model for its minute too, but that minute is never wasted, so it is not
  counted here);
- ``wasted_minutes``: loaded minutes without a request;
- ``wasted_norm_pct``: ``100 * wasted_minutes / wasted_minutes of fixed:10`` on the same
  trace and window (set by :func:`normalise`);
- ``precision``: loaded minutes that had requests / loaded minutes (how much of the memory
  time kept was used);
- ``recall``: minutes with requests that found the model loaded / minutes with requests
  (``1 - recall`` is the cold-start rate per requested minute).

What the reference numbers of docs/evaluation.md turned out to mean (all of them reproduce
exactly with these rules): ``p75_cold_pct`` is over the models with at least one request
in the scored window (883 of the 1000 Azure functions after minute 480), and the Alibaba
reference counts its 9 requests without a model id as one more served model (see
``missing_model`` in :mod:`tools.traces`).

>>> usage = Usage.from_events([(0.0, "m", 3), (300.0, "m", 1), (1200.0, "m", 2)], t0=0.0)
>>> log = [  # fixed:10 after minutes 0, 5 and 20
...     (0.0, "m", "warm", 60.0, 660.0),
...     (300.0, "m", "warm", 360.0, 960.0),
...     (1200.0, "m", "warm", 1260.0, 1860.0),
... ]
>>> s = score(usage, log, t0=0.0, end_minute=25)
>>> s.cold_starts, s.requests, s.loaded_minutes, s.wasted_minutes
(2, 6, 20, 19)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, cast

EPSILON = 1e-6  # minutes: absorbs float error in t0 + 60 m for fractional t0


class CommandLike(Protocol):
    """The fields of a warmup command the scorer reads (``engine.lease.Command`` has them)."""

    @property
    def model_id(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def issued_at(self) -> float: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


#: A command as a plain tuple: ``(issued_at, model_id, action, start, end)``.
CommandTuple = tuple[float, str, str, float, float]


@dataclass(slots=True)
class Usage:
    """Per served model, the sorted minutes holding requests and their request counts.

    >>> u = Usage.from_events([(0.0, "a", 2), (30.0, "a", 1), (61.0, "b", 1)], t0=0.0)
    >>> u.minutes["a"], u.counts["a"], u.minutes["b"]
    ([0], [3], [1])
    """

    minutes: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: Iterable[tuple[float, str, int]], *, t0: float) -> Usage:
        """From ``(ts, model_id, count)`` events in event-time order."""
        minutes: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        for ts, model_id, count in events:
            m = math.floor((ts - t0) / 60.0)
            ms = minutes.get(model_id)
            if ms is None:
                minutes[model_id] = [m]
                counts[model_id] = [count]
            elif ms[-1] == m:
                counts[model_id][-1] += count
            elif ms[-1] < m:
                ms.append(m)
                counts[model_id].append(count)
            else:
                raise ValueError("events are not in event-time order")
        return cls(minutes, counts)

    @classmethod
    def from_minutes(cls, per_model: Mapping[str, Mapping[int, int]]) -> Usage:
        """From ``{model_id: {minute: count}}``.

        >>> Usage.from_minutes({"a": {5: 1, 2: 4}}).minutes
        {'a': [2, 5]}
        """
        minutes: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        for model_id, by_minute in per_model.items():
            ms = sorted(m for m, n in by_minute.items() if n > 0)
            minutes[model_id] = ms
            counts[model_id] = [by_minute[m] for m in ms]
        return cls(minutes, counts)


@dataclass(frozen=True, slots=True)
class Score:
    """Metrics of one policy run (see the module docstring for the definitions)."""

    cold_starts: int
    requests: int
    requested_minutes: int
    warm_minutes: int
    loaded_minutes: int
    wasted_minutes: int
    models: int
    p75_cold_pct: float
    cold_pct_overall: float
    precision: float
    recall: float
    wasted_norm_pct: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_minute(ts: float, t0: float) -> int:
    """``floor((ts - t0) / 60)``, robust to float error on minute boundaries.

    >>> to_minute(0.1 + 60 * 3, 0.1), to_minute(179.9, 0.0)
    (3, 2)
    """
    return math.floor((ts - t0) / 60.0 + EPSILON)


def p75(values: list[float]) -> float:
    """The element at index ``int(0.75 * n)`` of the sorted values (0 for none).

    >>> p75([0.0, 10.0, 50.0, 100.0])
    100.0
    >>> p75([3.0, 1.0, 2.0])
    3.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(0.75 * len(ordered))]


def command_tuples(commands: Iterable[CommandLike | Mapping[str, Any]]) -> list[CommandTuple]:
    """``(issued_at, model_id, action, start, end)`` of commands or command dicts."""
    out: list[CommandTuple] = []
    for c in commands:
        if isinstance(c, Mapping):
            out.append(
                (
                    float(c["issued_at"]),
                    str(c["model_id"]),
                    str(c["action"]),
                    float(c["start"]),
                    float(c["end"]),
                )
            )
        else:
            out.append((c.issued_at, c.model_id, c.action, c.start, c.end))
    return out


def loaded_intervals(
    commands: Iterable[CommandTuple], *, t0: float, end_minute: int
) -> dict[str, list[tuple[int, int]]]:
    """Per model, the sorted disjoint minute intervals ``[a, b)`` it is loaded in.

    Commands are applied in the order given (the order issued; ``issued_at`` must not go
    backwards for a model). Intervals are clipped to ``end_minute`` (inclusive).

    >>> loaded_intervals(
    ...     [(0.0, "m", "warm", 60.0, 600.0), (120.0, "m", "release", 120.0, 120.0),
    ...      (300.0, "m", "warm", 420.0, 9000.0)], t0=0.0, end_minute=20)
    {'m': [(1, 3), (7, 21)]}
    """
    per_model: dict[str, list[tuple[int, str, int, int]]] = {}
    floor = math.floor
    shift = -t0 / 60.0 + EPSILON  # to_minute(t) == floor(t / 60 + shift), inlined for speed
    for issued_at, model_id, action, start, end in commands:
        entry = (
            floor(issued_at / 60.0 + shift),
            action,
            floor(start / 60.0 + shift),
            floor(end / 60.0 + shift),
        )
        log = per_model.get(model_id)
        if log is None:
            per_model[model_id] = [entry]
        else:
            log.append(entry)
    limit = end_minute + 1
    out: dict[str, list[tuple[int, int]]] = {}
    for model_id, log in per_model.items():
        intervals: list[tuple[int, int]] = []
        for k, (issued, action, start, end) in enumerate(log):
            if k + 1 < len(log):
                piece_end = log[k + 1][0] + 1
                if piece_end < issued + 1:
                    raise ValueError(f"commands of {model_id!r} are not in the order issued")
            else:
                piece_end = limit
            if action != "warm":
                continue
            a = max(start, issued + 1)
            b = min(end, piece_end, limit)
            if a >= b:
                continue
            if intervals and intervals[-1][1] >= a:
                intervals[-1] = (intervals[-1][0], max(intervals[-1][1], b))
            else:
                intervals.append((a, b))
        out[model_id] = intervals
    return out


def score(
    usage: Usage,
    commands: Iterable[CommandLike | Mapping[str, Any] | CommandTuple],
    *,
    t0: float,
    end_minute: int,
    train_minutes: int = 0,
) -> Score:
    """Score a decision log against what happened (see the module docstring)."""
    tuples: list[CommandTuple] = []
    rest: list[CommandLike | Mapping[str, Any]] = []
    for c in commands:
        if isinstance(c, tuple) and not hasattr(c, "_fields"):  # a Command is a named tuple
            tuples.append(c)
        else:
            rest.append(cast(CommandLike | Mapping[str, Any], c))
    if rest:
        if tuples:
            raise ValueError("mix of command tuples and command objects")
        tuples = command_tuples(rest)
    loaded = loaded_intervals(tuples, t0=t0, end_minute=end_minute)
    lo, hi = train_minutes, end_minute + 1

    cold_total = requests_total = requested_total = warm_total = loaded_total = 0
    percentages: list[float] = []
    for intervals in loaded.values():
        for a, b in intervals:
            a, b = max(a, lo), min(b, hi)
            if a < b:
                loaded_total += b - a
    for model_id, minutes in usage.minutes.items():
        counts = usage.counts[model_id]
        first = bisect_left(minutes, lo)
        last = bisect_left(minutes, hi)
        if first >= last:
            continue
        intervals = loaded.get(model_id, [])
        n_int = len(intervals)
        j = 0
        cold = warm = requests = 0
        for k in range(first, last):
            m = minutes[k]
            requests += counts[k]
            while j < n_int and intervals[j][1] <= m:
                j += 1
            if j < n_int and intervals[j][0] <= m:
                warm += 1
            else:
                cold += 1
        cold_total += cold
        warm_total += warm
        requests_total += requests
        requested_total += last - first
        percentages.append(100.0 * cold / requests)
    return Score(
        cold_starts=cold_total,
        requests=requests_total,
        requested_minutes=requested_total,
        warm_minutes=warm_total,
        loaded_minutes=loaded_total,
        wasted_minutes=loaded_total - warm_total,
        models=len(percentages),
        p75_cold_pct=p75(percentages),
        cold_pct_overall=100.0 * cold_total / requests_total if requests_total else 0.0,
        precision=warm_total / loaded_total if loaded_total else 0.0,
        recall=warm_total / requested_total if requested_total else 0.0,
    )


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """A run's memory in bytes: byte-minutes loaded and wasted in the scored window, and
    the most bytes loaded by lease at any minute of the trace (with the first minute it
    was reached)."""

    loaded_byte_minutes: float
    wasted_byte_minutes: float
    peak_loaded_bytes: float
    peak_minute: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_figures(
    usage: Usage,
    commands: Iterable[CommandTuple],
    size_of: Callable[[str], float],
    *,
    t0: float,
    end_minute: int,
    train_minutes: int = 0,
) -> MemoryFigures:
    """Byte-weighted memory of a decision log, ``size_of(model_id)`` bytes a model.

    >>> usage = Usage.from_events([(0.0, "a", 1), (120.0, "a", 1)], t0=0.0)
    >>> log = [(0.0, "a", "warm", 60.0, 300.0), (0.0, "b", "warm", 120.0, 240.0)]
    >>> m = memory_figures(usage, log, {"a": 3.0, "b": 5.0}.get, t0=0.0, end_minute=9)
    >>> m.loaded_byte_minutes, m.wasted_byte_minutes, m.peak_loaded_bytes, m.peak_minute
    (22.0, 19.0, 8.0, 2)
    """
    loaded = loaded_intervals(commands, t0=t0, end_minute=end_minute)
    lo, hi = train_minutes, end_minute + 1
    loaded_total = wasted_total = 0.0
    changes: dict[int, float] = {}
    for model_id, intervals in loaded.items():
        size = size_of(model_id)
        minutes = usage.minutes.get(model_id, [])
        for a, b in intervals:
            changes[a] = changes.get(a, 0.0) + size
            changes[b] = changes.get(b, 0.0) - size
            a, b = max(a, lo), min(b, hi)
            if a < b:
                used = bisect_left(minutes, b) - bisect_left(minutes, a)
                loaded_total += (b - a) * size
                wasted_total += (b - a - used) * size
    peak, peak_minute, level = 0.0, None, 0.0
    for minute in sorted(changes):
        level += changes[minute]
        if level > peak + 1e-9:
            peak, peak_minute = level, minute
    return MemoryFigures(loaded_total, wasted_total, peak, peak_minute)


def normalise(result: Score, reference: Score) -> Score:
    """``result`` with ``wasted_norm_pct`` set against ``reference`` (fixed:10's run).

    >>> base = Score(1, 2, 2, 1, 10, 9, 1, 50.0, 50.0, 0.1, 0.5)
    >>> normalise(replace(base, wasted_minutes=18), base).wasted_norm_pct
    200.0
    """
    if reference.wasted_minutes:
        pct = 100.0 * result.wasted_minutes / reference.wasted_minutes
    else:
        pct = 100.0 if result.wasted_minutes == 0 else math.inf
    return replace(result, wasted_norm_pct=pct)


__all__ = [
    "CommandLike",
    "CommandTuple",
    "Score",
    "Usage",
    "command_tuples",
    "loaded_intervals",
    "normalise",
    "p75",
    "score",
    "to_minute",
]
