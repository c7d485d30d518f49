"""Crash loops: an agent that crashes again and again while its framework restarts it.

Faust restarts an agent whose loop raises; a worker whose agent raises at every message
would go on restarting it, looking alive. :class:`CrashLoops` counts each agent's crashes
and says which have crashed ``threshold`` times or more within the last ``window``
seconds: the worker is then not ready, and an alert fires until the agent has gone a
whole window without a crash.
"""

from __future__ import annotations

from engine.alerting import RateWindow


class CrashLoops:
    """Crashes of each agent, all told and within a sliding window.

    >>> loops = CrashLoops(threshold=3, window=60.0)
    >>> for ts in (0.0, 10.0, 20.0):
    ...     loops.note("usage", ts)
    >>> loops.looping(25.0), loops.recent(25.0), loops.total
    ({'usage': 3}, {'usage': 3}, {'usage': 3})
    >>> loops.looping(65.0), loops.recent(65.0), loops.recent(81.0)
    ({}, {'usage': 2}, {})
    """

    def __init__(self, threshold: int = 3, window: float = 300.0) -> None:
        if threshold < 1:
            raise ValueError("a crash loop takes at least one crash")
        self.threshold = threshold
        self.window = window
        self.total: dict[str, int] = {}
        self._windows: dict[str, RateWindow] = {}

    def note(self, agent: str, ts: float) -> None:
        """``agent`` crashed at ``ts``."""
        self.total[agent] = self.total.get(agent, 0) + 1
        window = self._windows.get(agent)
        if window is None:
            window = self._windows[agent] = RateWindow(self.window)
        window.add(ts)

    def recent(self, now: float) -> dict[str, int]:
        """Crashes of each agent within the window ending at ``now`` (none: not listed)."""
        counts = {agent: w.count(now) for agent, w in self._windows.items()}
        return {agent: n for agent, n in counts.items() if n}

    def looping(self, now: float) -> dict[str, int]:
        """The agents crash-looping at ``now``, with their crashes in the window."""
        return {a: n for a, n in self.recent(now).items() if n >= self.threshold}


__all__ = ["CrashLoops"]
