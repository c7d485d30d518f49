"""What warmcast sends, checked against its contracts: the JSON Schema files in
``schemas/json/`` (as ``warmcast schemas export`` writes them), read by a standard
validator.

The integration harness checks with these every record it reads from an outgoing topic
(warmup commands, alerts, health snapshots, dead letters' headers) and every answer of
``/health`` and ``/health/models/{id}``, so that each test that reads them also holds
them to the contracts.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
import orjson

from schemas.export import SCHEMA_DIR

#: The contract of each outgoing topic, by the end of its name.
TOPICS = {
    ".warmup.v1": "warmup_command",
    ".alerts.v1": "alert",
    ".health.v1": "health_snapshot",
}


@cache
def validator(name: str) -> Any:
    schema = orjson.loads((SCHEMA_DIR / f"{name}.json").read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check(name: str, document: Any) -> Any:
    """``document``, if it is valid under the contract ``name``; else AssertionError."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        why = "; ".join(f"{'/'.join(map(str, e.path)) or '<doc>'}: {e.message}" for e in errors)
        raise AssertionError(f"not a valid {name}: {why}\n{document!r}")
    return document


def check_listed_alert(document: dict[str, Any]) -> dict[str, Any]:
    """An alert as ``/health`` lists it: the alerts topic's record, its time as ``since``
    while it fires."""
    record = dict(document)
    if "since" in record:
        record["ts"] = record.pop("since")
    check("alert", record)
    return document


#: What a model listed by ``/health`` shares with its health snapshot.
LISTED_MODEL = (
    "model_id",
    "requests_total",
    "cold_starts_total",
    "request_rate",
    "cold_start_rate",
    "latency_mean",
    "last_seen",
)


@cache
def listed_model_validator() -> Any:
    """The health snapshot's schema of the fields a listed model shares with it."""
    snapshot = orjson.loads((SCHEMA_DIR / "health_snapshot.json").read_bytes())
    schema = {
        "$schema": snapshot["$schema"],
        "type": "object",
        "properties": {k: snapshot["properties"][k] for k in LISTED_MODEL},
        "required": list(LISTED_MODEL),
    }
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_health(document: dict[str, Any]) -> dict[str, Any]:
    """``GET /health``: its alerts are the alerts topic's records, and each listed model
    holds what it shares with a health snapshot as the snapshot's schema says."""
    for alert in [*document.get("alerts_firing", []), *document.get("recent_alerts", [])]:
        check_listed_alert(alert)
    for model in document.get("models", []):
        errors = list(listed_model_validator().iter_errors(model))
        if errors:
            raise AssertionError(f"not a valid listed model: {errors[0].message}\n{model!r}")
    return document


def check_answer(path: str, body: bytes) -> None:
    """A worker's answer to ``GET path``, checked when a contract covers it."""
    route = path.split("?", 1)[0]
    if route == "/health":
        check_health(orjson.loads(body))
    elif route.startswith("/health/models/"):
        check("health_snapshot", orjson.loads(body))


def check_dead_letter(record: Any) -> Any:
    """A record of a ``.dlq`` topic: its headers are a dead letter's."""
    headers = {name: value.decode() for name, value in record.headers}
    check("dead_letter_headers", headers)
    return record


def check_record(record: Any) -> Any:
    """A consumed record, checked when its topic is an outgoing one."""
    topic = record.topic
    if topic.endswith(".dlq"):
        return check_dead_letter(record)
    for suffix, name in TOPICS.items():
        if topic.endswith(suffix) and record.value is not None:
            check(name, orjson.loads(record.value))
    return record
