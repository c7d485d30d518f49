"""JSON Schema files of the contracts, generated into ``schemas/json/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.control import ControlCommand
from schemas.deadletter import DeadLetterHeaders
from schemas.health import HealthSnapshot
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from schemas.warmup import WarmupCommand

CONTRACTS: dict[str, type[BaseModel]] = {
    "usage_event": UsageEvent,
    "metric_event": MetricEvent,
    "warmup_command": WarmupCommand,
    "alert": Alert,
    "health_snapshot": HealthSnapshot,
    "control_command": ControlCommand,
    "dead_letter_headers": DeadLetterHeaders,
}

#: Whole messages of the input topics, by the event contract they carry: one event, a JSON
#: array of events, or an object ``{"events": [...]}`` (without ``model_id``).
MESSAGES: dict[str, str] = {"usage_message": "usage_event", "metric_message": "metric_event"}

#: What a worker checks beyond its input schemas, and JSON Schema cannot say.
BEYOND_SCHEMA = (
    "A worker also refuses what no JSON Schema can express: a message larger than "
    "WARMCAST_MAX_MESSAGE_BYTES or an envelope of more than WARMCAST_MAX_ENVELOPE_EVENTS "
    "events (settings of the worker), JSON nested deeper than 1024 levels, and an event whose "
    "ts is further from the worker's wall clock than WARMCAST_MAX_FUTURE_SKEW_SECONDS ahead "
    "or WARMCAST_MAX_PAST_SKEW_SECONDS behind. Anything else this schema accepts, the worker "
    "accepts, and the other way round."
)

SCHEMA_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _uri(name: str) -> str:
    return f"https://warmcast.dev/schemas/{name}.json"


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema of a contract or of a message (:data:`MESSAGES`), as a document."""
    if name in MESSAGES:
        return _message_schema(name, MESSAGES[name])
    schema = CONTRACTS[name].model_json_schema(mode="validation")
    if name in MESSAGES.values():
        schema["description"] = f"{schema.get('description', '')}\n\n{BEYOND_SCHEMA}".lstrip()
    schema["$id"] = _uri(name)
    schema["$schema"] = DIALECT
    return schema


def _message_schema(name: str, event_name: str) -> dict[str, Any]:
    event = schema_of(event_name)
    definitions = event.pop("$defs", {})
    event.pop("$id")
    event.pop("$schema")
    title = CONTRACTS[event_name].__name__
    definitions[title] = event
    one: dict[str, Any] = {"$ref": f"#/$defs/{title}"}
    many = {"type": "array", "items": one}
    return {
        "$id": _uri(name),
        "$schema": DIALECT,
        "$defs": definitions,
        "title": title.removesuffix("Event") + "Message",
        "description": f"One Kafka message of {title} events: a single event, a JSON array of "
        'events, or an object {"events": [...]} that has no model_id (an object with '
        f"model_id is a single event). Every event must be valid.\n\n{BEYOND_SCHEMA}",
        "if": {"type": "object", "required": ["events"], "not": {"required": ["model_id"]}},
        "then": {"properties": {"events": many}},
        "else": {"anyOf": [one, many]},
    }


def render(name: str) -> bytes:
    """The JSON Schema text of one contract or message, as it is written to disk."""
    return orjson.dumps(schema_of(name), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every contract's and message's JSON Schema; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (*CONTRACTS, *MESSAGES):
        path = directory / f"{name}.json"
        path.write_bytes(render(name))
        written.append(path)
    return written


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of contracts whose file on disk differs from the models (or is missing)."""
    return [
        name
        for name in (*CONTRACTS, *MESSAGES)
        if not (directory / f"{name}.json").is_file()
        or (directory / f"{name}.json").read_bytes() != render(name)
    ]
