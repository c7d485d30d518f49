"""Rolling health of one served model, on event time.

Two kinds of figures are kept. Exponentially decayed rates (time constant ``window``
seconds of event time) give the request rate and cold-start share the worker has always
reported. Rolling windows (by default the last minute, five minutes and hour, see
:mod:`engine.rolling`) count requests, cold starts, errors and warmups, with a latency
sketch for p50 / p95. Warmups are followed from the engine's commands to the requests
that come after them: a warm lease is *used* when a request arrives while it holds, and
*wasted* when it ends, or is replaced after it began, with no request. Everything runs on
event time, so a replay at any speed and a live run give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.rolling import RollingWindow, WindowView, estimate
from engine.sketch import LogSketch

#: Default rolling windows, seconds of event time.
WINDOWS: tuple[float, ...] = (60.0, 300.0, 3600.0)

#: The counters of each rolling window, in this order.
FIELDS = ("events", "requests", "cold_starts", "errors", "issued", "used", "wasted")
_EVENTS, _REQUESTS, _COLD, _ERRORS, _ISSUED, _USED, _WASTED = range(len(FIELDS))
_WIDTH = len(FIELDS)
#: Per window, ``slots`` holds the current slot number, then the current slot's counters,
#: then the previous slot's: one flat list for every window of a model.
_STRIDE = 1 + 2 * _WIDTH
#: Version of the stored form (:meth:`ModelHealth.to_bytes`); form 2 stopped at ``lease``.
_FORM = 3


@dataclass(slots=True)
class ModelHealth:
    """Request rate, cold-start share, errors, latency and warmups of a served model.

    >>> h = ModelHealth("m")
    >>> h.update(0.0, count=30, cold=1, window=300.0)
    >>> h.update(60.0, count=30, window=300.0)
    >>> round(h.request_rate(300.0), 3), round(h.cold_start_rate(), 3), h.requests_total
    (0.182, 0.015, 60)

    A warm lease from 120 to 720 s, used by a request at 130 s; the next one goes unused:

    >>> h.on_command("warm", 120.0, 720.0, issued_at=60.0)
    >>> h.update(130.0, latency=0.25)
    >>> h.on_command("warm", 180.0, 780.0, issued_at=120.0)
    >>> h.update(900.0, latency=2.5, cold=1)
    >>> h.warmups_issued_total, h.warmups_used_total, h.warmups_wasted_total
    (2, 1, 1)
    >>> w = h.snapshot(900.0)["windows"]["3600"]
    >>> w["requests"], w["warmups_wasted"], round(w["latency_p95"], 1)
    (62.0, 1.0, 2.5)
    """

    model_id: str
    requests_total: int = 0
    cold_starts_total: int = 0
    weighted_requests: float = 0.0
    weighted_cold: float = 0.0
    latency_mean: float | None = None
    last_seen: float = 0.0
    errors_total: int = 0
    warmups_issued_total: int = 0
    warmups_used_total: int = 0
    warmups_wasted_total: int = 0
    lease: list[float] | None = None  # [start, end, used] of the current warm lease
    #: Input offset of the newest message counted here (-1: none known). A message read
    #: again, after a restart or a rebalance, at or below it is not counted twice.
    offset: int = -1
    #: Of events forwarded here from partitions that do not own the model: per source
    #: partition (as a string), the place ``[offset, rank]`` of the newest one counted. A
    #: source partition read again forwards its events again; they are not counted twice.
    forwarded: dict[str, list[int]] | None = None
    #: Window lengths (seconds) that ``slots`` and ``sketches`` are laid out for.
    lengths: tuple[float, ...] = ()
    #: Per window: current slot number, current counters, previous counters (flat).
    slots: list[Any] = field(default_factory=list)
    #: Per window: the current and the previous slot's latency sketch; ``None`` until a
    #: latency is seen (most of a fleet's state is then counters only).
    sketches: list[LogSketch | None] | None = None

    def update(
        self,
        ts: float,
        count: int = 1,
        cold: int = 0,
        latency: float | None = None,
        window: float = 300.0,
        *,
        errors: int = 0,
        windows: Sequence[float] = WINDOWS,
    ) -> None:
        """Count ``count`` requests at ``ts`` (``cold`` of them cold, ``errors`` failed)."""
        last_seen = self.last_seen
        if self.requests_total and ts > last_seen:
            decay = math.exp((last_seen - ts) / window)
            self.weighted_requests *= decay
            self.weighted_cold *= decay
        self.weighted_requests += count
        self.weighted_cold += cold
        self.requests_total += count
        self.cold_starts_total += cold
        self.errors_total += errors
        if latency is not None:
            mean = self.latency_mean
            self.latency_mean = latency if mean is None else 0.9 * mean + 0.1 * latency
        if ts > last_seen:
            self.last_seen = ts
        lease = self.lease
        used = 0
        if lease is not None:
            if lease[1] <= ts:  # over: settle it first
                self._settle(ts, windows)
            elif not lease[2] and lease[0] <= ts:
                lease[2] = 1
                used = 1
                self.warmups_used_total += 1
        if self.lengths != windows:
            self._layout(windows)
        slots = self.slots
        sketches = self.sketches
        if latency is not None and sketches is None:
            sketches = self.sketches = [None] * (2 * len(self.lengths))
        base = 0
        for j, length in enumerate(self.lengths):
            k = ts // length
            at = base + 1 if k == slots[base] else self._slot(base, k)  # inline: same slot
            if at >= 0:
                slots[at] += 1
                slots[at + 1] += count
                if cold:
                    slots[at + 2] += cold
                if errors:
                    slots[at + 3] += errors
                if used:
                    slots[at + 5] += 1
                if sketches is not None and latency is not None:
                    i = 2 * j + (at - base - 1) // _WIDTH
                    sketch = sketches[i]
                    if sketch is None:
                        sketch = sketches[i] = LogSketch()
                    sketch.add(latency, count)
            base += _STRIDE

    def on_command(
        self,
        action: str,
        start: float,
        end: float,
        issued_at: float,
        windows: Sequence[float] = WINDOWS,
    ) -> None:
        """Follow a warmup command: a new warm lease, or a release (repeats are ignored)."""
        lease = self.lease
        if lease is not None and lease[1] <= issued_at:
            self._settle(issued_at, windows)
            lease = None
        if action == "warm" and lease is not None and lease[0] == start and lease[1] == end:
            return
        if lease is not None and not lease[2] and lease[0] < start:
            self._count(min(start, lease[1]), _WASTED, windows)  # loaded, never used
            self.warmups_wasted_total += 1
        self.lease = None
        if action == "warm":
            self.lease = [start, end, 0]
            self.warmups_issued_total += 1
            self._count(issued_at, _ISSUED, windows)

    def _settle(self, ts: float, windows: Sequence[float]) -> None:
        """A lease that ended by ``ts`` is done: wasted if no request came."""
        lease = self.lease
        if lease is not None and lease[1] <= ts:
            if not lease[2]:
                self.warmups_wasted_total += 1
                self._count(lease[1], _WASTED, windows)
            self.lease = None

    def _count(self, ts: float, index: int, windows: Sequence[float]) -> None:
        """Add one to counter ``index`` at ``ts`` in every window."""
        if self.lengths != windows:
            self._layout(windows)
        slots = self.slots
        base = 0
        for length in self.lengths:
            k = ts // length
            at = base + 1 if k == slots[base] else self._slot(base, k)
            if at >= 0:
                slots[at + index] += 1
            base += _STRIDE

    def _slot(self, base: int, k: float) -> int:
        """Where in ``slots`` the counters of slot number ``k`` of the window at ``base``
        start, after rolling the window forward to ``k`` if needed; -1: too old."""
        slots = self.slots
        index = slots[base]
        if index is None or k > index:
            sketches = self.sketches
            j = 2 * (base // _STRIDE)
            if index is not None and k == index + 1:  # current becomes previous
                slots[base + 1 + _WIDTH : base + _STRIDE] = slots[base + 1 : base + 1 + _WIDTH]
                if sketches is not None:
                    sketches[j + 1] = sketches[j]
            else:
                slots[base + 1 + _WIDTH : base + _STRIDE] = _ZEROS
                if sketches is not None:
                    sketches[j + 1] = None
            slots[base + 1 : base + 1 + _WIDTH] = _ZEROS
            if sketches is not None:
                sketches[j] = None
            slots[base] = int(k)
            return base + 1
        if k == index:
            return base + 1
        if k == index - 1:
            return base + 1 + _WIDTH
        return -1

    def _layout(self, windows: Sequence[float]) -> None:
        """Lay out empty windows of these lengths (a change of lengths starts afresh)."""
        self.lengths = tuple(float(w) for w in windows)
        self.slots = ([None] + _ZEROS * 2) * len(self.lengths)
        self.sketches = None

    def request_rate(self, window: float) -> float:
        """Requests per second over the recent window."""
        return self.weighted_requests / window

    def cold_start_rate(self) -> float:
        """Share of recent requests that found the model cold."""
        if self.weighted_requests <= 0:
            return 0.0
        return min(1.0, self.weighted_cold / self.weighted_requests)

    def view(self, length: float, now: float) -> WindowView | None:
        """The rolling window of ``length`` seconds ending at ``now`` (``None``: not kept)."""
        try:
            j = self.lengths.index(float(length))
        except ValueError:
            return None
        base = j * _STRIDE
        slots, sketches = self.slots, self.sketches
        current = slots[base + 1 : base + 1 + _WIDTH]
        previous = slots[base + 1 + _WIDTH : base + _STRIDE]
        cur_sketch = prev_sketch = None
        if sketches is not None:
            cur_sketch, prev_sketch = sketches[2 * j], sketches[2 * j + 1]
        return estimate(
            length, slots[base], (current, cur_sketch), (previous, prev_sketch), now, _WIDTH
        )

    def window(self, length: float, now: float) -> dict[str, Any]:
        """Figures of the rolling window of ``length`` seconds ending at ``now``."""
        counts = self.view(length, now)
        c = counts.counts if counts is not None else [0.0] * _WIDTH
        requests = c[_REQUESTS]
        return {
            "seconds": length,
            "events": c[_EVENTS],
            "requests": requests,
            "request_rate": requests / length,
            "cold_start_rate": min(1.0, c[_COLD] / requests) if requests else 0.0,
            "error_rate": min(1.0, c[_ERRORS] / requests) if requests else 0.0,
            "latency_p50": counts.quantile(0.5) if counts is not None else None,
            "latency_p95": counts.quantile(0.95) if counts is not None else None,
            "warmups_issued": c[_ISSUED],
            "warmups_used": c[_USED],
            "warmups_wasted": c[_WASTED],
        }

    def snapshot(self, now: float, window: float = 300.0) -> dict[str, Any]:
        """The model's health as of event time ``now``: totals, rates and every window.

        A lease that ended unused before ``now`` counts as wasted here (on this object).
        """
        self._settle(now, self.lengths)
        lease = self.lease
        return {
            "model_id": self.model_id,
            "ts": max(now, self.last_seen),
            "window_seconds": window,
            "requests_total": self.requests_total,
            "cold_starts_total": self.cold_starts_total,
            "errors_total": self.errors_total,
            "request_rate": self.request_rate(window),
            "cold_start_rate": self.cold_start_rate(),
            "latency_mean": self.latency_mean,
            "last_seen": self.last_seen,
            "loaded_until": lease[1] if lease is not None else None,
            "warmups_issued_total": self.warmups_issued_total,
            "warmups_used_total": self.warmups_used_total,
            "warmups_wasted_total": self.warmups_wasted_total,
            "windows": {_key(length): self.window(length, now) for length in self.lengths},
        }

    def _windows_as_lists(self) -> dict[str, list[Any]]:
        """Each window as :meth:`RollingWindow.to_list` writes it."""
        out: dict[str, list[Any]] = {}
        slots, sketches = self.slots, self.sketches
        for j, length in enumerate(self.lengths):
            base = j * _STRIDE
            cur = sketches[2 * j] if sketches is not None else None
            prev = sketches[2 * j + 1] if sketches is not None else None
            out[_key(length)] = [
                length,
                slots[base],
                slots[base + 1 : base + 1 + _WIDTH],
                (cur or _EMPTY_SKETCH).to_list(),
                slots[base + 1 + _WIDTH : base + _STRIDE],
                (prev or _EMPTY_SKETCH).to_list(),
            ]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything the model's health holds, as JSON-ready values."""
        return {
            "model_id": self.model_id,
            "requests_total": self.requests_total,
            "cold_starts_total": self.cold_starts_total,
            "weighted_requests": self.weighted_requests,
            "weighted_cold": self.weighted_cold,
            "latency_mean": self.latency_mean,
            "last_seen": self.last_seen,
            "errors_total": self.errors_total,
            "warmups_issued_total": self.warmups_issued_total,
            "warmups_used_total": self.warmups_used_total,
            "warmups_wasted_total": self.warmups_wasted_total,
            "lease": self.lease,
            "offset": self.offset,
            "forwarded": self.forwarded,
            "windows": self._windows_as_lists(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelHealth:
        plain = {k: data[k] for k in _SCALARS if k in data}
        health = cls(data["model_id"], **plain)
        windows = [RollingWindow.from_list(v) for v in data.get("windows", {}).values()]
        if windows:
            health._layout([w.length for w in windows])
            for j, w in enumerate(windows):
                base = j * _STRIDE
                health.slots[base] = w.index
                health.slots[base + 1 : base + _STRIDE] = [*w.current[0], *w.previous[0]]
                for i, sketch in ((2 * j, w.current[1]), (2 * j + 1, w.previous[1])):
                    if sketch.count > 0:
                        if health.sketches is None:
                            health.sketches = [None] * (2 * len(windows))
                        health.sketches[i] = sketch
        return health

    def to_bytes(self) -> bytes:
        """The compact stored form (a table value): a JSON array, no field names.

        >>> h = ModelHealth("m")
        >>> h.update(60.0, count=3, latency=0.5)
        >>> again = ModelHealth.from_bytes("m", h.to_bytes())
        >>> again.snapshot(60.0) == h.snapshot(60.0), len(h.to_bytes()) < 256
        (True, True)
        """
        sketches = self.sketches
        written = orjson.dumps(
            [
                _FORM,
                [getattr(self, k) for k in _SCALARS],
                self.lengths,
                self.slots,
                None if sketches is None else [s and s.to_list() for s in sketches],
            ]
        )
        # orjson's result keeps its whole write buffer (about 4 KiB) allocated; a value
        # that stays in a table is copied down to its length.
        return memoryview(written).tobytes()

    @classmethod
    def from_bytes(cls, model_id: str, data: bytes) -> ModelHealth:
        """Read :meth:`to_bytes`' form (or, from older tables, :meth:`to_dict`'s as JSON)."""
        doc = orjson.loads(data)
        if isinstance(doc, dict):
            return cls.from_dict({**doc, "model_id": model_id})
        _, scalars, lengths, slots, sketches = doc
        # form 2 stops at ``lease``: the fields after it take their defaults
        health = cls(model_id, **dict(zip(_SCALARS, scalars, strict=False)))
        health.lengths = tuple(lengths)
        health.slots = slots
        if sketches is not None:
            health.sketches = [s and LogSketch.from_list(s) for s in sketches]
        return health


#: Fields stored as they are, in the stored form's order.
_SCALARS = (
    "requests_total",
    "cold_starts_total",
    "weighted_requests",
    "weighted_cold",
    "latency_mean",
    "last_seen",
    "errors_total",
    "warmups_issued_total",
    "warmups_used_total",
    "warmups_wasted_total",
    "lease",
    "offset",
    "forwarded",
)
_ZEROS: list[Any] = [0] * _WIDTH


def stored_scalars(data: bytes) -> dict[str, Any]:
    """The totals, rates and times of a stored form (:meth:`ModelHealth.to_bytes`, or
    :meth:`ModelHealth.to_dict` as JSON), without building the model's windows.

    >>> h = ModelHealth("m")
    >>> h.update(60.0, count=3, cold=1)
    >>> s = stored_scalars(h.to_bytes())
    >>> s["requests_total"], s["cold_starts_total"], s["last_seen"]
    (3, 1, 60.0)
    """
    doc = orjson.loads(data)
    if isinstance(doc, dict):
        return {k: doc[k] for k in _SCALARS if k in doc}
    return dict(zip(_SCALARS, doc[1], strict=False))


_EMPTY_SKETCH = LogSketch()


def _key(length: float) -> str:
    """Windows are keyed by their length in seconds, as text (a JSON object key)."""
    return f"{length:g}"
