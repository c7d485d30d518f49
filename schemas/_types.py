"""Field types shared by the contracts."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

#: Far enough to hold any real trace, near enough to refuse garbage (year 1970..2200).
MAX_EPOCH_SECONDS = 7_258_118_400.0


def to_epoch_seconds(value: Any) -> Any:
    """Accept epoch seconds or an RFC 3339 string; return epoch seconds.

    >>> to_epoch_seconds("2024-11-15T00:00:03Z")
    1731628803.0
    >>> to_epoch_seconds(60)
    60.0
    """
    if isinstance(value, bool):
        raise ValueError("a timestamp is epoch seconds or an RFC 3339 string, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
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
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


EpochSeconds = Annotated[
    float,
    BeforeValidator(to_epoch_seconds),
    Field(ge=0.0, le=MAX_EPOCH_SECONDS, allow_inf_nan=False, description="event time, epoch s"),
]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
Label = Annotated[str, Field(max_length=256)]
Finite = Annotated[float, BeforeValidator(_finite), Field(allow_inf_nan=False)]
