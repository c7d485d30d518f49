"""Warmup commands: leases on served models, on ``warmcast.warmup.v1``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._types import EpochSeconds, Identifier, Label


class WarmupCommand(BaseModel):
    """``warm``: keep ``model_id`` loaded during ``[start, end)`` (event time, epoch s);
    ``release``: it may be unloaded now. Idempotent: ``command_id`` is derived from
    (model_id, action, start, end, policy_version), so a duplicate is safe to drop.

    The command replaces the model's previous lease from the minute after ``issued_at``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: Identifier
    model_id: Identifier
    action: Literal["warm", "release"]
    issued_at: EpochSeconds
    start: EpochSeconds
    end: EpochSeconds
    priority: int = Field(default=2, ge=0, le=4, description="0 is the most urgent")
    probability: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    reason: Label = ""
    policy_version: Identifier

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self
