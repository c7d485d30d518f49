"""Health snapshots: the rolling state of one served model, on ``warmcast.health.v1``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas._types import EpochSeconds, Identifier


class HealthSnapshot(BaseModel):
    """Rolling health of a served model as of event time ``ts``.

    Rates are exponentially weighted over ``window_seconds`` of event time.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_id: Identifier
    ts: EpochSeconds
    window_seconds: float = Field(gt=0, allow_inf_nan=False)
    requests_total: int = Field(ge=0)
    cold_starts_total: int = Field(ge=0)
    request_rate: float = Field(ge=0, allow_inf_nan=False, description="requests per second")
    cold_start_rate: float = Field(
        ge=0, le=1, allow_inf_nan=False, description="share of recent requests that were cold"
    )
    latency_mean: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    last_seen: EpochSeconds
    loaded_until: float | None = Field(
        default=None, allow_inf_nan=False, description="end of the current warm lease, if any"
    )
