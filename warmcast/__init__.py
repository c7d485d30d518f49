"""warmcast for the processes that serve models: report usage, read the contracts.

>>> import warmcast
>>> warmcast.__version__ == warmcast.version()
True
>>> warmcast.WarmupCommand.__name__, warmcast.UsageReporter.__name__
('WarmupCommand', 'UsageReporter')
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from schemas import (
    Alert,
    DeadLetterHeaders,
    HealthSnapshot,
    MetricEvent,
    UsageEvent,
    WarmupCommand,
)
from warmcast.reporter import UsageReporter


def version() -> str:
    try:
        return _version("warmcast")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = version()

__all__ = [
    "Alert",
    "DeadLetterHeaders",
    "HealthSnapshot",
    "MetricEvent",
    "UsageEvent",
    "UsageReporter",
    "WarmupCommand",
    "__version__",
]
