"""Leases (what a policy decides) and commands (what is published).

A lease is in minutes on the engine's grid; a command is the same decision in event-time
seconds, with a stable ``command_id`` so that downstream consumers can drop duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from typing import Literal, NamedTuple

Action = Literal["warm", "release"]


@dataclass(frozen=True, slots=True, repr=False)
class Lease:
    """Loaded during minutes ``[start, end)`` (``warm``), or not loaded (``release``).

    Two leases are the same decision when action, start and end agree; the other fields
    explain it.

    >>> Lease("warm", 11, 21) == Lease("warm", 11, 21, reason="other words")
    True
    >>> Lease("warm", 11, 21).covers(20), Lease("warm", 11, 21).covers(21)
    (True, False)
    """

    action: Action
    start: int
    end: int
    priority: int = field(default=2, compare=False)
    probability: float | None = field(default=None, compare=False)
    confidence: float | None = field(default=None, compare=False)
    reason: str = field(default="", compare=False)

    def __repr__(self) -> str:
        if self.action == "release":
            return f"Lease(release at {self.start})"
        return f"Lease(warm {self.start}..{self.end})"

    def __reduce__(self) -> tuple[type[Lease], tuple[object, ...]]:
        # by its fields, so that the pure-Python and the compiled engine read each other's
        # checkpoints
        return Lease, (
            self.action,
            self.start,
            self.end,
            self.priority,
            self.probability,
            self.confidence,
            self.reason,
        )

    def covers(self, minute: int) -> bool:
        return self.action == "warm" and self.start <= minute < self.end

    @classmethod
    def release(cls, minute: int, reason: str = "") -> Lease:
        return cls("release", minute, minute, reason=reason)


def command_id(model_id: str, action: str, start: float, end: float, policy_version: str) -> str:
    """Deterministic id of a command: the same decision always has the same id.

    >>> command_id("m", "warm", 60.0, 120.0, "hybrid/1") == command_id(
    ...     "m", "warm", 60, 120, "hybrid/1")
    True
    """
    key = model_id + _id_suffix(action, start, end, policy_version)
    return blake2b(key.encode(), digest_size=12).hexdigest()


@lru_cache(maxsize=4096)
def _id_suffix(action: str, start: float, end: float, policy_version: str) -> str:
    """The part of a command id's key after the model (shared by the many models that
    get the same lease in a minute)."""
    return f"\x1f{action}\x1f{float(start):.3f}\x1f{float(end):.3f}\x1f{policy_version}"


class Command(NamedTuple):
    """A warmup command in event time (epoch seconds), ready to serialise (a named tuple:
    an engine makes one for nearly every lease it hands out)."""

    command_id: str
    model_id: str
    action: Action
    issued_at: float
    start: float
    end: float
    priority: int
    probability: float | None
    confidence: float | None
    reason: str
    policy_version: str

    def to_dict(self) -> dict[str, object]:
        return {
            "command_id": self.command_id,
            "model_id": self.model_id,
            "action": self.action,
            "issued_at": self.issued_at,
            "start": self.start,
            "end": self.end,
            "priority": self.priority,
            "probability": self.probability,
            "confidence": self.confidence,
            "reason": self.reason,
            "policy_version": self.policy_version,
        }
