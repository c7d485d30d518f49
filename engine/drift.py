"""Drift of the learner's error: detect it, raise an alert, fall back while it lasts.

Each resolved prediction has an error ``|y - p|``. One ADWIN detector watches the error of
every prediction (the learner as a whole) and one watches each served model's own
predictions. When a detector finds that the error went *up*, its subject is flagged and an
alert fires; the alert resolves when ``hold_minutes`` have passed without a new detection.
A flagged model is decided by the hybrid-histogram policy meanwhile. A drift of the whole
learner only alerts by default (``global_fallback=False``): usage that follows the time of
day makes the overall error rise and fall every day, and sending every model to the
fallback for it costs more than it saves. A detection where the error went down (the
learner got better) is not a drift.
"""

from __future__ import annotations

from river import drift

from engine.alerting import AlertTransition

GLOBAL = None


class _Watch:
    __slots__ = ("adwin", "flagged_until", "mean")

    def __init__(self, delta: float) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.flagged_until = -1
        self.mean = 0.0


class DriftMonitor:
    """ADWIN on the learner's error, overall and per served model.

    >>> mon = DriftMonitor(hold_minutes=60, delta=0.01)
    >>> for i in range(300):  # good predictions, then bad ones
    ...     mon.update("m", 0.05 if i < 200 else 0.9, minute=i)
    >>> mon.flagged("m", minute=250), mon.flagged("other", minute=250)
    (True, False)
    >>> [(a.kind, a.model_id, a.state) for a in mon.drain()][:2]
    [('learner_drift', None, 'firing'), ('learner_drift', 'm', 'firing')]
    >>> mon.expire(minute=1000)
    >>> mon.flagged("m", minute=1000)
    False
    """

    def __init__(
        self,
        *,
        hold_minutes: int = 120,
        delta: float = 0.002,
        per_model: bool = True,
        global_fallback: bool = False,
        kind: str = "learner_drift",
    ) -> None:
        self.hold_minutes = hold_minutes
        self.delta = delta
        self.per_model = per_model
        self.global_fallback = global_fallback
        self.kind = kind
        self.detections = 0
        self._global = _Watch(delta)
        self._models: dict[str, _Watch] = {}
        self._alerts: list[AlertTransition] = []
        self._flagged: dict[str | None, _Watch] = {}

    def update(self, model_id: str, error: float, minute: int) -> None:
        self._observe(GLOBAL, self._global, error, minute)
        if self.per_model:
            watch = self._models.get(model_id)
            if watch is None:
                watch = self._models[model_id] = _Watch(self.delta)
            self._observe(model_id, watch, error, minute)

    def _observe(self, subject: str | None, watch: _Watch, error: float, minute: int) -> None:
        before = watch.adwin.estimation
        watch.adwin.update(error)
        if not watch.adwin.drift_detected:
            return
        after = watch.adwin.estimation
        if after <= before:
            return
        self.detections += 1
        if watch.flagged_until < minute:
            self._alerts.append(
                AlertTransition.raised(self.kind, subject, after, before, "firing", minute)
            )
        watch.flagged_until = minute + self.hold_minutes
        watch.mean = after
        self._flagged[subject] = watch

    def flagged(self, model_id: str, minute: int) -> bool:
        """Whether ``model_id`` should fall back (its own drift, or the whole learner's when
        ``global_fallback``)."""
        if self.global_fallback and self._global.flagged_until >= minute:
            return True
        watch = self._models.get(model_id)
        return watch is not None and watch.flagged_until >= minute

    def expire(self, minute: int) -> None:
        """Resolve the flags whose hold is over."""
        over = [s for s, w in self._flagged.items() if w.flagged_until < minute]
        for subject in over:
            watch = self._flagged.pop(subject)
            value = watch.adwin.estimation
            self._alerts.append(
                AlertTransition.raised(self.kind, subject, value, watch.mean, "resolved", minute)
            )
            watch.flagged_until = -1

    def drain(self) -> list[AlertTransition]:
        """Alerts raised since the last call (oldest first)."""
        out, self._alerts = self._alerts, []
        return out

    def forget(self, model_id: str) -> None:
        self._models.pop(model_id, None)
        self._flagged.pop(model_id, None)
