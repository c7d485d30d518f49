"""Trace loaders: real usage traces as usage events in event-time order.

Every loader returns a :class:`Trace`: a sorted list of ``(ts, model_id, count)`` events
(``ts`` in epoch seconds), the grid origin ``t0`` that minutes are counted from, the trace's
last minute ``end_minute`` (wasted memory time is counted up to it, never past it) and the
rows it had to skip, with the reason. Files may be plain or gzip (detected by magic bytes).

Three layouts are read:

- **Azure Functions 2019 per-minute counts** (:func:`load_azure`): the original layout
  ``HashOwner,HashApp,HashFunction,Trigger,1..1440`` and the sampled layout
  ``HashFunction,HashApp,HashOwner,minute_1..minute_1440``. There are no dates: the first
  minute column starts at ``t0`` (0 unless told), every request of a minute shares the
  minute's start time, and the trace ends at its last minute column.
- **Per-request CSV** (:func:`load_requests_csv`): one row per request, a time column and a
  served-model column (the Alibaba GenAI 2024 names ``gmt_create`` and
  ``checkpoint_model_version_id`` are recognised). ``t0`` is the first request and the trace
  ends at the minute of the last request.
- **JSONL usage events** (:func:`load_jsonl`): ``{"model_id": ..., "ts": ..., "count": 1}``;
  metric events on the same lines (``{"model_id": ..., "ts": ..., "name":
  "load_time_seconds", "value": 12.5}``) go to :attr:`Trace.metrics`, and the backtest
  feeds them to the policy in event-time order as the worker does
  per line, ``ts`` in epoch seconds or an RFC 3339 string.

:func:`load_trace` sniffs which one a file is.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, NamedTuple

import orjson

Event = tuple[float, str, int]


class MetricPoint(NamedTuple):
    """A metric event of a trace (the fields the policy reads of ``MetricEvent``)."""

    ts: float
    model_id: str
    name: str
    value: float


GZIP_MAGIC = b"\x1f\x8b"

#: Column names recognised without a mapping, in order of preference.
TIME_COLUMNS = ("gmt_create", "ts", "timestamp", "time", "request_time", "arrival_time")
MODEL_COLUMNS = (
    "checkpoint_model_version_id",
    "model_id",
    "model",
    "served_model",
    "HashFunction",
    "function",
)

_AZURE_ID_COLUMNS = ("HashOwner", "HashApp", "HashFunction")
_MINUTE_COLUMN = re.compile(r"^(?:minute_)?(\d+)$")


@dataclass(slots=True)
class Trace:
    """Usage events of one trace, sorted by event time, and what the trace spans.

    ``end_minute`` is the trace's last minute on the grid whose minute 0 starts at ``t0``.

    >>> t = Trace("x", "jsonl", [(0.0, "a", 2), (75.0, "b", 1)], t0=0.0, end_minute=1)
    >>> t.requests, t.models, t.minute_of(75.0), list(t)[1]
    (3, 2, 1, (75.0, 'b', 1))
    """

    path: str
    fmt: str
    events: list[Event]
    t0: float
    end_minute: int
    skipped: dict[str, int] = field(default_factory=dict)
    #: metric events of the trace's models (load times, memory), by event time
    metrics: list[MetricPoint] = field(default_factory=list)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def requests(self) -> int:
        return sum(e[2] for e in self.events)

    @property
    def models(self) -> int:
        return len({e[1] for e in self.events})

    @property
    def end_ts(self) -> float:
        """Event time at which the trace's last minute is over."""
        return self.t0 + 60.0 * (self.end_minute + 1)

    def minute_of(self, ts: float) -> int:
        return math.floor((ts - self.t0) / 60.0)


# --------------------------------------------------------------------------------- files


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a trace file as text, decompressing it if it starts with the gzip magic."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _head(path: str | os.PathLike[str], size: int = 65536) -> str:
    with open_text(path) as f:
        return f.read(size)


# ---------------------------------------------------------------------------------- times


def parse_time(value: str, fmt: str = "auto") -> float:
    """Epoch seconds from a time value.

    ``fmt`` is ``"s"`` (epoch seconds), ``"ms"`` (epoch milliseconds), ``"iso"`` (ISO 8601 /
    RFC 3339), a :func:`~datetime.datetime.strptime` format, or ``"auto"`` (a number is
    seconds, or milliseconds when above 1e11; anything else is ISO 8601). Times without a
    zone are UTC. Raises ``ValueError`` when the value does not parse.

    >>> parse_time("2024-11-15 00:00:03")
    1731628803.0
    >>> parse_time("2024-11-15T01:00:03+01:00"), parse_time("1731628803000")
    (1731628803.0, 1731628803.0)
    >>> parse_time("15/11/2024 00:00:03", "%d/%m/%Y %H:%M:%S")
    1731628803.0
    """
    value = value.strip()
    if fmt in ("s", "epoch", "epoch_s", "seconds"):
        return float(value)
    if fmt in ("ms", "epoch_ms", "millis"):
        return float(value) / 1000.0
    if fmt == "auto":
        try:
            number = float(value)
        except ValueError:
            return _iso(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"not a time: {value!r}")
        return number / 1000.0 if abs(number) > 1e11 else number
    if fmt in ("iso", "iso8601", "rfc3339"):
        return _iso(value)
    parsed = datetime.strptime(value, fmt)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _iso(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _time_parser(fmt: str, sample: str | None) -> Callable[[str], float]:
    """A parser for one column, with ``auto`` resolved once from a sample value."""
    if fmt == "auto" and sample is not None:
        try:
            number = float(sample)
        except ValueError:
            fmt = "iso"
        else:
            fmt = "ms" if abs(number) > 1e11 else "s"
    if fmt in ("s", "epoch", "epoch_s", "seconds"):
        return float
    if fmt in ("ms", "epoch_ms", "millis"):
        return lambda v: float(v) / 1000.0
    if fmt in ("iso", "iso8601", "rfc3339"):
        cache: dict[str, float] = {}

        def iso(v: str) -> float:
            ts = cache.get(v)
            if ts is None:
                ts = cache[v] = _iso(v.strip())
            return ts

        return iso
    return lambda v: parse_time(v, fmt)


# ---------------------------------------------------------------------------------- Azure


def azure_minute_columns(header: list[str]) -> list[int]:
    """Positions of the per-minute count columns of an Azure header (``1`` or ``minute_1``).

    >>> azure_minute_columns(["HashFunction", "HashApp", "HashOwner", "minute_1", "minute_2"])
    [3, 4]
    >>> azure_minute_columns(["HashOwner", "HashApp", "HashFunction", "Trigger", "1", "2"])
    [4, 5]
    """
    return [i for i, name in enumerate(header) if _MINUTE_COLUMN.match(name.strip())]


def load_azure(path: str | os.PathLike[str], *, t0: float = 0.0) -> Trace:
    """Load an Azure Functions 2019 per-minute invocation file.

    The served model is ``HashFunction`` when it is unique in the file, otherwise
    ``HashOwner/HashApp/HashFunction`` (rows naming the same model add up). One event per
    (model, minute) with requests, at the minute's start, minute-major then in file order.
    """
    skipped: Counter[str] = Counter()
    rows: list[tuple[tuple[str, ...], list[tuple[int, int]]]] = []
    with open_text(path) as f:
        reader = csv.reader(f)
        positions, fn_i, id_is = _azure_columns(path, [h.strip() for h in next(reader)])
        for row in reader:
            if not row or len(row) <= fn_i or not row[fn_i].strip():
                skipped["missing model id"] += 1
                continue
            rows.append(
                (tuple(row[i].strip() for i in id_is), _azure_cells(row, positions, skipped))
            )
    n_minutes = positions[-1][0] + 1
    events = _azure_events(rows, id_is.index(fn_i), n_minutes, t0, skipped)
    return Trace(
        path=os.fspath(path),
        fmt="azure",
        events=events,
        t0=float(t0),
        end_minute=n_minutes - 1,
        skipped=dict(skipped),
    )


def _azure_columns(
    path: str | os.PathLike[str], header: list[str]
) -> tuple[list[tuple[int, int]], int, list[int]]:
    """Of an Azure header: (minute from the first, column) of each minute column, in minute
    order; the ``HashFunction`` column; the columns that name the served model."""
    minute_cols = azure_minute_columns(header)
    if not minute_cols:
        raise ValueError(f"{path}: no minute columns (1..N or minute_1..minute_N)")
    missing = [c for c in _AZURE_ID_COLUMNS if c not in header]
    if "HashFunction" in missing:
        raise ValueError(f"{path}: no HashFunction column")
    numbers = sorted(
        (int(_MINUTE_COLUMN.match(header[i]).group(1)), i)  # type: ignore[union-attr]
        for i in minute_cols
    )
    first_number = numbers[0][0]
    positions = [(number - first_number, i) for number, i in numbers]
    id_is = [header.index(c) for c in _AZURE_ID_COLUMNS if c in header]
    return positions, header.index("HashFunction"), id_is


def _azure_cells(
    row: list[str], positions: list[tuple[int, int]], skipped: Counter[str]
) -> list[tuple[int, int]]:
    """(minute, requests) of a row's minutes with requests; bad counts skipped, counted."""
    cells: list[tuple[int, int]] = []
    for minute, i in positions:
        v = row[i] if i < len(row) else ""
        if v == "0" or v == "":
            continue
        try:
            n = int(v)
        except ValueError:
            try:
                n = int(float(v))
            except ValueError:
                skipped["bad count"] += 1
                continue
        if n > 0:
            cells.append((minute, n))
    return cells


def _azure_events(
    rows: list[tuple[tuple[str, ...], list[tuple[int, int]]]],
    fn_pos: int,
    n_minutes: int,
    t0: float,
    skipped: Counter[str],
) -> list[Event]:
    """The rows' events, minute-major then in file order; rows of the same model added up."""
    functions = [key[fn_pos] for key, _ in rows]
    unique = len(set(functions)) == len(functions)
    buckets: list[list[tuple[str, int]]] = [[] for _ in range(n_minutes)]
    merged: dict[str, int] = {}
    for key, cells in rows:
        model_id = key[fn_pos] if unique else "/".join(key)
        merged[model_id] = merged.get(model_id, 0) + 1
        for minute, n in cells:
            buckets[minute].append((model_id, n))
    if not unique and len(merged) < len(rows):
        skipped["rows merged into an earlier row of the same model"] = len(rows) - len(merged)
    events: list[Event] = []
    for minute, bucket in enumerate(buckets):
        if not bucket:
            continue
        ts = t0 + 60.0 * minute
        if len(bucket) != len({m for m, _ in bucket}):
            summed: dict[str, int] = {}
            for m, n in bucket:
                summed[m] = summed.get(m, 0) + n
            bucket = list(summed.items())
        events.extend((ts, m, n) for m, n in bucket)
    return events


# ---------------------------------------------------------------------------- request CSV


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> int:
    if wanted is not None:
        if wanted not in header:
            raise ValueError(f"no {what} column {wanted!r} in header {header}")
        return header.index(wanted)
    for name in candidates:
        if name in header:
            return header.index(name)
    raise ValueError(
        f"cannot tell the {what} column of header {header}: pass --{what}-col "
        f"(recognised: {', '.join(candidates)})"
    )


def _finish(
    path: str | os.PathLike[str],
    fmt: str,
    events: list[Event],
    t0: float | None,
    skipped: Counter[str],
    metrics: list[MetricPoint] | None = None,
) -> Trace:
    events.sort(key=lambda e: e[0])  # stable: equal times keep file order
    points = sorted(metrics or (), key=lambda m: m.ts)
    if t0 is None:
        t0 = events[0][0] if events else 0.0
    end_minute = math.floor((events[-1][0] - t0) / 60.0) if events else 0
    if events and events[0][0] < t0:
        early = sum(1 for e in events if e[0] < t0)
        skipped["before t0"] += early
        events = [e for e in events if e[0] >= t0]
    if points and points[0].ts < t0:
        skipped["metric before t0"] += sum(1 for m in points if m.ts < t0)
        points = [m for m in points if m.ts >= t0]
    return Trace(
        path=os.fspath(path),
        fmt=fmt,
        events=events,
        t0=float(t0),
        end_minute=max(end_minute, 0),
        skipped=dict(skipped),
        metrics=points,
    )


def load_requests_csv(
    path: str | os.PathLike[str],
    *,
    time_col: str | None = None,
    model_col: str | None = None,
    time_format: str = "auto",
    count_col: str | None = None,
    t0: float | None = None,
    missing_model: str | None = None,
) -> Trace:
    """Load a per-request CSV: one row per request (or ``count_col`` requests).

    Rows with a time that does not parse are skipped and counted in ``Trace.skipped``;
    so are rows without a model id, unless ``missing_model`` names a served model to
    count them under (the evaluation's reference numbers for the Alibaba trace count its
    9 requests without a model as one more model). Events are sorted by time, stably.
    ``t0`` defaults to the first request; requests before an explicit ``t0`` are skipped.
    """
    with open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        ti = _pick(header, time_col, TIME_COLUMNS, "time")
        mi = _pick(header, model_col, MODEL_COLUMNS, "model")
        ci = header.index(count_col) if count_col is not None else None
        skipped: Counter[str] = Counter()
        events: list[Event] = []
        parse: Callable[[str], float] | None = None
        width = max(ti, mi, ci if ci is not None else 0)
        for row in reader:
            if len(row) <= width:
                if row:
                    skipped["short row"] += 1
                continue
            model_id = row[mi].strip()
            if not model_id:
                if missing_model is None:
                    skipped["missing model id"] += 1
                    continue
                model_id = missing_model
            raw = row[ti]
            if parse is None:
                parse = _time_parser(time_format, raw.strip() or None)
            try:
                ts = parse(raw)
            except (ValueError, OverflowError):
                skipped["bad time"] += 1
                continue
            if math.isnan(ts) or math.isinf(ts):
                skipped["bad time"] += 1
                continue
            count = 1
            if ci is not None:
                try:
                    count = int(float(row[ci]))
                except ValueError:
                    skipped["bad count"] += 1
                    continue
                if count <= 0:
                    continue
            events.append((ts, model_id, count))
    return _finish(path, "csv", events, t0, skipped)


# ---------------------------------------------------------------------------------- JSONL


def load_jsonl(path: str | os.PathLike[str], *, t0: float | None = None) -> Trace:
    """Load usage events, one JSON object per line (``model_id``, ``ts``, optional ``count``),
    and metric events (a line with ``name`` and a numeric ``value``).

    ``ts`` is epoch seconds or an RFC 3339 string. Lines that are not an object with a model
    id and a time are skipped and counted.
    """
    skipped: Counter[str] = Counter()
    events: list[Event] = []
    metrics: list[MetricPoint] = []
    loads = orjson.loads
    with open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except orjson.JSONDecodeError:
                skipped["bad json"] += 1
                continue
            if not isinstance(obj, dict):
                skipped["not an object"] += 1
                continue
            model_id = obj.get("model_id")
            if not model_id or not isinstance(model_id, str):
                skipped["missing model id"] += 1
                continue
            raw = obj.get("ts")
            try:
                if isinstance(raw, int | float) and not isinstance(raw, bool):
                    ts = float(raw)
                elif isinstance(raw, str):
                    ts = _iso(raw)
                else:
                    raise ValueError(raw)
            except ValueError:
                skipped["bad time"] += 1
                continue
            if math.isnan(ts) or math.isinf(ts):
                skipped["bad time"] += 1
                continue
            if "name" in obj or "value" in obj:
                point = _metric_point(obj, ts, model_id)
                if point is None:
                    skipped["bad metric"] += 1
                else:
                    metrics.append(point)
                continue
            count = obj.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool):
                skipped["bad count"] += 1
                continue
            if count <= 0:
                continue
            events.append((ts, model_id, count))
    return _finish(path, "jsonl", events, t0, skipped, metrics)


def _metric_point(obj: dict[str, object], ts: float, model_id: str) -> MetricPoint | None:
    """A JSONL line's metric event (``None``: its name or value is not one).

    >>> _metric_point({"name": "load_time_seconds", "value": 4}, 60.0, "m")
    MetricPoint(ts=60.0, model_id='m', name='load_time_seconds', value=4.0)
    >>> _metric_point({"name": "load_time_seconds", "value": "slow"}, 60.0, "m") is None
    True
    """
    name, value = obj.get("name"), obj.get("value")
    if not isinstance(name, str) or not name or isinstance(value, bool):
        return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return MetricPoint(ts, model_id, name, float(value))


# --------------------------------------------------------------------------------- sniffing


def sniff_format(path: str | os.PathLike[str]) -> str:
    """``"azure"``, ``"jsonl"`` or ``"csv"``, from the file's name and first bytes."""
    name = os.fspath(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    head = _head(path).lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        return "jsonl"
    header = next(csv.reader([head.splitlines()[0] if head else ""]), [])
    header = [h.strip() for h in header]
    if azure_minute_columns(header) and "HashFunction" in header:
        return "azure"
    return "csv"


def load_trace(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    time_col: str | None = None,
    model_col: str | None = None,
    time_format: str = "auto",
    count_col: str | None = None,
    t0: float | None = None,
    missing_model: str | None = None,
) -> Trace:
    """Load any supported trace; ``fmt`` is ``auto``, ``azure``, ``csv`` or ``jsonl``.

    ``auto`` reads the header: minute columns mean Azure, a ``.jsonl`` name or a first
    character ``{`` means JSONL, anything else is a per-request CSV (with the column
    mapping given, or recognised names). ``t0`` is the start of minute 0: Azure defaults
    to 0, request traces to their first request. ``missing_model`` (CSV only): the model id
    to count rows without one under, instead of skipping them.
    """
    if fmt == "auto":
        fmt = sniff_format(path)
    if fmt == "azure":
        return load_azure(path, t0=0.0 if t0 is None else t0)
    if fmt == "jsonl":
        return load_jsonl(path, t0=t0)
    if fmt == "csv":
        return load_requests_csv(
            path,
            time_col=time_col,
            model_col=model_col,
            time_format=time_format,
            count_col=count_col,
            t0=t0,
            missing_model=missing_model,
        )
    raise ValueError(f"unknown trace format {fmt!r} (auto, azure, csv, jsonl)")


def read_sizes(path: str | os.PathLike[str]) -> dict[str, float]:
    """The size of each served model in bytes, from a CSV (plain or gzip): a model column
    (``model_id``, ``HashApp``, ``HashFunction`` or ``model``) and a size column
    (``bytes``, ``memory_bytes``, ``memory_mb`` or the Azure 2019 memory file's
    ``AverageAllocatedMb``). Rows without a number are skipped."""
    with open_text(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        key = next(
            (c for c in ("model_id", "HashApp", "HashFunction", "model") if c in header), None
        )
        if key is None:
            raise ValueError(f"{path}: no model column (model_id, HashApp, HashFunction, model)")
        units = (
            ("bytes", 1.0),
            ("memory_bytes", 1.0),
            ("memory_mb", float(2**20)),
            ("AverageAllocatedMb", float(2**20)),
        )
        column = next(((c, scale) for c, scale in units if c in header), None)
        if column is None:
            raise ValueError(f"{path}: no memory column (memory_bytes, memory_mb, ...)")
        name, scale = column
        out: dict[str, float] = {}
        for row in reader:
            try:
                out[row[key]] = float(row[name]) * scale
            except (TypeError, ValueError):
                continue
        return out
