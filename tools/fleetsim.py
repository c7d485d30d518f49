"""``warmcast fleet-sim``: a stand-in for the serving fleet that closes the loop.

It replays a trace's requests minute by minute on event time, executes the warmup
commands a worker publishes on ``warmcast.warmup.v1``, and publishes what a fleet would
report: usage events marked ``cold_start`` with the wait as ``latency``, and metric events
for every load (``load_time_seconds``, and ``memory_bytes`` when known). At the end it
prints cold starts and loaded model-minutes, next to a plain fixed keep-alive fleet
(10 minutes) on the same requests.

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

Event-time pacing: the requests of minute ``t`` are published only once every command
caused by the requests published so far has arrived (a barrier: the worker's ``/metrics``
counters with ``--worker-url``, else the worker's consumer group lag). The engine decides at
a model's first request of a minute and its leases start in the next minute, so the
commands deciding minute ``t`` are in hand when minute ``t`` is published, except those the
worker issues when it closes minute ``t - 1``, which it does on the first event of minute
``t``.

Python API: :class:`LeaseBook`, :class:`FleetState`, :class:`LocalFleet`,
:class:`FleetSim`. CLI: :func:`register` adds the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson

from engine.capabilities import LearnsMetrics
from engine.core import WarmupEngine
from engine.policies import Policy
from engine.registry import make_policy
from engine.timebase import MinuteGrid
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tools.replay import (
    METRICS,
    USAGE,
    BatchSender,
    Pacer,
    add_kafka_flags,
    add_trace_flags,
    iso,
    positive_float,
    positive_int,
    producer_for,
    settings_for,
    time_arg,
    topic_routes,
    trace_mapping,
)
from tools.traces import Event, Trace, load_trace, read_sizes

#: Lognormal load time fitted to the measured base-model switch latencies of the Alibaba
#: GenAI 2024 trace (7,531 switches): median 22.7 s (``exp(mu)``) and 99th percentile
#: 51.8 s (``exp(mu + 2.326 sigma)``).
LOGNORMAL_MU = 3.1232
LOGNORMAL_SIGMA = 0.3547

LOAD_TIME_METRIC = "load_time_seconds"
MEMORY_METRIC = "memory_bytes"
MIB = 1 << 20


class FleetSimError(RuntimeError):
    """The simulation could not run (no broker, a worker that does not answer, ...)."""


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


def _minute(ts: float) -> int:
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
            _minute(issued_at), self._seq, action, _minute(start), _minute(end), issued_at
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
    first = _minute(trace.t0)
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
        out.setdefault(_minute(event[0]), []).append(event)
    return out


# ------------------------------------------------------------------------------ barriers


class CommandFeed:
    """Reads warmup commands from the warmup topic into fleets."""

    def __init__(self, consumer: Any, partitions: list[Any], fleets: Sequence[FleetState]):
        self.consumer = consumer
        self.partitions = partitions
        self.fleets = list(fleets)
        self.received = 0
        self.invalid = 0
        self.versions: Counter[str] = Counter()

    async def poll(self, timeout_ms: int = 10) -> int:
        from schemas.warmup import WarmupCommand

        batches = await self.consumer.getmany(*self.partitions, timeout_ms=timeout_ms)
        n = 0
        for records in batches.values():
            for record in records:
                n += 1
                try:
                    command = WarmupCommand.model_validate_json(record.value)
                except ValueError:
                    self.invalid += 1
                    continue
                self.received += 1
                self.versions[command.policy_version] += 1
                for fleet in self.fleets:
                    fleet.apply(command)
        return n

    async def until_count(self, count: int, deadline: float) -> None:
        while self.received + self.invalid < count:
            if time.monotonic() > deadline:
                raise FleetSimError(
                    f"{count - self.received - self.invalid} warmup commands the worker "
                    "published did not arrive in time"
                )
            await self.poll()

    async def until_end(self, deadline: float) -> None:
        ends = await self.consumer.end_offsets(self.partitions)
        while True:
            positions = [await self.consumer.position(tp) for tp in ends]
            if all(p >= end for p, end in zip(positions, ends.values(), strict=True)):
                return
            if time.monotonic() > deadline:
                raise FleetSimError("the warmup topic could not be read to its end in time")
            await self.poll()


@dataclass(frozen=True, slots=True)
class Sent:
    """Usage events and messages published so far."""

    events: int
    messages: int


class Barrier(Protocol):
    description: str

    async def start(self) -> None: ...

    async def settle(self, sent: Sent, feed: CommandFeed, timeout: float) -> None: ...

    async def close(self) -> None: ...


def prometheus_sum(text: str, name: str, where: str = "") -> float:
    """Sum of a metric's samples in Prometheus text format (those whose labels hold
    ``where``, e.g. ``topic="usage"``).

    >>> text = 'x_total{a="1"} 2.0\\nx_total{a="2"} 3.0\\nx_totals 9\\n'
    >>> prometheus_sum(text, "x_total"), prometheus_sum(text, "x_total", 'a="2"')
    (5.0, 3.0)
    """
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            if where in labels:
                total += float(value)
    return total


#: A usage message is fully processed (engine, health, commands published) when the
#: worker's processing timer for it stops.
PROCESSED = ("warmcast_message_processing_seconds_count", 'topic="usage"')
COMMANDS = "warmcast_warmup_commands_total"


class MetricsBarrier:
    """Settled when the workers (their ``/metrics``) finished processing every usage
    message sent, and the fleet received as many commands as they published since."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.description = "worker /metrics at " + ", ".join(self.urls)
        self._session: Any = None
        self._base: tuple[float, float] = (0.0, 0.0)

    async def _counts(self) -> tuple[float, float]:
        processed = commands = 0.0
        for url in self.urls:
            async with self._session.get(url + "/metrics") as response:
                text = await response.text()
            processed += prometheus_sum(text, *PROCESSED)
            commands += prometheus_sum(text, COMMANDS)
        return processed, commands

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            self._base = await self._counts()
        except (aiohttp.ClientError, OSError) as exc:
            await self.close()
            raise FleetSimError(f"cannot read the worker's /metrics: {exc}") from exc

    async def settle(self, sent: Sent, feed: CommandFeed, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        base_processed, base_commands = self._base
        while True:
            processed, commands = await self._counts()
            if processed - base_processed >= sent.messages:
                await feed.until_count(int(commands - base_commands), deadline)
                return
            if time.monotonic() > deadline:
                raise FleetSimError(
                    f"the workers processed {processed - base_processed:.0f} of "
                    f"{sent.messages} usage messages within {timeout:.0f}s"
                )
            await feed.poll(timeout_ms=5)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class LagBarrier:
    """Settled when the worker's consumer group has committed every usage message sent
    (the worker flushes its commands before it commits), and the fleet has read the
    warmup topic to its end. Needs no access to the worker, but a worker commits only
    every few seconds."""

    def __init__(self, settings: WarmcastSettings, group_id: str, usage_topic: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self.usage_topic = usage_topic
        self.description = f"consumer group {group_id!r} lag on {usage_topic}"
        self._admin: Any = None

    async def start(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        from streams.kafka import client_kwargs

        self._admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
        await self._admin.start()

    async def settle(self, sent: Sent, feed: CommandFeed, timeout: float) -> None:
        from aiokafka import TopicPartition

        deadline = time.monotonic() + timeout
        n = len(await self._partitions())
        tps = [TopicPartition(self.usage_topic, p) for p in range(n)]
        ends = await feed.consumer.end_offsets(tps)
        while True:
            committed = await self._admin.list_consumer_group_offsets(self.group_id, partitions=tps)
            if all(
                (c := committed.get(tp)) is not None and c.offset >= end
                for tp, end in ends.items()
                if end > 0
            ):
                break
            if time.monotonic() > deadline:
                raise FleetSimError(
                    f"consumer group {self.group_id!r} did not catch up with "
                    f"{self.usage_topic} within {timeout:.0f}s (is a worker running?)"
                )
            await feed.poll(timeout_ms=50)
        await feed.until_end(deadline)

    async def _partitions(self) -> list[int]:
        described = await self._admin.describe_topics([self.usage_topic])
        return [p["partition"] for t in described for p in t["partitions"]]

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


# --------------------------------------------------------------------------------- driver


@dataclass(slots=True)
class FleetReport:
    """What a fleet simulation found; ``table()`` prints it."""

    fleet: FleetTotals
    baseline: FleetTotals
    keepalive: int
    first_minute: int
    end_minute: int
    policy_versions: list[str] = field(default_factory=list)
    commands: int = 0
    late_commands: int = 0
    flag_mismatches: int = 0
    usage_events: int = 0
    metric_events: int = 0
    wall_seconds: float = 0.0
    load_times: str = ""
    barrier: str = ""

    @property
    def minutes(self) -> int:
        return self.end_minute - self.first_minute + 1

    @property
    def fleet_label(self) -> str:
        versions = ", ".join(self.policy_versions) or "no commands"
        return f"warmcast worker ({versions})"

    def table(self) -> str:
        return format_fleets(
            [
                (self.fleet_label, self.fleet),
                (f"fixed keep-alive {self.keepalive} min", self.baseline),
            ]
        )

    def describe(self) -> str:
        speed = 60.0 * self.minutes / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"{self.minutes} minutes of event time ({iso(60.0 * self.first_minute)} .. "
            f"{iso(60.0 * (self.end_minute + 1))}) in {self.wall_seconds:.1f}s wall "
            f"({speed:,.0f}x); {self.usage_events} usage and {self.metric_events} metric "
            f"events published; {self.commands} commands executed ({self.late_commands} "
            f"late, {self.flag_mismatches} published cold-start flags changed by them); "
            f"load times {self.load_times}; barrier: {self.barrier}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.to_dict(),
            "baseline": {"keepalive": self.keepalive, **self.baseline.to_dict()},
            "policy_versions": self.policy_versions,
            "first_minute_ts": 60.0 * self.first_minute,
            "minutes": self.minutes,
            "commands": self.commands,
            "late_commands": self.late_commands,
            "flag_mismatches": self.flag_mismatches,
            "usage_events": self.usage_events,
            "metric_events": self.metric_events,
            "wall_seconds": self.wall_seconds,
            "load_times": self.load_times,
            "barrier": self.barrier,
        }


def format_fleets(rows: Sequence[tuple[str, FleetTotals]]) -> str:
    """Fleets side by side: requests, cold starts, loaded and wasted model-minutes.

    >>> print(format_fleets([("a", FleetTotals(10, 2, 5, 7, 4, 1))]))
    fleet  requests  cold starts  cold %  loaded model-min  wasted model-min
    -----  --------  -----------  ------  ----------------  ----------------
    a            10            2  20.000                 7                 4
    """
    header = ("fleet", "requests", "cold starts", "cold %", "loaded model-min", "wasted model-min")
    table = [header] + [
        (
            label,
            str(t.requests),
            str(t.cold_starts),
            f"{t.cold_pct:.3f}",
            str(t.loaded_minutes),
            str(t.wasted_minutes),
        )
        for label, t in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def usage_value(outcome: Outcome) -> bytes:
    return orjson.dumps(
        {
            "model_id": outcome.model_id,
            "ts": outcome.ts,
            "count": outcome.count,
            "cold_start": outcome.cold,
            "latency": round(outcome.wait, 3),
        }
    )


def metric_values(load: Load) -> list[tuple[float, bytes]]:
    out = [
        (
            load.ready,
            orjson.dumps(
                {
                    "model_id": load.model_id,
                    "ts": load.ready,
                    "name": LOAD_TIME_METRIC,
                    "value": round(load.seconds, 3),
                    "unit": "seconds",
                }
            ),
        )
    ]
    if load.memory_bytes is not None:
        body = {
            "model_id": load.model_id,
            "ts": load.start,
            "name": MEMORY_METRIC,
            "value": load.memory_bytes,
            "unit": "bytes",
        }
        out.append((load.start, orjson.dumps(body)))
    return out


class FleetSim:
    """Runs the fleet against a worker over Kafka (see the module docstring)."""

    def __init__(
        self,
        settings: WarmcastSettings,
        trace: Trace,
        *,
        load_times: LoadTimeModel | None = None,
        baseline_load_times: LoadTimeModel | None = None,
        memory: Mapping[str, float] | None = None,
        worker_urls: Sequence[str] = (),
        group_id: str | None = None,
        speed: float | None = None,
        keepalive: int = 10,
        envelope: int = 1000,
        publish_metrics: bool = True,
        settle_timeout: float = 120.0,
        progress: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise FleetSimError("no broker: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap")
        self.settings = settings
        self.trace = trace
        self.fleet = FleetState(load_times, memory)
        self.baseline = LocalFleet(make_policy(f"fixed:{keepalive}"), baseline_load_times)
        self.keepalive = keepalive
        self.speed = speed
        self.envelope = envelope
        self.publish_metrics = publish_metrics
        self.settle_timeout = settle_timeout
        self.barrier: Barrier = (
            MetricsBarrier(worker_urls)
            if worker_urls
            else LagBarrier(settings, group_id or settings.app_id, settings.topic("usage"))
        )
        self.stream = stream if stream is not None else sys.stderr
        if progress is None:
            isatty = getattr(self.stream, "isatty", None)
            progress = bool(isatty and isatty())
        self.progress = progress

    @property
    def minutes(self) -> range:
        first = _minute(self.trace.t0)
        return range(first, first + self.trace.end_minute + 1)

    async def run(self) -> FleetReport:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka import client_kwargs

        settings = self.settings
        routes = await topic_routes(settings, (USAGE, METRICS, "warmup"))
        warmup = routes.pop("warmup")
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            auto_offset_reset="latest",
        )
        producer = producer_for(settings, linger_ms=1)
        started = time.monotonic()
        await consumer.start()
        await producer.start()
        try:
            tps = [TopicPartition(warmup.name, p) for p in range(warmup.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            await self.barrier.start()
            feed = CommandFeed(consumer, tps, [self.fleet])
            sender = BatchSender(producer, routes, self.envelope)
            report = await self._loop(feed, sender)
        finally:
            await self.barrier.close()
            await producer.stop()
            await consumer.stop()
        report.wall_seconds = time.monotonic() - started
        return report

    async def _loop(self, feed: CommandFeed, sender: BatchSender) -> FleetReport:
        events = by_minute(self.trace.events)
        pacer = Pacer(self.speed)
        unsettled = False
        minutes = self.minutes
        for n, minute in enumerate(minutes):
            if unsettled:
                await sender.close()
                await self.barrier.settle(self._sent(sender), feed, self.settle_timeout)
                unsettled = False
            requests = events.get(minute, [])
            step = self.fleet.step(minute, requests)
            self.baseline.step(minute, requests)
            for outcome in step.outcomes:
                wait = pacer.delay(outcome.ts)
                if wait > 0.001:
                    await sender.flush()
                    await asyncio.sleep(wait)
                sender.add(USAGE, outcome.model_id, usage_value(outcome), outcome.ts)
            if self.publish_metrics:
                for load in step.loads:
                    for ts, value in metric_values(load):
                        sender.add(METRICS, load.model_id, value, ts)
            if step.outcomes:
                unsettled = True
            await sender.flush()
            if self.progress:
                self._draw(n + 1, len(minutes), minute, feed)
        await sender.close()
        if unsettled:
            await self.barrier.settle(self._sent(sender), feed, self.settle_timeout)
        if self.progress:
            self.stream.write("\n")
        end = minutes[-1]
        return FleetReport(
            fleet=self.fleet.totals(end),
            baseline=self.baseline.finish(end),
            keepalive=self.keepalive,
            first_minute=minutes[0],
            end_minute=end,
            policy_versions=sorted(feed.versions),
            commands=self.fleet.commands,
            late_commands=self.fleet.late_commands,
            flag_mismatches=self.fleet.flag_mismatches(),
            usage_events=sender.events[USAGE],
            metric_events=sender.events[METRICS],
            load_times=self.fleet.load_times.describe(),
            barrier=self.barrier.description,
        )

    @staticmethod
    def _sent(sender: BatchSender) -> Sent:
        return Sent(sender.events[USAGE], sender.messages_by_kind[USAGE])

    def _draw(self, done: int, total: int, minute: int, feed: CommandFeed) -> None:
        cold = len(self.fleet.flagged_cold)
        base = len(self.baseline.state.flagged_cold)
        self.stream.write(
            f"\rfleet-sim  minute {done}/{total}  event time {iso(60.0 * minute)}  "
            f"cold starts {cold} (keep-alive {base})  commands {feed.received}   "
        )
        self.stream.flush()


def load_slice(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    start: float | None = None,
    end: float | None = None,
    minutes: int | None = None,
    **mapping: Any,
) -> Trace:
    """Load a trace with :func:`tools.traces.load_trace` and cut the slice to simulate."""
    trace = load_trace(path, fmt, **mapping)
    if not trace.events:
        raise ValueError(f"{path}: no usage events")
    return slice_trace(trace, start, end, minutes)


def load_time_model(seconds: float | None, seed: int = 0) -> LoadTimeModel:
    return FixedLoadTime(seconds) if seconds is not None else LogNormalLoadTime(seed=seed)


# ------------------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``fleet-sim`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fleet-sim",
        help="a stand-in serving fleet: replays requests, executes warmup commands",
        description=(
            "Replays a trace's requests on event time against a running worker, executes "
            "the warmup commands it publishes (a lease loads the model ahead of its start, "
            "a lease that ends or a release unloads it, the latest command wins), publishes "
            "usage events (cold_start, latency = the wait) and load-time metric events, and "
            "prints cold starts and loaded model-minutes next to a fixed keep-alive fleet."
        ),
        epilog="exit status: 0 done, 2 usage error, unreadable trace, broker or worker error",
    )
    p.add_argument("path", metavar="TRACE", help="trace file (as warmcast backtest reads)")
    p.add_argument("--start", type=time_arg, help="first event time to simulate")
    p.add_argument("--end", type=time_arg, help="simulate events before this time")
    p.add_argument("--minutes", type=positive_int, help="simulate at most N minutes")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=positive_float, metavar="X", help="event-time seconds per wall second"
    )
    pace.add_argument(
        "--max-speed",
        action="store_true",
        help="as fast as the worker answers (default; every minute still waits for its commands)",
    )
    p.add_argument(
        "--load-time",
        type=positive_float,
        metavar="SECONDS",
        help="every load takes SECONDS (default: lognormal, median 22.7 s, p99 51.8 s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the load-time draws")
    p.add_argument(
        "--memory",
        metavar="CSV",
        help="memory per model (model_id or HashApp, and memory_bytes, memory_mb or "
        "AverageAllocatedMb): published as memory_bytes metric events",
    )
    p.add_argument("--keepalive", type=positive_int, default=10, help="baseline keep-alive (min)")
    p.add_argument(
        "--worker-url",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's web address (http://127.0.0.1:6066), repeatable: the barrier reads "
        "its /metrics (fast); without it the barrier waits on the worker's consumer group",
    )
    p.add_argument(
        "--group",
        help="the worker's consumer group, for the lag barrier [env: WARMCAST_APP_ID]",
    )
    p.add_argument(
        "--envelope", type=positive_int, default=1000, help="events per message (default 1000)"
    )
    p.add_argument("--no-metrics", action="store_true", help="publish no metric events")
    p.add_argument(
        "--settle-timeout",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="give up when a minute's commands take longer (default 120)",
    )
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    add_trace_flags(p)
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``fleet-sim`` subcommand from parsed arguments; the exit status."""
    from aiokafka.errors import KafkaError

    out = stdout if stdout is not None else sys.stdout
    try:
        trace = load_slice(
            args.path,
            fmt=args.fmt,
            start=args.start,
            end=args.end,
            minutes=args.minutes,
            **trace_mapping(args),
        )
        sim = FleetSim(
            settings_for(args.bootstrap, args.namespace),
            trace,
            load_times=load_time_model(args.load_time, args.seed),
            baseline_load_times=load_time_model(args.load_time, args.seed),
            memory=read_sizes(args.memory) if args.memory else None,
            worker_urls=args.worker_url,
            group_id=args.group,
            speed=None if args.max_speed else args.speed,
            keepalive=args.keepalive,
            envelope=args.envelope,
            publish_metrics=not args.no_metrics,
            settle_timeout=args.settle_timeout,
        )
        report = asyncio.run(sim.run())
    except (OSError, ValueError, FleetSimError, KafkaError) as exc:
        print(f"warmcast fleet-sim: {exc}", file=sys.stderr)
        return 2
    print(report.table(), file=out)
    print(report.describe(), file=out)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    return 0


__all__ = [
    "LOGNORMAL_MU",
    "LOGNORMAL_SIGMA",
    "FixedLoadTime",
    "FleetReport",
    "FleetSim",
    "FleetState",
    "FleetTotals",
    "LeaseBook",
    "LocalFleet",
    "LogNormalLoadTime",
    "command",
    "load_slice",
    "register",
    "run_local",
    "slice_trace",
]
