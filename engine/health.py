"""Rolling health of one served model, on event time.

Rates decay exponentially with a time constant of ``window`` seconds of event time, so a
replay at any speed and a live run give the same figures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class ModelHealth:
    """Request rate, cold-start share and latency of a served model.

    >>> h = ModelHealth("m")
    >>> h.update(0.0, count=30, cold=1, window=300.0)
    >>> h.update(60.0, count=30, window=300.0)
    >>> round(h.request_rate(300.0), 3), round(h.cold_start_rate(), 3), h.requests_total
    (0.182, 0.015, 60)
    """

    model_id: str
    requests_total: int = 0
    cold_starts_total: int = 0
    weighted_requests: float = 0.0
    weighted_cold: float = 0.0
    latency_mean: float | None = None
    last_seen: float = 0.0

    def update(
        self,
        ts: float,
        count: int = 1,
        cold: int = 0,
        latency: float | None = None,
        window: float = 300.0,
    ) -> None:
        if self.requests_total and ts > self.last_seen:
            decay = math.exp(-(ts - self.last_seen) / window)
            self.weighted_requests *= decay
            self.weighted_cold *= decay
        self.weighted_requests += count
        self.weighted_cold += cold
        self.requests_total += count
        self.cold_starts_total += cold
        if latency is not None:
            self.latency_mean = (
                latency if self.latency_mean is None else 0.9 * self.latency_mean + 0.1 * latency
            )
        self.last_seen = max(self.last_seen, ts)

    def request_rate(self, window: float) -> float:
        """Requests per second over the recent window."""
        return self.weighted_requests / window

    def cold_start_rate(self) -> float:
        """Share of recent requests that found the model cold."""
        if self.weighted_requests <= 0:
            return 0.0
        return min(1.0, self.weighted_cold / self.weighted_requests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelHealth:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
