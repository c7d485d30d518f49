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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.rolling import RollingWindow

#: Default rolling windows, seconds of event time.
WINDOWS: tuple[float, ...] = (60.0, 300.0, 3600.0)

#: The counters of each rolling window, in this order.
FIELDS = ("events", "requests", "cold_starts", "errors", "issued", "used", "wasted")
_EVENTS, _REQUESTS, _COLD, _ERRORS, _ISSUED, _USED, _WASTED = range(len(FIELDS))


def _one(i: int) -> list[float]:
    counts: list[float] = [0] * len(FIELDS)
    counts[i] = 1
    return counts


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
    windows: dict[str, RollingWindow] = field(default_factory=dict)

    def update(
        self,
        ts: float,
        count: int = 1,
        cold: int = 0,
        latency: float | None = None,
        window: float = 300.0,
        *,
        errors: int = 0,
        windows: Iterable[float] = WINDOWS,
    ) -> None:
        """Count ``count`` requests at ``ts`` (``cold`` of them cold, ``errors`` failed)."""
        if self.requests_total and ts > self.last_seen:
            decay = math.exp(-(ts - self.last_seen) / window)
            self.weighted_requests *= decay
            self.weighted_cold *= decay
        self.weighted_requests += count
        self.weighted_cold += cold
        self.requests_total += count
        self.cold_starts_total += cold
        self.errors_total += errors
        if latency is not None:
            self.latency_mean = (
                latency if self.latency_mean is None else 0.9 * self.latency_mean + 0.1 * latency
            )
        self.last_seen = max(self.last_seen, ts)
        self._settle(ts, windows)
        used = 0
        lease = self.lease
        if lease is not None and not lease[2] and lease[0] <= ts < lease[1]:
            lease[2] = 1
            used = 1
            self.warmups_used_total += 1
        counts = [1, count, cold, errors, 0, used, 0]
        for w in self._windows(windows):
            w.add(ts, counts, latency, count)

    def on_command(
        self,
        action: str,
        start: float,
        end: float,
        issued_at: float,
        windows: Iterable[float] = WINDOWS,
    ) -> None:
        """Follow a warmup command: a new warm lease, or a release (repeats are ignored)."""
        self._settle(issued_at, windows)
        lease = self.lease
        if action == "warm" and lease is not None and (lease[0], lease[1]) == (start, end):
            return
        if lease is not None and not lease[2] and lease[0] < start:
            self._wasted(min(start, lease[1]), windows)  # loaded for a while, never used
        self.lease = None
        if action == "warm":
            self.lease = [start, end, 0]
            self.warmups_issued_total += 1
            for w in self._windows(windows):
                w.add(issued_at, _one(_ISSUED))

    def _settle(self, ts: float, windows: Iterable[float]) -> None:
        """A lease that ended by ``ts`` is done: wasted if no request came."""
        lease = self.lease
        if lease is not None and lease[1] <= ts:
            if not lease[2]:
                self._wasted(lease[1], windows)
            self.lease = None

    def _wasted(self, ts: float, windows: Iterable[float]) -> None:
        self.warmups_wasted_total += 1
        for w in self._windows(windows):
            w.add(ts, _one(_WASTED))

    def _windows(self, lengths: Iterable[float]) -> list[RollingWindow]:
        out = []
        for length in lengths:
            key = _key(length)
            w = self.windows.get(key)
            if w is None:
                w = self.windows[key] = RollingWindow(length, len(FIELDS))
            out.append(w)
        return out

    def request_rate(self, window: float) -> float:
        """Requests per second over the recent window."""
        return self.weighted_requests / window

    def cold_start_rate(self) -> float:
        """Share of recent requests that found the model cold."""
        if self.weighted_requests <= 0:
            return 0.0
        return min(1.0, self.weighted_cold / self.weighted_requests)

    def window(self, length: float, now: float) -> dict[str, Any]:
        """Figures of the rolling window of ``length`` seconds ending at ``now``."""
        w = self.windows.get(_key(length))
        counts = w.view(now) if w is not None else None
        c = counts.counts if counts is not None else [0.0] * len(FIELDS)
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
        self._settle(now, [float(k) for k in self.windows])
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
            "windows": {k: self.window(w.length, now) for k, w in self.windows.items()},
        }

    def to_dict(self) -> dict[str, Any]:
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
            "windows": {k: w.to_list() for k, w in self.windows.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelHealth:
        plain = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "windows"}
        health = cls(**plain)
        health.windows = {k: RollingWindow.from_list(v) for k, v in data.get("windows", {}).items()}
        return health


def _key(length: float) -> str:
    """Windows are keyed by their length in seconds, as text (a JSON object key)."""
    return f"{length:g}"
