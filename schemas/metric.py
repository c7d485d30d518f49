"""Metric events: measurements of a served model or a node, on ``warmcast.metrics.v1``."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._types import EpochSeconds, Finite, Identifier, Label


class MetricEvent(BaseModel):
    """A measurement in base units: ``load_time_seconds`` (what the warmcast policy learns
    lead times from), ``latency_seconds``, ``memory_bytes``, ...

    >>> MetricEvent(model_id="m", ts=0, name="load_time_seconds", value=23.5, unit="seconds").name
    'load_time_seconds'
    """

    #: strict: a field takes only its own JSON type, as the JSON Schema file says; the
    #: file also says that model_id or node_id must be a string.
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        strict=True,
        json_schema_extra={
            "anyOf": [
                {"required": [key], "properties": {key: {"type": "string"}}}
                for key in ("model_id", "node_id")
            ]
        },
    )

    model_id: Identifier | None = None
    node_id: Identifier | None = None
    ts: EpochSeconds
    name: Identifier = Field(
        description="what was measured, e.g. load_time_seconds, latency_seconds, memory_bytes"
    )
    value: Finite
    unit: Label = Field(default="", description="base unit: seconds, bytes, ratio")

    @model_validator(mode="after")
    def _has_subject(self) -> Self:
        if self.model_id is None and self.node_id is None:
            raise ValueError("a metric event needs model_id or node_id")
        return self
