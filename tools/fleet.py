"""The simulated serving fleet: load times, the lease book it keeps from warmup commands,
what each minute's requests find, and the same fleet driven in process by a policy
(:func:`run_local`). :mod:`tools.fleetsim` drives it from a worker's commands.

How the fleet executes commands (minutes are epoch-aligned, as the worker's):

- **Leases.** A command decided in minute ``i`` (its ``issued_at``) replaces the model's
  lease from minute ``i + 1`` on; the latest command wins (later ``issued_at``, then
  arrival order). ``warm`` keeps the model loaded during minutes ``[start, end)``;
  ``release`` unloads it. When a model's lease stops covering a minute, the model is
  unloaded at that minute's start.
- **Loads.** A model whose lease covers minute ``m`` and is not loaded starts loading
  ``load_time`` before the minute, but not before the command was issued, so it is ready at
  ``max(start of m, issued_at + load_time)``. A request that finds the model not leased is
  a **cold start**, once per model and minute: the model loads on demand, the request waits
  the whole load time and later requests of that minute wait for the rest; an on-demand
  load lasts its minute only (then the lease rules again). A request in a leased minute is
  warm, and waits only if the lease's load is not finished yet.
- **Accounting** is on event time, as docs/evaluation.md defines it: loaded model-minutes
  are the minutes leases cover; wasted ones are those without a request. The numbers are
  computed from the whole lease book at the end, so a command that reached the fleet after
  requests it would have changed were published (``late``) still counts where event time
  puts it; how many published flags that changed is reported.

Python API: :class:`LeaseBook`, :class:`FleetState`, :class:`LocalFleet`, :func:`run_local`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.capabilities import LearnsMetrics
from engine.core import WarmupEngine
from engine.policies import Policy
from engine.registry import make_policy
from engine.timebase import MinuteGrid
from streams.partitioning import partition_for
from tools.traces import Event, Trace

#: Lognormal load time fitted to the measured base-model switch latencies of the Alibaba
#: GenAI 2024 trace (7,531 switches): median 22.7 s (``exp(mu)``) and 99th percentile
#: 51.8 s (``exp(mu + 2.326 sigma)``).
LOGNORMAL_MU = 3.1232
LOGNORMAL_SIGMA = 0.3547


# ----------------------------------------------------------------------------- load times


class LoadTimeModel(Protocol):
    def draw(self, model_id: str) -> float: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FixedLoadTime:
    """Every load takes ``seconds``.

    >>> FixedLoadTime(20.0).draw("m")
    20.0
    """

    seconds: float

    def draw(self, model_id: str) -> float:
        return self.seconds

    def describe(self) -> str:
        return f"{self.seconds:g} s"


class LogNormalLoadTime:
    """Load times drawn from a lognormal distribution (seeded: runs repeat exactly).

    >>> times = LogNormalLoadTime(seed=1)
    >>> draws = sorted(times.draw("m") for _ in range(2000))
    >>> 20 < draws[1000] < 26, 44 < draws[1980] < 60
    (True, True)
    """

    def __init__(
        self, mu: float = LOGNORMAL_MU, sigma: float = LOGNORMAL_SIGMA, seed: int = 0
    ) -> None:
        self.mu = mu
        self.sigma = sigma
        self._rng = random.Random(seed)

    def draw(self, model_id: str) -> float:
        return self._rng.lognormvariate(self.mu, self.sigma)

    def describe(self) -> str:
        return (
            f"lognormal (median {math.exp(self.mu):.1f} s, "
            f"p99 {math.exp(self.mu + 2.3263 * self.sigma):.1f} s)"
        )


# ----------------------------------------------------------------------------- lease book


@dataclass(frozen=True, slots=True)
class LeaseEntry:
    """One command in minutes: decided in ``issued``, ``warm`` over ``[start, end)``."""

    issued: int
    seq: int
    action: str
    start: int
    end: int
    issued_at: float

    def covers(self, minute: int) -> bool:
        return self.action == "warm" and self.start <= minute < self.end


def minute_of(ts: float) -> int:
    return math.floor(ts / 60.0 + 1e-9)


def command_fields(command: Any) -> tuple[str, str, float, float, float, str | None]:
    """``(model_id, action, issued_at, start, end, command_id)`` of a command object or dict."""
    if isinstance(command, Mapping):
        get = command.get
        return (
            str(get("model_id")),
            str(get("action")),
            float(get("issued_at")),  # type: ignore[arg-type]
            float(get("start")),  # type: ignore[arg-type]
            float(get("end")),  # type: ignore[arg-type]
            get("command_id"),
        )
    return (
        command.model_id,
        command.action,
        float(command.issued_at),
        float(command.start),
        float(command.end),
        getattr(command, "command_id", None),
    )


class LeaseBook:
    """Every command per served model; the lease in force in a minute is the latest one
    decided before it.

    >>> book = LeaseBook()
    >>> _ = book.apply({"model_id": "m", "action": "warm", "issued_at": 0, "start": 60,
    ...                 "end": 660})
    >>> [book.covers("m", minute) for minute in (0, 1, 10, 11)]
    [False, True, True, False]
    >>> _ = book.apply({"model_id": "m", "action": "release", "issued_at": 240, "start": 240,
    ...                 "end": 240})
    >>> [book.covers("m", minute) for minute in (4, 5)]  # released from the next minute
    [True, False]
    """

    def __init__(self) -> None:
        self._entries: dict[str, list[LeaseEntry]] = {}
        self._issued: dict[str, list[int]] = {}
        self._ids: set[tuple[str, float]] = set()
        self._seq = 0

    def apply(self, command: Any) -> LeaseEntry | None:
        """Record a command; ``None`` for a duplicate delivery.

        A duplicate has the same ``command_id`` and ``issued_at``: the id alone names the
        lease, and a policy may decide the same lease again later (after another one).
        """
        model_id, action, issued_at, start, end, cid = command_fields(command)
        if cid is not None:
            key = (cid, issued_at)
            if key in self._ids:
                return None
            self._ids.add(key)
        self._seq += 1
        entry = LeaseEntry(
            minute_of(issued_at), self._seq, action, minute_of(start), minute_of(end), issued_at
        )
        entries = self._entries.setdefault(model_id, [])
        issued = self._issued.setdefault(model_id, [])
        at = bisect_right(issued, entry.issued)
        entries.insert(at, entry)
        issued.insert(at, entry.issued)
        return entry

    def models(self) -> Iterable[str]:
        return self._entries.keys()

    def in_force(self, model_id: str, minute: int) -> LeaseEntry | None:
        """The latest command decided before ``minute`` (it rules ``minute``)."""
        issued = self._issued.get(model_id)
        if not issued:
            return None
        at = bisect_right(issued, minute - 1)
        return self._entries[model_id][at - 1] if at else None

    def covers(self, model_id: str, minute: int) -> bool:
        entry = self.in_force(model_id, minute)
        return entry is not None and entry.covers(minute)

    def loaded_intervals(self, model_id: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Disjoint ``[a, b)`` minute intervals the model's leases cover within ``[lo, hi)``.

        >>> book = LeaseBook()
        >>> for issued, start, end in ((0, 1, 11), (5, 6, 16), (6, 20, 30)):
        ...     _ = book.apply({"model_id": "m", "action": "warm", "issued_at": 60 * issued,
        ...                     "start": 60 * start, "end": 60 * end})
        >>> book.loaded_intervals("m", 0, 25)  # the third lease cuts the second at minute 7
        [(1, 7), (20, 25)]
        """
        entries = self._entries.get(model_id, [])
        out: list[tuple[int, int]] = []
        for k, entry in enumerate(entries):
            piece_end = entries[k + 1].issued + 1 if k + 1 < len(entries) else hi
            if entry.action != "warm":
                continue
            a = max(entry.start, entry.issued + 1, lo)
            b = min(entry.end, piece_end, hi)
            if a >= b:
                continue
            if out and out[-1][1] >= a:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out


# ---------------------------------------------------------------------------------- fleet


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request (or a minute's count of them) met: cold or warm, and the wait."""

    model_id: str
    ts: float
    count: int
    cold: bool
    wait: float


@dataclass(frozen=True, slots=True)
class Load:
    """A model load: on demand (a cold start) or for a lease; ready at ``ready``."""

    model_id: str
    start: float
    ready: float
    on_demand: bool
    memory_bytes: float | None = None

    @property
    def seconds(self) -> float:
        return self.ready - self.start


@dataclass(slots=True)
class Step:
    minute: int
    outcomes: list[Outcome]
    loads: list[Load]
    unloaded: list[str]


@dataclass(frozen=True, slots=True)
class FleetTotals:
    """Accounting of a fleet over the simulated minutes (docs/evaluation.md)."""

    requests: int
    cold_starts: int
    requested_minutes: int
    loaded_minutes: int
    wasted_minutes: int
    models: int
    cold_by_minute: tuple[int, ...] = ()

    @property
    def cold_pct(self) -> float:
        return 100.0 * self.cold_starts / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cold_starts": self.cold_starts,
            "cold_pct": self.cold_pct,
            "requested_minutes": self.requested_minutes,
            "loaded_minutes": self.loaded_minutes,
            "wasted_minutes": self.wasted_minutes,
            "models": self.models,
        }


class FleetState:
    """The fleet's pure part: lease book, loaded set, and accounting on event time.

    ``apply`` takes commands as they arrive; ``step(minute, requests)`` runs one minute
    (unloads, lease loads, then the requests in order) and says what each request met.
    ``totals()`` is the event-time accounting over everything stepped.

    >>> fleet = FleetState(FixedLoadTime(20.0))
    >>> [o.cold for o in fleet.step(0, [(0.0, "m", 1), (30.0, "m", 2)]).outcomes]
    [True, False]
    >>> _ = fleet.apply({"model_id": "m", "action": "warm", "issued_at": 0.0, "start": 60.0,
    ...                  "end": 180.0})
    >>> [o.cold for o in fleet.step(1, [(60.0, "m", 1)]).outcomes]  # kept loaded
    [False]
    >>> _ = fleet.step(2, []), fleet.step(3, [(200.0, "m", 1)])
    >>> t = fleet.totals()
    >>> t.cold_starts, t.requests, t.loaded_minutes, t.wasted_minutes
    (2, 5, 2, 1)
    """

    def __init__(
        self,
        load_times: LoadTimeModel | None = None,
        memory: Mapping[str, float] | None = None,
    ) -> None:
        self.load_times: LoadTimeModel = load_times or LogNormalLoadTime()
        self.memory = dict(memory or {})
        self.book = LeaseBook()
        self.loaded: dict[str, float] = {}  # model -> ready time (loaded, or loading)
        self.requests: dict[str, dict[int, int]] = {}
        self.flagged_cold: set[tuple[str, int]] = set()
        self.first_minute: int | None = None
        self.last_minute: int | None = None
        self.commands = 0
        self.late_commands = 0

    def apply(self, command: Any) -> bool:
        """Execute a command from now on, and record it on event time."""
        entry = self.book.apply(command)
        if entry is None:
            return False
        self.commands += 1
        if self.last_minute is not None and entry.issued + 1 <= self.last_minute:
            self.late_commands += 1
        return True

    def step(self, minute: int, requests: Sequence[Event]) -> Step:
        """Run minute ``minute`` with its requests ``(ts, model_id, count)`` in time order."""
        if self.last_minute is not None and minute <= self.last_minute:
            raise ValueError(f"minute {minute} is not after {self.last_minute}")
        if self.first_minute is None:
            self.first_minute = minute
        self.last_minute = minute
        begin = 60.0 * minute
        book = self.book
        leased = {m for m in book.models() if book.covers(m, minute)}
        unloaded = [m for m in self.loaded if m not in leased]
        for m in unloaded:
            del self.loaded[m]
        loads: list[Load] = []
        for m in sorted(leased - self.loaded.keys()):
            entry = book.in_force(m, minute)
            assert entry is not None
            seconds = self.load_times.draw(m)
            ready = max(begin, entry.issued_at + seconds)
            self.loaded[m] = ready
            loads.append(Load(m, ready - seconds, ready, False, self.memory.get(m)))
        outcomes: list[Outcome] = []
        for ts, model_id, count in requests:
            per_minute = self.requests.setdefault(model_id, {})
            per_minute[minute] = per_minute.get(minute, 0) + count
            ready_at = self.loaded.get(model_id)
            if ready_at is None:
                seconds = self.load_times.draw(model_id)
                ready_at = self.loaded[model_id] = ts + seconds
                loads.append(Load(model_id, ts, ready_at, True, self.memory.get(model_id)))
                self.flagged_cold.add((model_id, minute))
                outcomes.append(Outcome(model_id, ts, count, True, seconds))
            else:
                outcomes.append(Outcome(model_id, ts, count, False, max(0.0, ready_at - ts)))
        return Step(minute, outcomes, loads, unloaded)

    def cold_minutes(self) -> set[tuple[str, int]]:
        """``(model, minute)`` pairs that were cold on event time, with every command known."""
        out: set[tuple[str, int]] = set()
        for model_id, per_minute in self.requests.items():
            for minute in per_minute:
                if not self.book.covers(model_id, minute):
                    out.add((model_id, minute))
        return out

    def flag_mismatches(self) -> int:
        """Model-minutes whose published ``cold_start`` differs from the event-time account
        (commands that arrived after the requests they would have changed)."""
        return len(self.cold_minutes() ^ self.flagged_cold)

    def totals(self, end_minute: int | None = None) -> FleetTotals:
        """Event-time accounting over minutes ``[first stepped, end_minute]``."""
        if self.first_minute is None or self.last_minute is None:
            return FleetTotals(0, 0, 0, 0, 0, 0)
        lo = self.first_minute
        hi = (self.last_minute if end_minute is None else end_minute) + 1
        loaded = warm = requests = requested = 0
        cold_by_minute = [0] * (hi - lo)
        for model_id in set(self.book.models()) | self.requests.keys():
            intervals = self.book.loaded_intervals(model_id, lo, hi)
            loaded += sum(b - a for a, b in intervals)
            for minute, count in self.requests.get(model_id, {}).items():
                if not lo <= minute < hi:
                    continue
                requests += count
                requested += 1
                if any(a <= minute < b for a, b in intervals):
                    warm += 1
                else:
                    cold_by_minute[minute - lo] += 1
        return FleetTotals(
            requests=requests,
            cold_starts=requested - warm,
            requested_minutes=requested,
            loaded_minutes=loaded,
            wasted_minutes=loaded - warm,
            models=sum(1 for per in self.requests.values() if per),
            cold_by_minute=tuple(cold_by_minute),
        )


class LocalFleet:
    """A :class:`FleetState` whose commands come from engines run in-process, not from
    Kafka: the plain keep-alive fleet, or a policy decided offline.

    Given several policies, each is the engine of one partition and serves the models
    that hash to it (:func:`streams.partitioning.partition_for`), as the worker's
    partition-scoped engines do. Engines move on their own events only, as the worker's
    do; ``finish`` closes the last minute, as the backtest does.

    >>> from engine.policies import FixedKeepAlive
    >>> fleet = LocalFleet(FixedKeepAlive(10), FixedLoadTime(20.0))
    >>> for minute, requests in ((0, [(0.0, "m", 1)]), (5, [(300.0, "m", 1)]),
    ...                          (20, [(1200.0, "m", 1)])):
    ...     _ = fleet.step(minute, requests)
    >>> fleet.finish(25).cold_starts
    2
    """

    def __init__(
        self, policy: Policy | Sequence[Policy], load_times: LoadTimeModel | None = None
    ) -> None:
        policies = list(policy) if isinstance(policy, Sequence) else [policy]
        if not policies:
            raise ValueError("a local fleet needs at least one policy")
        self.state = FleetState(load_times)
        self.engines = [WarmupEngine(p, grid=MinuteGrid(0.0)) for p in policies]

    def engine_of(self, model_id: str) -> WarmupEngine:
        return self.engines[partition_for(model_id, len(self.engines))]

    def step(self, minute: int, requests: Sequence[Event]) -> Step:
        step = self.state.step(minute, requests)
        for ts, model_id, count in requests:
            for command in self.engine_of(model_id).observe(model_id, ts, count):
                self.state.apply(command)
        return step

    def finish(self, end_minute: int) -> FleetTotals:
        """Close every engine's minutes up to ``end_minute``; the totals."""
        for engine in self.engines:
            for command in engine.advance(60.0 * (end_minute + 1)):
                self.state.apply(command)
        return self.state.totals(end_minute)


def run_local(
    trace: Trace,
    policy: str,
    *,
    partitions: int = 1,
    load_times: LoadTimeModel | None = None,
    knobs: Mapping[str, Any] | None = None,
    sizes: Mapping[str, float] | None = None,
) -> FleetTotals:
    """``policy`` (with its ``knobs``) over the trace (a :func:`slice_trace`) offline, with
    ``partitions`` partition-scoped engines; the totals (``cold_by_minute`` included).
    ``sizes`` (bytes) reach a policy that learns from metric events before the first event."""
    policies = [make_policy(policy, **(knobs or {})) for _ in range(partitions)]
    for p in policies:
        if sizes and isinstance(p, LearnsMetrics):
            for model_id, size in sizes.items():
                p.observe_metric(model_id, "memory_bytes", size)
    fleet = LocalFleet(policies, load_times)
    events = by_minute(trace.events)
    first = minute_of(trace.t0)
    end = first + trace.end_minute
    for minute in range(first, end + 1):
        fleet.step(minute, events.get(minute, []))
    return fleet.finish(end)


# ---------------------------------------------------------------------------------- input


def slice_trace(
    trace: Trace,
    start: float | None = None,
    end: float | None = None,
    minutes: int | None = None,
) -> Trace:
    """The events in ``[start, end)`` (at most ``minutes`` minutes), on the worker's grid.

    Minute 0 of the slice starts at the epoch-aligned minute of ``start`` (default: the
    trace's ``t0``), so that a backtest of the slice and a worker (whose minutes are
    epoch-aligned) cut time the same way.

    >>> t = Trace("x", "azure", [(0.0, "a", 1), (60.0, "a", 2), (150.0, "b", 1)], 0.0, 4)
    >>> s = slice_trace(t, start=60.0, minutes=2)
    >>> s.events, s.t0, s.end_minute
    ([(60.0, 'a', 2), (150.0, 'b', 1)], 60.0, 1)
    """
    lo = trace.t0 if start is None else start
    t0 = 60.0 * math.floor(lo / 60.0)
    hi = trace.end_ts if end is None else min(end, trace.end_ts)
    if minutes is not None:
        hi = min(hi, t0 + 60.0 * minutes)
    events = [e for e in trace.events if lo <= e[0] < hi]
    end_minute = max(math.ceil((hi - t0) / 60.0) - 1, 0)
    return Trace(trace.path, trace.fmt, events, t0, end_minute, dict(trace.skipped))


def by_minute(events: Iterable[Event]) -> dict[int, list[Event]]:
    """Events grouped by their epoch-aligned minute, order kept.

    >>> by_minute([(0.0, "a", 1), (59.0, "b", 1), (60.0, "a", 1)])
    {0: [(0.0, 'a', 1), (59.0, 'b', 1)], 1: [(60.0, 'a', 1)]}
    """
    out: dict[int, list[Event]] = {}
    for event in events:
        out.setdefault(minute_of(event[0]), []).append(event)
    return out


__all__ = [
    "LOGNORMAL_MU",
    "LOGNORMAL_SIGMA",
    "FixedLoadTime",
    "FleetState",
    "FleetTotals",
    "LeaseBook",
    "LocalFleet",
    "LogNormalLoadTime",
    "by_minute",
    "command_fields",
    "minute_of",
    "run_local",
    "slice_trace",
]
