"""Field types shared by the contracts."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: Far enough to hold any real trace, near enough to refuse garbage (year 1970..2200).
MAX_EPOCH_SECONDS = 7_258_118_400.0


def text_to_epoch_seconds(value: str) -> float:
    """Epoch seconds from a number or an RFC 3339 timestamp written as text (no zone: UTC).

    >>> text_to_epoch_seconds("2024-11-15T00:00:03Z"), text_to_epoch_seconds(" 60 ")
    (1731628803.0, 60.0)
    """
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _text_in_range(value: str) -> float:
    seconds = text_to_epoch_seconds(value)
    if not 0.0 <= seconds <= MAX_EPOCH_SECONDS:  # also refuses "nan"
        raise ValueError(f"{value!r} is outside 0..{MAX_EPOCH_SECONDS:.0f} epoch seconds")
    return seconds


class _EpochSecondsSchema:
    """Validation of :data:`EpochSeconds`: numbers are checked in pydantic's core (no
    Python call for the common case), strings are parsed in Python; either way one
    error, ``epoch_seconds``, says what is accepted."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        number = core_schema.float_schema(
            strict=True, ge=0.0, le=MAX_EPOCH_SECONDS, allow_inf_nan=False
        )
        text = core_schema.no_info_after_validator_function(
            _text_in_range, core_schema.str_schema(strict=True)
        )
        return core_schema.union_schema(
            [number, text],
            mode="left_to_right",
            custom_error_type="epoch_seconds",
            custom_error_message="a timestamp is epoch seconds (0 to "
            f"{MAX_EPOCH_SECONDS:.0f}) or an RFC 3339 string",
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"ge": 0.0, "le": MAX_EPOCH_SECONDS, "type": "number"}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


#: Event time in epoch seconds; an RFC 3339 string is accepted too.
EpochSeconds = Annotated[float, _EpochSecondsSchema, Field(description="event time, epoch s")]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
Label = Annotated[str, Field(max_length=256)]
Finite = Annotated[float, BeforeValidator(_finite), Field(allow_inf_nan=False)]
