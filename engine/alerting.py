"""Alert conditions and their firing / resolved transitions.

A rule is evaluated whenever the worker checks; an :class:`AlertTracker` remembers which
conditions fire and reports only the transitions, each with a stable fingerprint.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Literal

State = Literal["firing", "resolved"]


def fingerprint(kind: str, subject: str) -> str:
    """Stable id of a condition on a subject.

    >>> fingerprint("stale_data", "warmcast.usage.v1") == fingerprint(
    ...     "stale_data", "warmcast.usage.v1")
    True
    """
    return hashlib.blake2b(f"{kind}\x1f{subject}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class AlertTransition:
    fingerprint: str
    kind: str
    severity: str
    state: State
    subject: str
    summary: str
    value: float | None
    threshold: float | None
    ts: float


class AlertTracker:
    """Turns condition checks into transitions.

    >>> t = AlertTracker()
    >>> [a.state for a in t.check("stale_data", "usage", True, ts=10, value=400, threshold=300)]
    ['firing']
    >>> t.check("stale_data", "usage", True, ts=20, value=410, threshold=300)
    []
    >>> [a.state for a in t.check("stale_data", "usage", False, ts=30, value=1, threshold=300)]
    ['resolved']
    """

    def __init__(self) -> None:
        self.firing: dict[str, AlertTransition] = {}

    def check(
        self,
        kind: str,
        subject: str,
        active: bool,
        *,
        ts: float,
        value: float | None = None,
        threshold: float | None = None,
        severity: str = "warning",
        summary: str = "",
    ) -> list[AlertTransition]:
        fp = fingerprint(kind, subject)
        was = fp in self.firing
        if active == was:
            return []
        alert = AlertTransition(
            fp,
            kind,
            severity,
            "firing" if active else "resolved",
            subject,
            summary,
            value,
            threshold,
            ts,
        )
        if active:
            self.firing[fp] = alert
        else:
            del self.firing[fp]
        return [alert]


class RateWindow:
    """How many things happened in the last ``window`` seconds.

    >>> w = RateWindow(60.0)
    >>> for ts in (0, 30, 65):
    ...     w.add(ts)
    >>> w.count(70.0)
    2
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def add(self, ts: float, n: int = 1) -> None:
        for _ in range(n):
            self._times.append(ts)

    def count(self, now: float) -> int:
        horizon = now - self.window
        times = self._times
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)
