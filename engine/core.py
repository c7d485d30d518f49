"""The warmup engine: usage in, leases kept, commands out, on event time.

One engine serves one partition's served models. It counts requests per model and minute,
asks its policy for a lease at each model's first request in a minute, closes minutes as
event time moves past them, and turns every lease that changes into a :class:`Command`.

Event time is robust to one outlier: an event that would move it more than
``tolerance_minutes`` ahead at once is *held* until the next event says whether time really
moved (see :class:`WarmupEngine`). On input that is never out of order by more than the
tolerance this changes nothing: the policy sees the same calls in the same order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from engine.budget import SIZE_METRICS, Budget
from engine.capabilities import ForgetsMetrics, LearnsMetrics, PredictsLoadTime
from engine.lease import Command, Lease, command_id
from engine.maintenance import MaintenanceGate
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
    future_events: int = 0  # held events the next event contradicted: counted in the open minute
    untracked_metric_models: int = 0  # metric state let go of models never seen in usage
    maintenance_held: int = 0  # warm leases held back by a maintenance window
    maintenance_started: int = 0  # held warm leases started later (ahead of a window's end)

    def __reduce__(self) -> tuple[type[EngineStats], tuple[int, ...]]:
        # by its fields: the same in the pure-Python and the compiled engine (checkpoints)
        return EngineStats, tuple(getattr(self, f.name) for f in fields(self))


#: What a checkpoint of an engine holds, by attribute.
_ENGINE_STATE = (
    "policy",
    "grid",
    "idle_ttl_minutes",
    "max_models",
    "tolerance_minutes",
    "max_untracked_metric_models",
    "_evicted",
    "paused",
    "stats",
    "leases",
    "last_seen",
    "_open",
    "_counts",
    "_next_sweep",
    "newest",
    "_held",
    "_untracked",
    "budget",
)


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

    No single event moves event time more than ``tolerance_minutes`` ahead. An event further
    ahead is held; the next event decides. If it is no more than the tolerance before the
    held one (and not a repeat of it: same model, same minute), time did move: the held
    event is taken at its own time, then the new one. Otherwise the held event was an
    outlier: it counts as a request in the open minute, as a late event does, and in
    ``stats.future_events``. :meth:`advance` (the end of a backtest, the wall clock of a live
    partition) and :meth:`confirm` take a held event at its own time too.

    >>> engine = WarmupEngine(FixedKeepAlive(10))
    >>> _ = engine.observe("a", 60.0)
    >>> engine.observe("b", 60.0 * 59), engine.held_time  # an hour ahead: held
    ([], 3540.0)
    >>> [(c.model_id, c.start) for c in engine.observe("c", 120.0)]  # not confirmed
    [('b', 120.0), ('c', 180.0)]
    >>> engine.stats.future_events, engine.open_minute, engine.held_time
    (1, 2, None)
    >>> engine.observe("d", 60.0 * 30), engine.held_time  # a gap in the traffic ...
    ([], 1800.0)
    >>> [(c.model_id, c.start) for c in engine.observe("e", 60.0 * 31)]  # ... confirmed
    [('d', 1860.0), ('e', 1920.0)]
    """

    def __init__(
        self,
        policy: Policy,
        *,
        grid: MinuteGrid | None = None,
        idle_ttl_minutes: int = 7 * 24 * 60,
        max_models: int = 10_000_000,
        report_evictions: bool = False,
        tolerance_minutes: int = 5,
        max_untracked_metric_models: int = 1000,
        budget: Budget | None = None,
    ) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        if tolerance_minutes < 0:
            raise ValueError("tolerance_minutes must not be negative")
        self.policy = policy
        self.grid = grid or MinuteGrid()
        self.idle_ttl_minutes = idle_ttl_minutes
        self.max_models = max_models
        self.tolerance_minutes = tolerance_minutes
        self.max_untracked_metric_models = max(max_untracked_metric_models, 1)
        if report_evictions:
            self._evicted = deque(maxlen=100_000)
        self.paused = False  # an emergency stop: warm leases are withheld
        #: maintenance windows: warm leases held back or capped (not checkpointed: the
        #: worker gives every engine its schedule)
        self.maintenance: MaintenanceGate | None = None
        self.stats = EngineStats()
        self.leases: dict[str, Lease] = {}
        self.last_seen: dict[str, int] = {}
        self._open: int | None = None  # the minute requests are being counted in
        self._counts: dict[str, int] = {}
        self._next_sweep = 0
        #: the newest event time taken at its own time (held events and outliers aside)
        self.newest: float = 0.0
        #: an event held until the next one confirms it: (model, minute, newest ts of it
        #: and its repeats, requests, events)
        self._held: tuple[str, int, float, int, int] | None = None
        #: models with metric state that usage has not shown yet, least recent first
        self._untracked: dict[str, None] = {}
        #: a hard memory budget every lease passes through (:mod:`engine.budget`)
        self.budget = budget

    def __reduce__(self) -> tuple[Any, ...]:
        # the compiled engine is built by its constructor, then given its state
        return WarmupEngine, (self.policy,), self.__getstate__()

    def __getstate__(self) -> dict[str, object]:
        # by name: the same in the pure-Python and the compiled engine (checkpoints)
        return {name: getattr(self, name) for name in _ENGINE_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a state saved without the held event and the untracked models has none held
        self.tolerance_minutes = 5
        self.max_untracked_metric_models = 1000
        self.newest = 0.0
        self._held = None
        self._untracked = {}
        self.budget = None
        self.maintenance = None
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def open_minute(self) -> int | None:
        return self._open

    @property
    def watermark(self) -> float | None:
        """Start of the open minute, in event time: everything before it is decided."""
        return None if self._open is None else self.grid.start_of(self._open)

    @property
    def held_time(self) -> float | None:
        """Event time of the event held for confirmation, if one is."""
        return None if self._held is None else self._held[2]

    def observe(self, model_id: str, ts: float, count: int = 1) -> list[Command]:
        out: list[Command] = []
        minute = self.grid.minute_of(ts)
        held = self._held
        if held is not None:
            if held[0] == model_id and held[1] == minute:  # a repeat: held with it
                self._held = (model_id, minute, max(held[2], ts), held[3] + count, held[4] + 1)
                return out
            self._held = None
            self._take_held(held, minute >= held[1] - self.tolerance_minutes, out)
        opened = self._open
        if opened is not None and minute - opened > self.tolerance_minutes:
            self._held = (model_id, minute, ts, count, 1)
            return out
        if ts > self.newest:
            self.newest = ts
        self._count(model_id, minute, count, 1, out)
        return out

    def confirm(self) -> list[Command]:
        """Take a held event at its own time (the wall clock has reached it)."""
        out: list[Command] = []
        held = self._held
        if held is not None:
            self._held = None
            self._take_held(held, True, out)
        return out

    def _take_held(
        self, held: tuple[str, int, float, int, int], confirmed: bool, out: list[Command]
    ) -> None:
        model_id, minute, ts, count, events = held
        if confirmed:
            if ts > self.newest:
                self.newest = ts
        else:
            assert self._open is not None
            minute = self._open
            self.stats.future_events += events
        self._count(model_id, minute, count, events, out)

    def _count(
        self, model_id: str, minute: int, count: int, events: int, out: list[Command]
    ) -> None:
        """Count ``events`` events (``count`` requests) of a model in ``minute``."""
        if self._open is None:
            self._open = minute
            self._next_sweep = minute + 60
        elif minute > self._open:
            self._close_until(minute, out)
        elif minute < self._open:
            self.stats.late_events += events
            minute = self._open
        self.stats.events += events
        self.stats.requests += count
        seen = self._counts.get(model_id)
        if seen is None:
            self._counts[model_id] = count
            last_seen = self.last_seen
            if last_seen.pop(model_id, None) is None and len(last_seen) >= self.max_models:
                self._evict_least_recent()
            last_seen[model_id] = minute  # insertion order is recency order
            budget = self.budget
            if budget is not None:
                budget.touch(model_id, minute)
            lease = self.policy.on_request(model_id, minute)
            if lease is not None or (budget is not None and budget.keep_idle):
                self._apply(model_id, lease, minute, out)
        else:
            self._counts[model_id] = seen + count

    def advance(self, ts: float) -> list[Command]:
        """Close every minute that ends at or before ``ts``; a held event no more than the
        tolerance ahead of ``ts`` is taken at its own time first."""
        out: list[Command] = []
        minute = self.grid.minute_of(ts)
        held = self._held
        if held is not None and held[1] - minute <= self.tolerance_minutes:
            self._held = None
            self._take_held(held, True, out)
        if self._open is not None and minute > self._open:
            self._close_until(minute, out)
        return out

    def observe_metric(self, model_id: str, name: str, value: float, ts: float) -> str | None:
        """Hand a metric event (load time, latency, memory) to the policy, if it learns
        them (``policy.observe_metric(model_id, name, value)``).

        Metric state is for the served models this engine tracks from usage, and for at
        most ``max_untracked_metric_models`` others (a load time often comes just before
        the request that caused the load); past that, the one measured least recently is
        forgotten (``policy.forget_metrics``, else ``policy.forget``) and returned, so that
        metric state kept beside the engine can follow.
        """
        self.stats.metric_events += 1
        dropped: str | None = None
        if model_id not in self.last_seen:
            dropped = self._note_untracked(model_id)
        policy = self.policy
        if isinstance(policy, LearnsMetrics):
            policy.observe_metric(model_id, name, value)
        budget = self.budget
        if budget is not None:
            if name in SIZE_METRICS:
                budget.set_size(model_id, value * SIZE_METRICS[name])
            elif name == "load_time_seconds":
                budget.set_cost(model_id, value)
        return dropped

    def _note_untracked(self, model_id: str) -> str | None:
        untracked = self._untracked
        if model_id in untracked:
            del untracked[model_id]
            untracked[model_id] = None  # now the most recent
            return None
        dropped: str | None = None
        while len(untracked) >= self.max_untracked_metric_models:
            oldest = next(iter(untracked))
            del untracked[oldest]
            if oldest not in self.last_seen:  # tracked since: its state stays
                policy = self.policy
                if isinstance(policy, ForgetsMetrics):
                    policy.forget_metrics(oldest)
                else:
                    policy.forget(oldest)
                self.stats.untracked_metric_models += 1
                dropped = oldest
                break
        untracked[model_id] = None
        return dropped

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
                self._set(model_id, Lease.release(minute, reason), minute, out)
        if self.budget is not None:
            self.budget.clear()
        if self.maintenance is not None:
            self.maintenance.held.clear()
        return out

    def _close_until(self, minute: int, out: list[Command]) -> None:
        assert self._open is not None
        closed = self._open
        counts, self._counts = self._counts, {}
        self._emit(self.policy.on_minute_closed(closed, counts), closed, out)
        self.stats.minutes_closed += 1
        while (due := self._next_review()) is not None and due < minute:
            closed = max(due, closed + 1)
            self._emit(self.policy.on_minute_closed(closed, {}), closed, out)
        self._open = minute
        gate = self.maintenance
        if gate is not None and gate.held:
            while (due := gate.next_due(closed, self._load_seconds)) is not None:
                if due > minute:
                    break
                self._start_held(due, out)
                closed = due
        if minute >= self._next_sweep:
            self._evict_idle(minute)
            self._next_sweep = minute + 60

    def _next_review(self) -> int | None:
        due = self.policy.next_review()
        budget = self.budget
        if budget is not None:
            held = budget.next_review()
            if held is not None and (due is None or held < due):
                return held
        return due

    def _emit(self, decided: Iterable[tuple[str, Lease]], minute: int, out: list[Command]) -> None:
        for model_id, lease in decided:
            self._apply(model_id, lease, minute, out)
        budget = self.budget
        if budget is not None:
            for model_id, lease in budget.settle(minute):
                self._set(model_id, lease, minute, out)

    def _apply(self, model_id: str, lease: Lease | None, minute: int, out: list[Command]) -> None:
        """Issue ``lease`` (``None``: the model was just requested, its lease kept) through
        the maintenance windows and the budget, if there are any."""
        if self.paused and (lease is None or lease.action == "warm"):
            if lease is not None:
                self.stats.suppressed_warm += 1
            return
        gate = self.maintenance
        if gate is not None and lease is not None:
            if lease.action != "warm":
                gate.drop(model_id)
            elif (current := self.leases.get(model_id)) != lease and not gate.admit(
                model_id, lease, minute, self._load_seconds, current
            ):
                self.stats.maintenance_held += 1
                return
        self._budgeted(model_id, lease, minute, out)

    def _budgeted(
        self, model_id: str, lease: Lease | None, minute: int, out: list[Command]
    ) -> None:
        """Issue ``lease`` through the budget, if there is one."""
        budget = self.budget
        if budget is not None:
            lease, evicted = budget.admit(model_id, lease, minute)
            for victim, release in evicted:
                self._set(victim, release, minute, out)
            if lease is None:
                return
        elif lease is None:
            return
        self._set(model_id, lease, minute, out)

    def _set(self, model_id: str, lease: Lease, minute: int, out: list[Command]) -> None:
        current = self.leases.get(model_id)
        if current == lease or (
            lease.action == "release" and (current is None or current.action == "release")
        ):
            return
        self.leases[model_id] = lease
        out.append(self._command(model_id, lease, minute))

    def _load_seconds(self, model_id: str) -> float | None:
        """The policy's predicted load time of a model, if it predicts one."""
        policy = self.policy
        if isinstance(policy, PredictsLoadTime):
            return policy.predicted_load_seconds(model_id)
        return None

    def _start_held(self, minute: int, out: list[Command]) -> None:
        """Start the warm leases a maintenance window held that may start at ``minute``."""
        gate = self.maintenance
        assert gate is not None
        if self.paused:
            return
        for model_id, lease in gate.due(minute, self._load_seconds, self.leases.get):
            if model_id in self.last_seen:
                self.stats.maintenance_started += 1
                self._budgeted(model_id, lease, minute, out)

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
        if self.maintenance is not None:
            self.maintenance.drop(model_id)
        self._counts.pop(model_id, None)
        self.policy.forget(model_id)
        if self.budget is not None:
            self.budget.forget(model_id)
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
            if self.maintenance is not None:
                self.maintenance.drop(model_id)
            self.policy.forget(model_id)
            if self.budget is not None:
                self.budget.forget(model_id)
        self.stats.evicted_models += len(stale)
