"""warmcast's decision engine: pure and synchronous; time comes in with the events.

Nothing here imports Faust or aiokafka. The Faust agents and ``warmcast backtest`` drive the
very same objects, which is what makes a live run, a replay and a backtest decide alike.
"""

# first: decides whether the compiled or the pure-Python engine is imported below
from engine import native  # noqa: F401
from engine.alerting import AlertTransition
from engine.core import EngineStats, WarmupEngine
from engine.lease import Command, Lease, command_id
from engine.policies import FixedKeepAlive, HybridHistogram, Policy
from engine.timebase import MinuteGrid

__all__ = [
    "AlertTransition",
    "Command",
    "EngineStats",
    "FixedKeepAlive",
    "HybridHistogram",
    "Lease",
    "MinuteGrid",
    "Policy",
    "WarmupEngine",
    "command_id",
]

# The learned policy and its parts import river and numpy: loaded on first use, so that
# ``import engine`` stays light for the baselines and the event-time loop.
_LAZY = {
    "WarmcastPolicy": "engine.warmcast",
    "WarmcastConfig": "engine.warmcast",
    "AccuracyCounts": "engine.accuracy",
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
