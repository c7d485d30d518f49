"""The warmup engine: usage in, leases kept, commands out, on event time.

One engine serves one partition's served models. It counts requests per model and minute,
asks its policy for a lease at each model's first request in a minute, closes minutes as
event time moves past them, and turns every lease that changes into a :class:`Command`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from engine.lease import Command, Lease, command_id
from engine.policies import Policy
from engine.timebase import MinuteGrid


@dataclass(slots=True)
class EngineStats:
    """Counts an engine keeps; exported as Prometheus counters by the worker."""

    events: int = 0
    requests: int = 0
    late_events: int = 0
    minutes_closed: int = 0
    commands: int = 0
    warm_commands: int = 0
    release_commands: int = 0
    evicted_models: int = 0
    metric_events: int = 0
    capped_models: int = 0  # least recently seen models evicted to stay under max_models
    suppressed_warm: int = 0  # warm leases not issued while the engine is paused

    def __reduce__(self) -> tuple[type[EngineStats], tuple[int, ...]]:
        # by its fields: the same in the pure-Python and the compiled engine (checkpoints)
        return EngineStats, tuple(getattr(self, f.name) for f in fields(self))


class WarmupEngine:
    """Drives a :class:`~engine.policies.Policy` on event time.

    ``observe`` takes one usage event (``count`` requests for ``model_id`` at ``ts``) and
    returns the commands it caused. An event older than the open minute is late: it counts
    in the open minute. ``advance`` moves event time forward with no event (end of a
    backtest, or an idle partition in live mode).

    >>> from engine.policies import FixedKeepAlive
    >>> engine = WarmupEngine(FixedKeepAlive(10))
    >>> [(c.action, c.start, c.end) for c in engine.observe("m", 125.0)]
    [('warm', 180.0, 780.0)]
    >>> engine.observe("m", 150.0)  # same minute, same lease: nothing to say
    []

    A paused engine keeps learning but issues no warm lease (an operator's emergency
    stop); ``release_all`` lets go of every model it keeps warm:

    >>> engine.paused = True
    >>> engine.observe("n", 190.0)
    []
    >>> [(c.model_id, c.action, c.start) for c in engine.release_all()]
    [('m', 'release', 180.0)]

    At most ``max_models`` served models are tracked; the least recently seen go first:

    >>> engine = WarmupEngine(FixedKeepAlive(10), max_models=2)
    >>> for model_id in ("a", "b", "c"):
    ...     _ = engine.observe(model_id, 60.0)
    >>> sorted(engine.last_seen), engine.stats.capped_models
    (['b', 'c'], 1)
    """

    def __init__(
        self,
        policy: Policy,
        *,
        grid: MinuteGrid | None = None,
        idle_ttl_minutes: int = 7 * 24 * 60,
        max_models: int = 10_000_000,
        report_evictions: bool = False,
    ) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.policy = policy
        self.grid = grid or MinuteGrid()
        self.idle_ttl_minutes = idle_ttl_minutes
        self.max_models = max_models
        if report_evictions:
            self._evicted = deque(maxlen=100_000)
        self.paused = False  # an emergency stop: warm leases are withheld
        self.stats = EngineStats()
        self.leases: dict[str, Lease] = {}
        self.last_seen: dict[str, int] = {}
        self._open: int | None = None  # the minute requests are being counted in
        self._counts: dict[str, int] = {}
        self._next_sweep = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # the compiled engine is built by its constructor, then given its state
        return WarmupEngine, (self.policy,), self.__getstate__()

    @property
    def open_minute(self) -> int | None:
        return self._open

    @property
    def watermark(self) -> float | None:
        """Start of the open minute, in event time: everything before it is decided."""
        return None if self._open is None else self.grid.start_of(self._open)

    def observe(self, model_id: str, ts: float, count: int = 1) -> list[Command]:
        out: list[Command] = []
        minute = self.grid.minute_of(ts)
        if self._open is None:
            self._open = minute
            self._next_sweep = minute + 60
        elif minute > self._open:
            self._close_until(minute, out)
        elif minute < self._open:
            self.stats.late_events += 1
            minute = self._open
        self.stats.events += 1
        self.stats.requests += count
        seen = self._counts.get(model_id)
        if seen is None:
            self._counts[model_id] = count
            last_seen = self.last_seen
            if last_seen.pop(model_id, None) is None and len(last_seen) >= self.max_models:
                self._evict_least_recent()
            last_seen[model_id] = minute  # insertion order is recency order
            lease = self.policy.on_request(model_id, minute)
            if lease is not None:
                self._apply(model_id, lease, minute, out)
        else:
            self._counts[model_id] = seen + count
        return out

    def advance(self, ts: float) -> list[Command]:
        """Close every minute that ends at or before ``ts``."""
        out: list[Command] = []
        minute = self.grid.minute_of(ts)
        if self._open is not None and minute > self._open:
            self._close_until(minute, out)
        return out

    def observe_metric(self, model_id: str, name: str, value: float, ts: float) -> None:
        """Hand a metric event (load time, latency, memory) to the policy, if it learns
        them (``policy.observe_metric(model_id, name, value)``)."""
        self.stats.metric_events += 1
        learn = getattr(self.policy, "observe_metric", None)
        if learn is not None:
            learn(model_id, name, value)

    def lease_of(self, model_id: str) -> Lease | None:
        return self.leases.get(model_id)

    def release_all(self, reason: str = "released by operator") -> list[Command]:
        """Release every model this engine keeps warm, as of the open minute."""
        out: list[Command] = []
        if self._open is None:
            return out
        minute = self._open
        for model_id, lease in list(self.leases.items()):
            if lease.action == "warm":
                self._apply(model_id, Lease.release(minute, reason), minute, out)
        return out

    def _close_until(self, minute: int, out: list[Command]) -> None:
        assert self._open is not None
        closed = self._open
        counts, self._counts = self._counts, {}
        self._emit(self.policy.on_minute_closed(closed, counts), closed, out)
        self.stats.minutes_closed += 1
        while (due := self.policy.next_review()) is not None and due < minute:
            closed = max(due, closed + 1)
            self._emit(self.policy.on_minute_closed(closed, {}), closed, out)
        self._open = minute
        if minute >= self._next_sweep:
            self._evict_idle(minute)
            self._next_sweep = minute + 60

    def _emit(self, decided: Iterable[tuple[str, Lease]], minute: int, out: list[Command]) -> None:
        for model_id, lease in decided:
            self._apply(model_id, lease, minute, out)

    def _apply(self, model_id: str, lease: Lease, minute: int, out: list[Command]) -> None:
        if self.paused and lease.action == "warm":
            self.stats.suppressed_warm += 1
            return
        current = self.leases.get(model_id)
        if current == lease or (
            lease.action == "release" and (current is None or current.action == "release")
        ):
            return
        self.leases[model_id] = lease
        out.append(self._command(model_id, lease, minute))

    def _command(self, model_id: str, lease: Lease, minute: int) -> Command:
        start_of = self.grid.start_of
        start, end = start_of(lease.start), start_of(lease.end)
        action, version = lease.action, self.policy.version
        stats = self.stats
        stats.commands += 1
        if action == "warm":
            stats.warm_commands += 1
        else:
            stats.release_commands += 1
        # one is made for nearly every lease: built as the tuple it is, without the
        # named tuple's Python-level constructor
        return tuple.__new__(
            Command,
            (
                command_id(model_id, action, start, end, version),
                model_id,
                action,
                start_of(minute),  # issued_at
                start,
                end,
                lease.priority,
                lease.probability,
                lease.confidence,
                lease.reason,
                version,
            ),
        )

    def _holds(self, model_id: str, minute: int) -> bool:
        """Whether a model has a warm lease that is not over by ``minute``."""
        lease = self.leases.get(model_id)
        return lease is not None and lease.action == "warm" and lease.end > minute

    #: Models evicted and not yet drained (with ``report_evictions`` only).
    _evicted: deque[str] | None = None

    def drain_evicted(self) -> list[str]:
        """Models evicted since the last call (``report_evictions=True``), so that state
        kept beside the engine (the worker's rolling health) can follow."""
        if not self._evicted:
            return []
        gone = list(self._evicted)
        self._evicted.clear()
        return gone

    def _evict_least_recent(self) -> None:
        model_id = next(iter(self.last_seen))
        if self._evicted is not None:
            self._evicted.append(model_id)
        del self.last_seen[model_id]
        self.leases.pop(model_id, None)
        self._counts.pop(model_id, None)
        self.policy.forget(model_id)
        self.stats.capped_models += 1

    def _evict_idle(self, minute: int) -> None:
        horizon = minute - self.idle_ttl_minutes
        stale = [
            m for m, seen in self.last_seen.items() if seen < horizon and not self._holds(m, minute)
        ]
        if self._evicted is not None:
            self._evicted.extend(stale)
        for model_id in stale:
            del self.last_seen[model_id]
            self.leases.pop(model_id, None)
            self.policy.forget(model_id)
        self.stats.evicted_models += len(stale)
