"""Field types shared by the contracts."""

from __future__ import annotations

import calendar
import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: Far enough to hold any real trace, near enough to refuse garbage (year 1970..2200).
MAX_EPOCH_SECONDS = 7_258_118_400.0


def _rfc3339_pattern() -> str:
    """The RFC 3339 date-times an event may carry, as one regular expression that means the
    same in JSON Schema's dialect (ECMA-262) and in Python's: ASCII digits only, no ``$``.

    Valid calendar dates only (leap years included) from 1970-01-01 to 2199-12-31; ``T``,
    ``t`` or a space before the time; seconds required, any fraction of them; ``Z``, ``z``,
    ``+HH:MM``, ``-HH:MM`` or no zone (UTC). On 1970-01-01 and 2199-12-31 only UTC, so that
    every such time lies within 0..MAX_EPOCH_SECONDS whatever its offset.
    """
    d31, d30, d28 = "(0[1-9]|[12][0-9]|3[01])", "(0[1-9]|[12][0-9]|30)", "(0[1-9]|1[0-9]|2[0-8])"
    days = f"((0[13578]|1[02])-{d31}|(0[469]|11)-{d30}|02-{d28})"
    not_jan1 = f"(01-(0[2-9]|[12][0-9]|3[01])|(0[3578]|1[02])-{d31}|(0[469]|11)-{d30}|02-{d28})"
    not_dec31 = f"((0[13578]|10)-{d31}|12-{d30}|(0[469]|11)-{d30}|02-{d28})"
    years = "(19(7[1-9]|[89][0-9])|20[0-9][0-9]|21([0-8][0-9]|9[0-8]))"
    leap = "(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))"
    any_zone = f"({years}-{days}|{leap}-02-29|1970-{not_jan1}|2199-{not_dec31})"
    time = "[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
    zone = "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"
    utc = "([Zz]|[+-]00:00)?"
    return f"^({any_zone}{time}{zone}|(1970-01-01|2199-12-31){time}{utc})(?![\\s\\S])"


#: The RFC 3339 date-times an event may carry (see :func:`_rfc3339_pattern`).
RFC3339_PATTERN = _rfc3339_pattern()
_RFC3339 = re.compile(RFC3339_PATTERN)


def text_to_epoch_seconds(value: str) -> float:
    """Epoch seconds of an RFC 3339 date-time (no zone: UTC); ``ValueError`` for text that
    is not one of :data:`RFC3339_PATTERN`.

    >>> text_to_epoch_seconds("2024-11-15T00:00:03Z")
    1731628803.0
    >>> text_to_epoch_seconds("2024-11-15 01:00:03.5+01:00")
    1731628803.5
    >>> text_to_epoch_seconds("2023-02-29T00:00:00Z")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 date-time from 1970 to 2199: '2023-02-29T00:00:00Z'
    """
    if _RFC3339.search(value) is None:
        raise ValueError(f"not an RFC 3339 date-time from 1970 to 2199: {value!r}")
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    hour, minute, second = int(value[11:13]), int(value[14:16]), int(value[17:19])
    rest = value[19:]
    fraction = 0.0
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789"))
        fraction, rest = float("0" + rest[:digits]), rest[digits:]
    offset = 0
    if rest[:1] in ("+", "-"):
        offset = (int(rest[1:3]) * 60 + int(rest[4:6])) * 60 * (1 if rest[0] == "+" else -1)
    return calendar.timegm((year, month, day, hour, minute, second)) - offset + fraction


class _EpochSecondsSchema:
    """Validation of :data:`EpochSeconds`: numbers are checked in pydantic's core (no
    Python call for the common case), strings are parsed in Python; either way one
    error, ``epoch_seconds``, says what is accepted. The JSON Schema says the same."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        number = core_schema.float_schema(
            strict=True, ge=0.0, le=MAX_EPOCH_SECONDS, allow_inf_nan=False
        )
        text = core_schema.no_info_after_validator_function(
            text_to_epoch_seconds, core_schema.str_schema(strict=True)
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
        return {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_SECONDS},
                {"type": "string", "pattern": RFC3339_PATTERN},
            ]
        }


class WholeNumber:
    """An integer from ``ge`` to ``le`` as JSON has it: an integer, or a number with no
    fraction (``2.0``, the same number to JSON Schema); no text, no ``true``. Integers
    are checked in pydantic's core alone (``Annotated[int, WholeNumber(1, 10)]``).
    """

    def __init__(self, ge: int, le: int) -> None:
        self.ge, self.le = ge, le

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        whole_float = core_schema.float_schema(
            strict=True, ge=self.ge, le=self.le, multiple_of=1.0, allow_inf_nan=False
        )
        return core_schema.union_schema(
            [
                core_schema.int_schema(strict=True, ge=self.ge, le=self.le),
                core_schema.no_info_after_validator_function(int, whole_float),
            ],
            mode="left_to_right",
            custom_error_type="whole_number",
            custom_error_message=f"a whole number from {self.ge} to {self.le}",
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.ge, "maximum": self.le}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


#: Event time in epoch seconds; an RFC 3339 string is accepted too.
EpochSeconds = Annotated[
    float,
    _EpochSecondsSchema,
    Field(
        description="event time: epoch seconds from 0 to 7258118400 (2200-01-01T00:00:00Z), "
        "or an RFC 3339 date-time string from 1970-01-01 to 2199-12-31 (T, t or a space "
        "before the time; seconds required, any fraction; Z, z, an offset +HH:MM or -HH:MM, "
        "or none for UTC; on the first and the last of those days only UTC)"
    ),
]

#: The longest identifier or label a contract takes, in characters.
TEXT_MAX_LENGTH = 256
Identifier = Annotated[str, Field(min_length=1, max_length=TEXT_MAX_LENGTH)]
Label = Annotated[str, Field(max_length=TEXT_MAX_LENGTH)]
Finite = Annotated[float, BeforeValidator(_finite), Field(allow_inf_nan=False)]
