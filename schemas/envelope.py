"""Decoding one Kafka message into events: a single event or a batch envelope.

A message holds one JSON object, a JSON array of objects, or ``{"events": [...]}``. Each
event of an envelope is validated on its own: the good ones are kept, each bad one is
returned as an :class:`EventError` that says which and why, so that it can be
dead-lettered while the rest is processed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class EventError:
    """Why an event (``index`` in its envelope, or ``None`` for the whole message) failed."""

    reason: str  # malformed_json, schema_violation, oversize, bad_envelope, timestamp_skew
    error_class: str
    message: str
    index: int | None = None
    raw: bytes = b""


@dataclass(slots=True)
class Decoded(Generic[E]):
    events: list[E] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)
    envelope: bool = False
    #: Index in the envelope of each event, once an event has failed (``None``: the
    #: events are the envelope's items in order).
    positions: list[int] | None = None

    def position(self, i: int) -> int:
        return i if self.positions is None else self.positions[i]


def _short(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[:3]
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in first)


def decode(
    raw: bytes | str | None,
    schema: type[E],
    *,
    max_bytes: int = 1 << 20,
    max_events: int = 10_000,
) -> Decoded[E]:
    """Decode a message into events of ``schema``.

    >>> from schemas.usage import UsageEvent
    >>> out = decode(b'[{"model_id": "a", "ts": 60}, {"model_id": "", "ts": 60}]', UsageEvent)
    >>> [e.model_id for e in out.events], [(x.index, x.reason) for x in out.errors]
    (['a'], [(1, 'schema_violation')])
    """
    out: Decoded[E] = Decoded()
    data = raw.encode() if isinstance(raw, str) else (raw or b"")
    if len(data) > max_bytes:
        out.errors.append(
            EventError(
                "oversize",
                "MessageTooLarge",
                f"message of {len(data)} bytes exceeds the limit of {max_bytes}",
            )
        )
        return out
    try:
        doc: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        out.errors.append(EventError("malformed_json", "JSONDecodeError", str(exc), raw=data))
        return out
    items: list[Any]
    if isinstance(doc, list):
        items, out.envelope = doc, True
    elif isinstance(doc, dict) and "events" in doc and "model_id" not in doc:
        if not isinstance(doc["events"], list):
            out.errors.append(
                EventError("bad_envelope", "EnvelopeError", "'events' must be a list", raw=data)
            )
            return out
        items, out.envelope = doc["events"], True
    else:  # a single event
        items = [doc]
    if len(items) > max_events:
        out.errors.append(
            EventError(
                "oversize",
                "EnvelopeTooLarge",
                f"envelope of {len(items)} events exceeds the limit of {max_events}",
            )
        )
        return out
    if out.envelope:
        try:  # the whole envelope in one pass; item by item only when one fails
            out.events = _list_adapter(schema).validate_python(items)
            return out
        except ValidationError:
            pass
    validate = _validator(schema)
    for i, item in enumerate(items):
        try:
            out.events.append(validate(item))
        except ValidationError as exc:
            out.errors.append(
                EventError(
                    "schema_violation",
                    "ValidationError",
                    _short(exc),
                    index=i if out.envelope else None,
                    raw=_item_bytes(item, data) if out.envelope else data,
                )
            )
            if out.positions is None:
                out.positions = list(range(len(out.events)))
            continue
        if out.positions is not None:
            out.positions.append(i)
    return out


@cache
def _validator(schema: type[E]) -> Callable[[Any], E]:
    """``schema.model_validate``, without its wrapper's cost on each event."""
    return schema.__pydantic_validator__.validate_python


@cache
def _list_adapter(schema: type[E]) -> TypeAdapter[list[E]]:
    return TypeAdapter(list[schema])  # type: ignore[valid-type]


def _item_bytes(item: Any, message: bytes) -> bytes:
    """One envelope item as JSON; the whole message when the item cannot be written
    back (nested deeper than the JSON writer goes)."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return message


def reject_skewed(
    decoded: Decoded[E], now: float, max_future: float = 0.0, max_past: float = 0.0
) -> Decoded[E]:
    """Move events whose ``ts`` is more than ``max_future`` seconds ahead of the wall clock
    ``now``, or more than ``max_past`` behind it, to the errors (``timestamp_skew``).
    A bound of 0 is no bound. Returns ``decoded``, changed in place.

    >>> from schemas.usage import UsageEvent
    >>> raw = b'[{"model_id": "a", "ts": 1000}, {"model_id": "b", "ts": 9000}]'
    >>> out = decode(raw, UsageEvent)
    >>> out = reject_skewed(out, now=1000.0, max_future=3600)
    >>> [e.model_id for e in out.events], [(x.index, x.reason) for x in out.errors]
    (['a'], [(1, 'timestamp_skew')])
    """
    if (max_future <= 0 and max_past <= 0) or not decoded.events:
        return decoded
    latest = now + max_future if max_future > 0 else float("inf")
    earliest = now - max_past if max_past > 0 else float("-inf")
    events = decoded.events
    if len(events) == 1:  # a single-event message: no generator
        if earliest <= events[0].ts <= latest:  # type: ignore[attr-defined]
            return decoded
    elif all(earliest <= e.ts <= latest for e in events):  # type: ignore[attr-defined]
        return decoded
    kept: list[E] = []
    positions: list[int] = []
    for i, event in enumerate(decoded.events):
        ts: float = event.ts  # type: ignore[attr-defined]
        at = decoded.position(i)
        if earliest <= ts <= latest:
            kept.append(event)
            positions.append(at)
            continue
        side = "ahead of" if ts > latest else "behind"
        decoded.errors.append(
            EventError(
                "timestamp_skew",
                "TimestampSkew",
                f"event time {ts:.3f} is {abs(ts - now):.0f}s {side} the wall clock {now:.3f}",
                index=at if decoded.envelope else None,
                raw=orjson.dumps(event.model_dump(exclude_none=True)) if decoded.envelope else b"",
            )
        )
    decoded.events, decoded.positions = kept, positions
    return decoded
