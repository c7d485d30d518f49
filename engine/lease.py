"""Leases (what a policy decides) and commands (what is published).

A lease is in minutes on the engine's grid; a command is the same decision in event-time
seconds, with a stable ``command_id`` so that downstream consumers can drop duplicates.
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import blake2b
from typing import Final, Literal, NamedTuple

Action = Literal["warm", "release"]


class Lease:
    """Loaded during minutes ``[start, end)`` (``warm``), or not loaded (``release``).

    Two leases are the same decision when action, start and end agree; the other fields
    explain it. A lease does not change once made (its fields are ``Final``): policies
    share them.

    >>> Lease("warm", 11, 21) == Lease("warm", 11, 21, reason="other words")
    True
    >>> Lease("warm", 11, 21).covers(20), Lease("warm", 11, 21).covers(21)
    (True, False)
    >>> Lease("warm", 11, 21, priority=1).with_start(15)
    Lease(warm 15..21)
    """

    __slots__ = ("action", "confidence", "end", "priority", "probability", "reason", "start")

    def __init__(
        self,
        action: Action,
        start: int,
        end: int,
        priority: int = 2,
        probability: float | None = None,
        confidence: float | None = None,
        reason: str = "",
    ) -> None:
        self.action: Final = action
        self.start: Final = start
        self.end: Final = end
        self.priority: Final = priority
        self.probability: Final = probability
        self.confidence: Final = confidence
        self.reason: Final = reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lease):
            return NotImplemented
        return self.start == other.start and self.end == other.end and self.action == other.action

    def __hash__(self) -> int:
        return hash((self.action, self.start, self.end))

    def __repr__(self) -> str:
        if self.action == "release":
            return f"Lease(release at {self.start})"
        return f"Lease(warm {self.start}..{self.end})"

    def __reduce__(self) -> tuple[type[Lease], tuple[object, ...]]:
        return Lease, (
            self.action,
            self.start,
            self.end,
            self.priority,
            self.probability,
            self.confidence,
            self.reason,
        )

    def with_start(self, start: int) -> Lease:
        """The same lease, from minute ``start``."""
        return Lease(
            self.action,
            start,
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
