"""``warmcast fleet-sim``: a stand-in for the serving fleet that closes the loop.

It replays a trace's requests minute by minute on event time, executes the warmup
commands a worker publishes on ``warmcast.warmup.v1``, and publishes what a fleet would
report: usage events marked ``cold_start`` with the wait as ``latency``, and metric events
for every load (``load_time_seconds``, and ``memory_bytes`` when known). At the end it
prints cold starts and loaded model-minutes, next to a plain fixed keep-alive fleet
(10 minutes) on the same requests.

How the fleet executes commands, loads models and counts model-minutes:
:mod:`tools.fleet`.

Event-time pacing: the requests of minute ``t`` are published only once every command
caused by the requests published so far has arrived (a barrier: the worker's ``/metrics``
counters with ``--worker-url``, else the worker's consumer group lag). The engine decides at
a model's first request of a minute and its leases start in the next minute, so the
commands deciding minute ``t`` are in hand when minute ``t`` is published, except those the
worker issues when it closes minute ``t - 1``, which it does on the first event of minute
``t``.


Python API: :class:`FleetSim` (and, from :mod:`tools.fleet`, :class:`LeaseBook`,
:class:`FleetState`, :class:`LocalFleet`). CLI: :func:`register` adds the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson

from engine.registry import make_policy
from streams.settings import WarmcastSettings
from tools.fleet import (
    FixedLoadTime,
    FleetState,
    FleetTotals,
    Load,
    LoadTimeModel,
    LocalFleet,
    LogNormalLoadTime,
    Outcome,
    by_minute,
    minute_of,
    slice_trace,
)
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
from tools.traces import Trace, load_trace, read_sizes

LOAD_TIME_METRIC = "load_time_seconds"
MEMORY_METRIC = "memory_bytes"
MIB = 1 << 20


class FleetSimError(RuntimeError):
    """The simulation could not run (no broker, a worker that does not answer, ...)."""


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
        first = minute_of(self.trace.t0)
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
    add_fleet_flags(p)
    add_worker_flags(p)
    add_trace_flags(p)
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p


def add_fleet_flags(p: argparse.ArgumentParser) -> None:
    """The fleet's options: the trace and its slice, the pace, load times, sizes, baseline."""
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


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """How the fleet waits on the worker, what it publishes, and its report."""
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
    "FleetReport",
    "FleetSim",
    "FleetSimError",
    "command",
    "format_fleets",
    "load_slice",
    "load_time_model",
    "register",
]
