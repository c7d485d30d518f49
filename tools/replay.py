"""``warmcast replay``: publish historical logs to Kafka as usage and metric events.

Input files are the ones the backtest reads (:mod:`tools.traces`: Azure per-minute counts,
per-request CSV with a column mapping) and JSONL event logs, plain or gzip. JSONL lines may
be usage events or metric events (a metric event has ``name`` and ``value``); each line is
validated against its contract and published as written. Several files are merged in
event-time order (stable: equal times keep file order, then line order).

Each message carries the event time as its Kafka timestamp (ms) and the served model as
its key. ``--envelope N`` packs up to N events per message (a JSON array, the batch
envelope of the usage topic): events are grouped by the partition their model hashes to
(:func:`streams.partitioning.partition_for` with the topic's real partition count), so each
envelope goes to the partition that owns its models, keyed by its first model id and
stamped with its first event's time.

Pacing is on event time: ``--speed X`` publishes X event-time seconds per wall second;
``--max-speed`` (the default) as fast as the broker takes them.

Python API: :func:`read_events`, :func:`publish`, :func:`run_replay`.
CLI: :func:`register` adds the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, TextIO, cast

import orjson
from pydantic import ValidationError

from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings, load_settings
from tools.traces import GZIP_MAGIC, load_trace, parse_time, sniff_format

EXIT_OK = 0
EXIT_BAD_LINES = 1
EXIT_ERROR = 2

USAGE = "usage"
METRICS = "metrics"

#: ``(ts, kind, key, value)``: event time (epoch s), ``usage`` or ``metrics``, the message
#: key (model id, or node id for a node's metric) and the event's JSON.
Record = tuple[float, str, str, bytes]

EXIT_CODES = """exit status:
  0  every event was published (bad lines, if any, were reported and skipped)
  1  --strict and at least one bad line: nothing was published
  2  usage error, unreadable input, or the broker could not be reached or refused a send
"""


class ReplayError(RuntimeError):
    """The replay could not run (bad arguments, unreadable input, broker errors)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line (or, for CSV and Azure files, a kind of row) that was skipped.

    >>> str(BadLine("a.jsonl", 7, "malformed JSON"))
    'a.jsonl:7: malformed JSON'
    >>> str(BadLine("b.csv", None, "bad time", count=3))
    'b.csv: 3 rows skipped: bad time'
    """

    path: str
    line: int | None
    reason: str
    count: int = 1

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.count} rows skipped: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class Events:
    """Records read from input files, in event-time order, and what was skipped."""

    records: list[Record] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    files: int = 0
    formats: list[str] = field(default_factory=list)

    @property
    def bad_count(self) -> int:
        return sum(b.count for b in self.bad)


# ---------------------------------------------------------------------------------- input


def _open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == GZIP_MAGIC:
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _short(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[:2]
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in first)


def classify(obj: dict[str, Any]) -> tuple[str, str, float]:
    """``(kind, key, ts)`` of one JSON event; raises ``ValidationError`` if it is invalid.

    >>> classify({"model_id": "m", "ts": "1970-01-01T00:01:00Z"})
    ('usage', 'm', 60.0)
    >>> classify({"node_id": "n1", "ts": 5, "name": "memory", "value": 1e9})
    ('metrics', 'n1', 5.0)
    """
    if "name" in obj and "value" in obj:
        metric = MetricEvent.model_validate(obj)
        key = metric.model_id if metric.model_id is not None else metric.node_id
        return METRICS, key or "", metric.ts
    usage = UsageEvent.model_validate(obj)
    return USAGE, usage.model_id, usage.ts


def read_jsonl(path: str | os.PathLike[str]) -> Events:
    """Usage and metric events of a JSONL file, each line kept as written."""
    out = Events(files=1)
    name = os.fspath(path)
    records, bad = out.records, out.bad
    loads = orjson.loads
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                bad.append(BadLine(name, lineno, f"malformed JSON ({exc})"))
                continue
            if not isinstance(obj, dict):
                bad.append(BadLine(name, lineno, "not a JSON object"))
                continue
            try:
                kind, key, ts = classify(obj)
            except ValidationError as exc:
                bad.append(BadLine(name, lineno, f"schema violation: {_short(exc)}"))
                continue
            records.append((ts, kind, key, line))
    out.records.sort(key=lambda r: r[0])
    return out


def read_trace(path: str | os.PathLike[str], fmt: str = "auto", **mapping: Any) -> Events:
    """Usage events of an Azure per-minute file or a per-request CSV (``tools.traces``).

    Each event is ``{"model_id", "ts", "count"}``; rows the loader skipped are reported
    by reason and count (the loader does not keep their line numbers).
    """
    trace = load_trace(path, fmt, **mapping)
    dumps = orjson.dumps
    out = Events(files=1)
    out.records = [
        (ts, USAGE, model_id, dumps({"model_id": model_id, "ts": ts, "count": count}))
        for ts, model_id, count in trace.events
    ]
    out.bad = [BadLine(trace.path, None, why, n) for why, n in trace.skipped.items()]
    return out


def read_events(
    paths: Sequence[str | os.PathLike[str]], fmt: str = "auto", **mapping: Any
) -> Events:
    """Read every file and merge them in event-time order (stable across files).

    ``fmt`` is ``auto`` (sniffed per file), ``azure``, ``csv`` or ``jsonl``; ``mapping``
    holds :func:`tools.traces.load_trace`'s keyword arguments (CSV column mapping, ``t0``).
    """
    merged = Events()
    for path in paths:
        kind = sniff_format(path) if fmt == "auto" else fmt
        part = read_jsonl(path) if kind == "jsonl" else read_trace(path, kind, **mapping)
        merged.records.extend(part.records)
        merged.bad.extend(part.bad)
        merged.files += 1
        merged.formats.append(kind)
    if len(paths) > 1:
        merged.records.sort(key=lambda r: r[0])
    return merged


def select(
    records: list[Record],
    start: float | None = None,
    end: float | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Records with ``start <= ts < end``, at most ``limit`` of them.

    >>> rs = [(float(t), "usage", "m", b"{}") for t in range(10)]
    >>> [r[0] for r in select(rs, start=2, end=8, limit=3)]
    [2.0, 3.0, 4.0]
    """
    if start is not None or end is not None:
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        records = [r for r in records if lo <= r[0] < hi]
    if limit is not None:
        records = records[: max(limit, 0)]
    return records


# ----------------------------------------------------------------------------- publishing


class Pacer:
    """Maps event time to wall time at ``speed`` event-seconds per wall second.

    ``speed=None`` never waits.

    >>> p = Pacer(60.0, clock=lambda: 100.0)
    >>> p.delay(0.0), p.delay(120.0)  # the first event fixes the origin
    (0.0, 2.0)
    >>> Pacer(None).delay(1e9)
    0.0
    """

    def __init__(self, speed: float | None, clock: Any = time.monotonic) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.clock = clock
        self._origin: tuple[float, float] | None = None

    def delay(self, ts: float) -> float:
        """Wall seconds to wait before the event at ``ts`` is due (0 when it is)."""
        if self.speed is None:
            return 0.0
        now = self.clock()
        if self._origin is None:
            self._origin = (ts, now)
            return 0.0
        ts0, wall0 = self._origin
        return max(0.0, wall0 + (ts - ts0) / self.speed - now)


@dataclass(frozen=True, slots=True)
class TopicRoute:
    name: str
    partitions: int


def envelope_value(values: Sequence[bytes]) -> bytes:
    """A batch envelope (a JSON array) of events already serialised.

    >>> envelope_value([b'{"a":1}', b'{"b":2}'])
    b'[{"a":1},{"b":2}]'
    """
    return b"[" + b",".join(values) + b"]"


class BatchSender:
    """Routes events to partitions, packs envelopes and producer batches, sends them.

    ``add`` only appends (no await per event); full producer batches queue up in
    ``ready`` and go out on ``pump``; ``flush`` also sends partial envelopes and batches
    (before a pacing pause, and at the end). ``producer=None`` counts without sending
    (a dry run).
    """

    def __init__(
        self, producer: Any, routes: dict[str, TopicRoute], envelope: int | None = None
    ) -> None:
        if envelope is not None and envelope < 1:
            raise ValueError("envelope must be at least 1 event")
        self.producer = producer
        self.routes = routes
        self.envelope = envelope
        self.messages = 0
        self.events: dict[str, int] = dict.fromkeys(routes, 0)
        self.messages_by_kind: dict[str, int] = dict.fromkeys(routes, 0)
        self.ready: list[tuple[str, int, Any]] = []
        self._pending: dict[tuple[str, int], list[tuple[str, bytes, float]]] = {}
        self._batches: dict[tuple[str, int], Any] = {}
        self._futures: list[asyncio.Future[Any]] = []

    def add(self, kind: str, key: str, value: bytes, ts: float) -> None:
        route = self.routes[kind]
        partition = partition_for(key, route.partitions)
        self.events[kind] += 1
        if self.envelope is None:
            self.messages_by_kind[kind] += 1
            self._append(route.name, partition, key, value, ts)
            return
        slot = (kind, partition)
        pending = self._pending.get(slot)
        if pending is None:
            pending = self._pending[slot] = []
        pending.append((key, value, ts))
        if len(pending) >= self.envelope:
            self.messages_by_kind[kind] += 1
            self._append(route.name, partition, *self._seal(pending))
            pending.clear()

    @staticmethod
    def _seal(pending: list[tuple[str, bytes, float]]) -> tuple[str, bytes, float]:
        return pending[0][0], envelope_value([v for _, v, _ in pending]), pending[0][2]

    def _append(self, topic: str, partition: int, key: str, value: bytes, ts: float) -> None:
        self.messages += 1
        if self.producer is None:
            return
        slot = (topic, partition)
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = self.producer.create_batch()
        stamp = round(ts * 1000)
        if batch.append(timestamp=stamp, key=key.encode(), value=value, headers=[]) is None:
            self.ready.append((topic, partition, batch))
            batch = self._batches[slot] = self.producer.create_batch()
            if batch.append(timestamp=stamp, key=key.encode(), value=value, headers=[]) is None:
                raise ReplayError(f"a message of {len(value)} bytes does not fit a batch")

    async def pump(self) -> None:
        """Send the full batches."""
        ready, self.ready = self.ready, []
        for topic, partition, batch in ready:
            self._futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        if len(self._futures) > 256:
            done = [f for f in self._futures if f.done()]
            for f in done:
                f.result()  # raise a failed delivery now
            self._futures = [f for f in self._futures if not f.done()]

    async def flush(self) -> None:
        """Send everything added so far, partial envelopes and batches included."""
        for (kind, partition), pending in self._pending.items():
            if pending:
                self.messages_by_kind[kind] += 1
                self._append(self.routes[kind].name, partition, *self._seal(pending))
                pending.clear()
        if self.producer is None:
            return
        self.ready.extend((t, p, b) for (t, p), b in self._batches.items() if b.record_count())
        self._batches = {slot: b for slot, b in self._batches.items() if not b.record_count()}
        await self.pump()

    async def close(self) -> None:
        """Flush and wait until the broker acknowledged every batch."""
        await self.flush()
        if self._futures:
            await asyncio.gather(*self._futures)
            self._futures = []


class ReplayProgress:
    """``replay  120,000 events  52,310 ev/s  event time 2019-07-15T03:12:00Z``, on a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, events: int, ts: float, bad: int = 0, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = events / max(now - self.started, 1e-9)
        extra = f"  {bad} bad lines" if bad else ""
        self.stream.write(
            f"\rreplay  {events:,} events  {rate:,.0f} ev/s  event time {iso(ts)}{extra}   "
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def iso(ts: float) -> str:
    """Event time as UTC ISO 8601, whole seconds.

    >>> iso(1731628803.4)
    '2024-11-15T00:00:03Z'
    """
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did; ``line()`` is the one-line summary."""

    events: int = 0
    usage_events: int = 0
    metric_events: int = 0
    messages: int = 0
    bad_lines: int = 0
    files: int = 0
    seconds: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    dry_run: bool = False
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        span = (
            f", event time {iso(self.first_ts)} .. {iso(self.last_ts)}"
            if self.first_ts is not None and self.last_ts is not None
            else ""
        )
        return (
            f"{verb} {self.events} events ({self.usage_events} usage, {self.metric_events} "
            f"metric) in {self.messages} messages from {self.files} files in "
            f"{self.seconds:.2f}s ({self.rate:,.0f} events/s){span}; "
            f"{self.bad_lines} bad lines"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "usage_events": self.usage_events,
            "metric_events": self.metric_events,
            "messages": self.messages,
            "bad_lines": self.bad_lines,
            "files": self.files,
            "seconds": self.seconds,
            "events_per_second": self.rate,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "dry_run": self.dry_run,
            "topics": self.topics,
        }


def settings_for(bootstrap: str | None = None, namespace: str | None = None) -> WarmcastSettings:
    """The settings from the environment, with the flags that override it (a bad one
    raises :class:`~streams.settings.SettingsError`, naming it)."""
    settings = load_settings()
    update: dict[str, Any] = {}
    if bootstrap:
        update["kafka_bootstrap_servers"] = bootstrap
    if namespace:
        update["topic_namespace"] = namespace
    return settings.model_copy(update=update) if update else settings


async def topic_routes(settings: WarmcastSettings, kinds: Iterable[str]) -> dict[str, TopicRoute]:
    """Each kind's topic with its real partition count (topics are created if missing)."""
    from streams.kafka import ensure_topics

    counts = await ensure_topics(settings, timeout=15.0)
    routes = {}
    for kind in kinds:
        name = settings.topic(kind)
        routes[kind] = TopicRoute(name, counts.get(name, settings.partitions))
    return routes


def producer_for(settings: WarmcastSettings, **overrides: Any) -> Any:
    """An aiokafka producer tuned for throughput (large batches, a short linger)."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka import client_kwargs

    options: dict[str, Any] = {
        "linger_ms": 5,
        "max_batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "acks": 1,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**client_kwargs(settings), **options)


async def publish(
    records: Sequence[Record],
    settings: WarmcastSettings,
    *,
    envelope: int | None = None,
    speed: float | None = None,
    dry_run: bool = False,
    progress: ReplayProgress | None = None,
    bad_lines: int = 0,
) -> ReplaySummary:
    """Publish records (in the order given) to the usage and metrics topics."""
    summary = ReplaySummary(dry_run=dry_run, bad_lines=bad_lines)
    kinds = (USAGE, METRICS)
    producer = None
    if dry_run:
        routes = {k: TopicRoute(settings.topic(k), settings.partitions) for k in kinds}
    else:
        if not settings.kafka_bootstrap_servers:
            raise ReplayError("no broker: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap")
        routes = await topic_routes(settings, kinds)
        producer = producer_for(settings)
        await producer.start()
    summary.topics = {k: r.name for k, r in routes.items()}
    sender = BatchSender(producer, routes, envelope)
    pacer = Pacer(None if dry_run else speed)
    started = time.monotonic()
    try:
        for n, (ts, kind, key, value) in enumerate(records):
            wait = pacer.delay(ts)
            if wait > 0.001:
                await sender.flush()
                if progress is not None:
                    progress.update(n, ts, bad_lines)
                await asyncio.sleep(wait)
            sender.add(kind, key, value, ts)
            if sender.ready:
                await sender.pump()
                if progress is not None:
                    progress.update(n + 1, ts, bad_lines)
        await sender.close()
    finally:
        if producer is not None:
            await producer.stop()
        if progress is not None:
            if records:
                progress.update(len(records), records[-1][0], bad_lines, force=True)
            progress.close()
    summary.seconds = time.monotonic() - started
    summary.events = len(records)
    summary.usage_events = sender.events[USAGE]
    summary.metric_events = sender.events[METRICS]
    summary.messages = sender.messages
    if records:
        summary.first_ts, summary.last_ts = records[0][0], records[-1][0]
    return summary


def run_replay(
    paths: Sequence[str | os.PathLike[str]],
    *,
    settings: WarmcastSettings | None = None,
    envelope: int | None = None,
    speed: float | None = None,
    start: float | None = None,
    end: float | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    strict: bool = False,
    fmt: str = "auto",
    progress: bool | None = None,
    bad_stream: TextIO | None = None,
    **mapping: Any,
) -> tuple[ReplaySummary, list[BadLine]]:
    """Read, filter and publish; the summary and the bad lines.

    Under ``strict`` a bad line publishes nothing: the summary counts zero events.
    """
    events = read_events(paths, fmt, **mapping)
    records = select(events.records, start, end, limit)
    report = bad_stream if bad_stream is not None else sys.stderr
    for bad in events.bad[:20]:
        print(f"warmcast replay: {bad}", file=report)
    if len(events.bad) > 20:
        print(f"warmcast replay: ... and {len(events.bad) - 20} more bad lines", file=report)
    if "azure" in events.formats and mapping.get("t0") is None:
        print(
            "warmcast replay: Azure per-minute files carry no dates: their minute 1 is "
            "1970-01-01T00:00:00Z (a broker's time-based retention may delete such "
            "messages at once); pass --t0 to place them",
            file=report,
        )
    if strict and events.bad:
        summary = ReplaySummary(bad_lines=events.bad_count, files=events.files, dry_run=True)
        return summary, events.bad
    summary = asyncio.run(
        publish(
            records,
            settings or settings_for(),
            envelope=envelope,
            speed=speed,
            dry_run=dry_run,
            progress=ReplayProgress(enabled=progress),
            bad_lines=events.bad_count,
        )
    )
    summary.files = events.files
    return summary, events.bad


# ------------------------------------------------------------------------------------- CLI


def time_arg(value: str) -> float:
    """An event time from the command line: epoch seconds (or ms) or ISO 8601."""
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {value!r} (epoch seconds or ISO 8601)"
        ) from None


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0 or math.isinf(number):
        raise argparse.ArgumentTypeError(f"must be a positive number: {value!r}")
    return number


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def add_trace_flags(p: argparse.ArgumentParser) -> None:
    """The input layout flags shared with ``warmcast backtest``."""
    g = p.add_argument_group("input layout (as warmcast backtest)")
    g.add_argument(
        "--format",
        dest="fmt",
        choices=("auto", "azure", "csv", "jsonl"),
        default="auto",
        help="trace layout (default: sniffed per file)",
    )
    g.add_argument("--time-col", help="CSV: time column (default: gmt_create, ts, ...)")
    g.add_argument("--model-col", help="CSV: model column (default: model_id, ...)")
    g.add_argument("--count-col", help="CSV: column with a request count per row (default 1)")
    g.add_argument("--time-format", default="auto", help="CSV: s, ms, iso or a strptime format")
    g.add_argument("--missing-model", metavar="ID", help="CSV: model id for rows without one")
    g.add_argument(
        "--t0",
        type=time_arg,
        help="start of minute 0 (Azure files carry no dates: default 0, i.e. 1970-01-01)",
    )


def trace_mapping(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "time_col": args.time_col,
        "model_col": args.model_col,
        "time_format": args.time_format,
        "count_col": args.count_col,
        "missing_model": args.missing_model,
        "t0": args.t0,
    }


def add_kafka_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka")
    g.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="bootstrap servers [env: KAFKA_BOOTSTRAP_SERVERS]",
    )
    g.add_argument(
        "--namespace",
        help="topic prefix, <namespace>.usage.v1 [env: WARMCAST_TOPIC_NAMESPACE; "
        "default: warmcast]",
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``replay`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="publish historical logs to Kafka as usage and metric events",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="input files (plain or gzip)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=positive_float,
        metavar="X",
        help="event-time seconds per wall second (e.g. 600: ten minutes a second)",
    )
    pace.add_argument(
        "--max-speed", action="store_true", help="as fast as the broker takes them (default)"
    )
    p.add_argument(
        "--envelope",
        type=positive_int,
        metavar="N",
        help="batch envelopes of up to N events per message (default: one event a message)",
    )
    p.add_argument("--start", type=time_arg, help="skip events before this time")
    p.add_argument("--end", type=time_arg, help="skip events at or after this time")
    p.add_argument("--limit", type=int, metavar="N", help="publish at most N events")
    p.add_argument("--dry-run", action="store_true", help="validate and count only")
    p.add_argument("--strict", action="store_true", help="any bad line: publish nothing, exit 1")
    add_trace_flags(p)
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``replay`` subcommand from parsed arguments; the exit status."""
    from aiokafka.errors import KafkaError

    out = stdout if stdout is not None else sys.stdout
    try:
        summary, bad = run_replay(
            args.paths,
            settings=settings_for(args.bootstrap, args.namespace),
            envelope=args.envelope,
            speed=None if args.max_speed else args.speed,
            start=args.start,
            end=args.end,
            limit=args.limit,
            dry_run=args.dry_run,
            strict=args.strict,
            fmt=args.fmt,
            **trace_mapping(args),
        )
    except (OSError, ValueError, ReplayError, KafkaError) as exc:
        print(f"warmcast replay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.strict and bad:
        print(
            f"warmcast replay: {summary.bad_lines} bad lines and --strict: nothing published",
            file=sys.stderr,
        )
        return EXIT_BAD_LINES
    print(summary.line(), file=out, flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.replay PATH ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["replay", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "EXIT_BAD_LINES",
    "EXIT_ERROR",
    "EXIT_OK",
    "BadLine",
    "BatchSender",
    "Events",
    "Pacer",
    "ReplaySummary",
    "publish",
    "read_events",
    "register",
    "run_replay",
    "select",
]
