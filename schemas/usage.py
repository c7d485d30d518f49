"""Usage events: requests for a served model, on ``warmcast.usage.v1``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas._types import EpochSeconds, Identifier, Label, WholeNumber


class UsageEvent(BaseModel):
    """One request, or a pre-aggregated count of requests, for a served model.

    >>> UsageEvent.model_validate({"model_id": "llama-8b", "ts": "2024-11-15T00:00:03Z"}).ts
    1731628803.0
    """

    #: strict: a field takes only its own JSON type (no "5" for 5, no 1 for true), as the
    #: JSON Schema file says.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    model_id: Identifier = Field(description="the served model the requests were for")
    ts: EpochSeconds
    count: Annotated[int, WholeNumber(1, 10_000_000)] = Field(
        default=1, description="requests in this event"
    )
    cold_start: bool | None = Field(
        default=None, description="whether the request found the model unloaded"
    )
    latency: float | None = Field(
        default=None, ge=0.0, allow_inf_nan=False, description="request latency, seconds"
    )
    error: bool | None = Field(
        default=None, description="whether the request failed (all ``count`` of them)"
    )
    tenant: Label | None = None
    user: Label | None = None
    node: Label | None = None
