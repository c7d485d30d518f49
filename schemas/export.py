"""JSON Schema files of the contracts, generated into ``schemas/json/``."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.control import ControlCommand
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
}

SCHEMA_DIR = Path(__file__).parent / "json"


def render(name: str) -> bytes:
    """The JSON Schema text of one contract, as it is written to disk."""
    schema = CONTRACTS[name].model_json_schema(mode="validation")
    schema["$id"] = f"https://warmcast.dev/schemas/{name}.json"
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every contract's JSON Schema; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONTRACTS:
        path = directory / f"{name}.json"
        path.write_bytes(render(name))
        written.append(path)
    return written


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of contracts whose file on disk differs from the models (or is missing)."""
    return [
        name
        for name in CONTRACTS
        if not (directory / f"{name}.json").is_file()
        or (directory / f"{name}.json").read_bytes() != render(name)
    ]
