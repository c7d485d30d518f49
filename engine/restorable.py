"""What a checkpoint may name: exact classes, and the few functions that rebuild arrays.

A pickle names every class it rebuilds by module and qualified name, and an unpickler that
imports whatever it is told can be made to call any function (``os.system`` is one
attribute away from many modules). A checkpoint may therefore name only the pairs below,
each exactly: no prefix of a package is trusted, and no dotted name is followed from one
object to another. What a name resolves to is checked as well: a class must be a class
defined where it is listed, a reconstructor a function of that name.

>>> restorable("engine.core", "WarmupEngine"), restorable("river.stats.mean", "Mean")
(True, True)
>>> restorable("river.datasets.base", "os.system"), restorable("builtins", "eval")
(False, False)
>>> resolve("engine.timebase", "MinuteGrid").__name__
'MinuteGrid'
>>> resolve("river.datasets.base", "os.system")
Traceback (most recent call last):
...
engine.restorable.Unrestorable: river.datasets.base.os.system is not a class a checkpoint may hold
"""

from __future__ import annotations

import importlib
from typing import Any

#: Classes a partition's learned state is made of, by module: the engine's own, the river
#: learners and statistics it uses, and the containers they hold.
CLASSES: dict[str, frozenset[str]] = {
    name: frozenset(classes.split())
    for name, classes in {
        "engine.accuracy": "AccuracyCounts Discrimination WarmAccuracy",
        "engine.alerting": "AlertTransition",
        "engine.analyzer": "CoOnsetTracker Hazards IdleBins ModelUsage UsagePatternAnalyzer",
        "engine.anomaly": "Anomaly MetricAnomalies RobustZScore",
        "engine.budget": "Budget BudgetStats _Held _Usage",
        "engine.checkpoint": "PartitionState",
        "engine.core": "EngineStats WarmupEngine",
        "engine.drift": "DriftMonitor _Watch",
        "engine.lease": "Command Lease",
        "engine.performance": "LoadTimes PerformancePredictor",
        "engine.policies": "FixedKeepAlive HybridHistogram IdleHistogram KeepLoaded",
        "engine.prediction": "Pending PendingLabels PredictionEngine ProfileBasis Resolved",
        "engine.promotion": "Figures Lineup",
        "engine.queue": "QueueStats WarmupQueue",
        "engine.resources": "ResourceManager ResourceStats",
        "engine.scheduler": "Block WarmupScheduler",
        "engine.shadow": "OnlineScore ShadowPolicies _ModelScore",
        "engine.sketch": "LogSketch",
        "engine.timebase": "MinuteGrid",
        "engine.warmcast": "PolicyStats WarmcastConfig WarmcastPolicy _Plan",
        "river._river_rust.drift": "AdaptiveWindowing",
        "river._river_rust.stats": "RsEWMean RsEWVar RsQuantile",
        "river._river_rust.vectordict": "VectorDict",
        "river.anomaly.filter": "ThresholdFilter",
        "river.drift.adwin": "ADWIN",
        "river.linear_model.log_reg": "LogisticRegression",
        "river.metrics.log_loss": "LogLoss",
        "river.metrics.mae": "MAE",
        "river.optim.initializers": "Zeros",
        "river.optim.losses": "Log",
        "river.optim.schedulers": "Constant",
        "river.optim.sgd": "SGD",
        "river.stats.ewmean": "EWMean",
        "river.stats.ewvar": "EWVar",
        "river.stats.mean": "Mean",
        "river.stats.quantile": "Quantile",
        "builtins": "bytearray complex frozenset range set slice",
        "array": "array",
        "collections": "Counter OrderedDict defaultdict deque",
        "random": "Random",
        "numpy": "dtype ndarray",
    }.items()
}
#: Functions that rebuild an array or a number from its bytes, by module.
RECONSTRUCTORS: dict[str, frozenset[str]] = {
    "array": frozenset({"_array_reconstructor"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
}


class Unrestorable(ValueError):
    """A name a checkpoint may not hold, or one that no longer resolves to what it should."""


#: Classes that checkpoints of earlier versions name, and the listed class each is now
#: (which takes their pickled state: see ``AlertTransition.__setstate__``).
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("engine.drift", "Alert"): ("engine.alerting", "AlertTransition"),
}


def restorable(module: str, name: str) -> bool:
    """Whether ``module`` and ``name`` are exactly one of the listed pairs (or a class
    that one of them was called before)."""
    module, name = RENAMED.get((module, name), (module, name))
    return name in CLASSES.get(module, ()) or name in RECONSTRUCTORS.get(module, ())


def resolve(module: str, name: str) -> Any:
    """The listed class or reconstructor ``name`` of ``module``; raises
    :class:`Unrestorable` for anything else."""
    if not restorable(module, name):
        raise Unrestorable(f"{module}.{name} is not a class a checkpoint may hold")
    module, name = RENAMED.get((module, name), (module, name))
    found = getattr(importlib.import_module(module), name, None)
    if name in CLASSES.get(module, ()):
        fits = isinstance(found, type) and found.__module__ == module and found.__qualname__ == name
    else:
        fits = callable(found) and not isinstance(found, type) and found.__name__ == name
    if not fits:
        raise Unrestorable(f"{module}.{name} does not resolve to the {name} it should")
    return found


__all__ = ["CLASSES", "RECONSTRUCTORS", "RENAMED", "Unrestorable", "resolve", "restorable"]
