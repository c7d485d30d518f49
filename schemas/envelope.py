"""Decoding one Kafka message into events: a single event or a batch envelope.

A message holds one JSON object, a JSON array of objects, or ``{"events": [...]}``. Each
event of an envelope is validated on its own: the good ones are kept, each bad one is
returned as an :class:`EventError` that says which and why, so that it can be
dead-lettered while the rest is processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class EventError:
    """Why an event (``index`` in its envelope, or ``None`` for the whole message) failed."""

    reason: str  # malformed_json, schema_violation, oversize, bad_envelope
    error_class: str
    message: str
    index: int | None = None
    raw: bytes = b""


@dataclass(slots=True)
class Decoded(Generic[E]):
    events: list[E] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)
    envelope: bool = False


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
    else:
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
    validate = schema.model_validate
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
                    raw=orjson.dumps(item) if out.envelope else data,
                )
            )
    return out
