"""Alert conditions and their firing / resolved transitions.

A rule is evaluated whenever the worker checks; an :class:`AlertTracker` remembers which
conditions fire and reports only the transitions, each with a stable fingerprint.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import astuple, dataclass, fields, replace
from typing import Literal

State = Literal["firing", "resolved"]


def fingerprint(kind: str, subject: str) -> str:
    """Stable id of a condition on a subject.

    >>> fingerprint("stale_data", "warmcast.usage.v1") == fingerprint(
    ...     "stale_data", "warmcast.usage.v1")
    True
    """
    return hashlib.blake2b(f"{kind}\x1f{subject}".encode(), digest_size=8).hexdigest()


#: The subject of a condition of a whole learner (no served model).
EVERY_MODEL = "*"


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """A condition firing or resolved: the one alert type of the engine and the worker
    (published as the contract :class:`schemas.alert.Alert`).

    ``ts`` is wall-clock seconds for the worker's checks; an alert a policy raises carries
    the event-time ``minute`` it was raised in, and the worker stamps its ``ts`` when it
    drains it (see :meth:`raised`).
    """

    fingerprint: str
    kind: str
    severity: str
    state: State
    subject: str
    summary: str
    value: float | None
    threshold: float | None
    ts: float
    minute: int | None = None
    #: figures that justify it, as (name, value) pairs (the record's ``details``)
    details: tuple[tuple[str, float | str | None], ...] = ()

    @classmethod
    def raised(
        cls,
        kind: str,
        model_id: str | None,
        value: float,
        threshold: float,
        state: State,
        minute: int,
    ) -> AlertTransition:
        """An alert a policy raises at event-time ``minute``, of a served model or (``None``)
        of the whole learner.

        >>> a = AlertTransition.raised("learner_drift", None, 0.4, 0.2, "firing", 100)
        >>> a.subject, a.model_id, a.firing, a.summary, a.fingerprint == fingerprint(
        ...     "learner_drift", "*")
        ('*', None, True, 'learner_drift on *', True)
        """
        subject = model_id or EVERY_MODEL
        return cls(
            fingerprint(kind, subject),
            kind,
            "warning",
            state,
            subject,
            f"{kind} on {subject}",
            float(value),
            float(threshold),
            minute * 60.0,
            minute,
        )

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    @property
    def model_id(self) -> str | None:
        """The served model a policy's alert is about (``None``: the whole learner)."""
        return None if self.subject == EVERY_MODEL else self.subject

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in _FIELDS)

    def __setstate__(self, state: tuple[object, ...] | list[object]) -> None:
        """Unpickled from a checkpoint; also from the form policies' alerts had before
        (``kind, model_id, value, threshold, state, minute``)."""
        values = list(state)
        if len(values) == 6:
            kind, model_id, value, threshold, st, minute = values
            values = list(
                astuple(
                    AlertTransition.raised(
                        str(kind),
                        model_id if isinstance(model_id, str) else None,
                        float(value),  # type: ignore[arg-type]
                        float(threshold),  # type: ignore[arg-type]
                        "firing" if st == "firing" else "resolved",
                        int(minute),  # type: ignore[call-overload]
                    )
                )
            )
        if len(values) < len(_FIELDS):  # written before the later fields were added
            values += [f.default for f in fields(AlertTransition)[len(values) :]]
        for name, value in zip(_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)


_FIELDS = tuple(f.name for f in fields(AlertTransition))


class AlertTracker:
    """Turns condition checks into transitions, each condition firing at most once at a time.

    A condition must hold for ``for_seconds`` before it fires, and once firing it resolves
    only after it has been clear for ``keep_firing_seconds``, so a signal that flaps around
    its threshold raises one alert, not one per flap. A check may also say when a firing
    condition counts as clear (``clear``), stricter than "not active": that is the value
    hysteresis (fire above 500 ms, resolve below 450 ms).

    >>> t = AlertTracker()
    >>> [a.state for a in t.check("stale_data", "usage", True, ts=10, value=400, threshold=300)]
    ['firing']
    >>> t.check("stale_data", "usage", True, ts=20, value=410, threshold=300)
    []
    >>> [a.state for a in t.check("stale_data", "usage", False, ts=30, value=1, threshold=300)]
    ['resolved']

    With a ``for`` of 10 s and 30 s of keep-firing, a flapping signal fires once:

    >>> t = AlertTracker(for_seconds=10, keep_firing_seconds=30)
    >>> states = []
    >>> for ts, active in [(0, True), (5, True), (10, True), (15, False), (20, True),
    ...                    (25, False), (50, False), (56, False)]:
    ...     states += [(ts, a.state) for a in t.check("k", "s", active, ts=ts)]
    >>> states
    [(10, 'firing'), (56, 'resolved')]
    """

    def __init__(
        self, for_seconds: float = 0.0, keep_firing_seconds: float = 0.0, history: int = 50
    ) -> None:
        self.for_seconds = for_seconds
        self.keep_firing_seconds = keep_firing_seconds
        self.firing: dict[str, AlertTransition] = {}
        self.pending: dict[str, float] = {}  # active since, not firing yet
        self.clearing: dict[str, float] = {}  # firing, clear since
        self.recent: deque[AlertTransition] = deque(maxlen=history)

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
        clear: bool | None = None,
        for_seconds: float | None = None,
    ) -> list[AlertTransition]:
        fp = fingerprint(kind, subject)
        if fp in self.firing:
            if active or (clear is not None and not clear):
                self.clearing.pop(fp, None)
                return []
            since = self.clearing.setdefault(fp, ts)
            if ts - since < self.keep_firing_seconds:
                return []
            del self.clearing[fp]
            state: State = "resolved"
        else:
            if not active:
                self.pending.pop(fp, None)
                return []
            since = self.pending.setdefault(fp, ts)
            wait = self.for_seconds if for_seconds is None else for_seconds
            if ts - since < wait:
                return []
            del self.pending[fp]
            state = "firing"
        alert = AlertTransition(fp, kind, severity, state, subject, summary, value, threshold, ts)
        return self.record(alert)

    def record(self, alert: AlertTransition) -> list[AlertTransition]:
        """Track a transition (also one decided elsewhere, such as a policy's drift alert);
        a repeat of the current state is dropped."""
        fp = alert.fingerprint
        if (alert.state == "firing") == (fp in self.firing):
            return []
        if alert.state == "firing":
            self.firing[fp] = alert
        else:
            del self.firing[fp]
            self.pending.pop(fp, None)
            self.clearing.pop(fp, None)
        self.recent.append(alert)
        return [alert]

    def firing_kinds(self) -> dict[str, int]:
        """How many alerts of each kind fire now."""
        out: dict[str, int] = {}
        for alert in self.firing.values():
            out[alert.kind] = out.get(alert.kind, 0) + 1
        return out


def as_transition(alert: object, ts: float) -> AlertTransition | None:
    """A policy's alert as a transition stamped ``ts``: one already (a policy's, raised at
    an event-time minute, gets ``ts``), or any object with ``kind``, ``state`` and a subject
    (``subject`` or ``model_id``), as a policy of another package may raise; ``None`` if it
    is neither.

    >>> from types import SimpleNamespace as Obj
    >>> a = as_transition(Obj(kind="drift", state="firing", model_id=None, value=0.4,
    ...                       threshold=0.2), ts=60.0)
    >>> a.kind, a.subject, a.state, a.fingerprint == fingerprint("drift", "*")
    ('drift', '*', 'firing', True)
    """
    if isinstance(alert, AlertTransition):
        return alert if alert.minute is None else replace(alert, ts=ts)
    kind = getattr(alert, "kind", None)
    state = getattr(alert, "state", None)
    if not kind or state not in ("firing", "resolved"):
        return None
    subject = getattr(alert, "subject", None) or getattr(alert, "model_id", None) or "*"
    value = getattr(alert, "value", None)
    threshold = getattr(alert, "threshold", None)
    return AlertTransition(
        fingerprint(str(kind), str(subject)),
        str(kind),
        str(getattr(alert, "severity", "warning")),
        state,
        str(subject),
        str(getattr(alert, "summary", "") or f"{kind} on {subject}"),
        None if value is None else float(value),
        None if threshold is None else float(threshold),
        float(getattr(alert, "ts", None) or ts),
    )


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
