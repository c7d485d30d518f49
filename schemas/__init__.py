"""warmcast's contracts: one pydantic v2 model per kind of message on its topics."""

from schemas.alert import Alert
from schemas.deadletter import DeadLetterHeaders
from schemas.envelope import Decoded, EventError, decode
from schemas.health import HealthSnapshot
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from schemas.warmup import WarmupCommand

__all__ = [
    "Alert",
    "DeadLetterHeaders",
    "Decoded",
    "EventError",
    "HealthSnapshot",
    "MetricEvent",
    "UsageEvent",
    "WarmupCommand",
    "decode",
]
