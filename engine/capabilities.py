"""What a policy may do beyond the contract of :mod:`engine.policies`, each a protocol
of its own; the engine and the worker ask with ``isinstance``.

(Kept out of the compiled modules: a protocol compiled by mypyc is a plain class and
cannot be checked at run time.)

>>> from engine.policies import FixedKeepAlive
>>> from engine.warmcast import WarmcastPolicy
>>> isinstance(FixedKeepAlive(10), LearnsMetrics), isinstance(WarmcastPolicy(), LearnsMetrics)
(False, True)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class LearnsMetrics(Protocol):
    """A policy that learns from metric events (load times, memory)."""

    def observe_metric(self, model_id: str, name: str, value: float) -> None: ...


@runtime_checkable
class PredictsLoadTime(Protocol):
    """A policy that predicts how long a served model takes to load (seconds), the time
    its warmups are planned ahead by."""

    def predicted_load_seconds(self, model_id: str) -> float: ...


@runtime_checkable
class ForgetsMetrics(Protocol):
    """A policy that can drop what metric events taught it of a model usage never showed."""

    def forget_metrics(self, model_id: str) -> None: ...


@runtime_checkable
class CountsMetricState(Protocol):
    """A policy that says how many entries of per-model metric state it holds."""

    def metric_models(self) -> int: ...


@runtime_checkable
class RaisesAlerts(Protocol):
    """A policy that raises alerts of its own (learner drift, queue overflow), drained by
    the worker on every check."""

    def drain_alerts(self) -> list[Any]: ...
