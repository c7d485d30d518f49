"""One partition's usage step: events to its engine and to the rolling health of the
served models they concern, in one pass.

This is the loop every usage event goes through in the worker; it is compiled with the
rest of the hot path (:mod:`engine.native`). The worker keeps what is done once per batch
(loading health, metrics, publishing) around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from engine.core import WarmupEngine
from engine.health import ModelHealth
from engine.lease import Command


class Usage(Protocol):
    """What the step reads of a usage event (``schemas.usage.UsageEvent`` has all of it)."""

    @property
    def model_id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def cold_start(self) -> bool | None: ...
    @property
    def error(self) -> bool | None: ...
    @property
    def latency(self) -> float | None: ...


class UsageTally:
    """What a step saw: events, requests, cold starts, failed requests, and the seconds
    spent in the engine (steps add up in one tally; the engine keeps the event time)."""

    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.cold_starts = 0
        self.errors = 0
        self.engine_seconds = 0.0


def feed_usage(
    engine: WarmupEngine,
    events: Iterable[Usage],
    health_of: Callable[[str], ModelHealth],
    touched: dict[str, ModelHealth],
    commands: list[Command],
    tally: UsageTally,
    *,
    window: float,
    windows: tuple[float, ...],
    on_latency: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    offsets: Sequence[int] | None = None,
) -> None:
    """Feed ``events`` to ``engine``, and each to the health of its model; append the
    commands they cause to ``commands``, and let the health of each model a command is for
    follow it.

    A model's health is taken from ``touched`` or, the first time, from ``health_of``
    (which adds it to ``touched``), before the engine moves its lease. ``window`` is the
    decay time constant of the rates, ``windows`` the rolling windows; ``on_latency`` hears
    every request latency.

    ``offsets``, when given, holds the input offset of each event's message: an event of
    a message at or below the offset its model's health has counted to (read again after
    a restart or a rebalance) still goes to the engine, but is not counted in the health
    again, nor are the commands it causes; the health then counts to the newest offset.

    >>> from types import SimpleNamespace as Event
    >>> from engine.policies import FixedKeepAlive
    >>> engine, touched, commands, tally = WarmupEngine(FixedKeepAlive(10)), {}, [], UsageTally()
    >>> def health_of(model_id):
    ...     touched[model_id] = ModelHealth(model_id)
    ...     return touched[model_id]
    >>> events = [Event(model_id="m", ts=125.0, count=3, cold_start=True, error=None,
    ...                 latency=2.5)]
    >>> feed_usage(engine, events, health_of, touched, commands, tally,
    ...            window=300.0, windows=(60.0,))
    >>> [(c.action, c.start, c.end) for c in commands], tally.requests, tally.cold_starts
    ([('warm', 180.0, 780.0)], 3, 1)
    >>> touched["m"].lease, touched["m"].requests_total
    ([180.0, 780.0, 0], 3)

    The same message (offset 7) read again is not counted twice; a newer one is:

    >>> touched["m"].offset = 7
    >>> again = {"m": touched["m"]}
    >>> feed_usage(engine, events * 2, health_of, again, [], UsageTally(),
    ...            window=300.0, windows=(60.0,), offsets=[7, 8])
    >>> again["m"].requests_total, again["m"].offset
    (6, 8)
    """
    observe = engine.observe
    #: per model, the offset its health had counted to before these events
    counted_to: dict[str, int] = {}
    offset = -1
    i = -1
    for ev in events:
        i += 1
        model_id = ev.model_id
        health = touched.get(model_id)
        if health is None:
            health = health_of(model_id)
        ts = ev.ts
        count = ev.count
        t0 = clock()
        caused = observe(model_id, ts, count)
        tally.engine_seconds += clock() - t0
        cold = 1 if ev.cold_start else 0
        errors = count if ev.error else 0
        latency = ev.latency
        fresh = True
        if offsets is not None:
            offset = offsets[i]
            floor = counted_to.get(model_id)
            if floor is None:
                floor = counted_to[model_id] = health.offset
            fresh = offset > floor
            if fresh and offset > health.offset:
                health.offset = offset
        if fresh:
            health.update(ts, count, cold, latency, window, errors=errors, windows=windows)
        if caused:
            for command in caused:
                owner = touched.get(command.model_id)
                if owner is None:
                    owner = health_of(command.model_id)
                if offsets is not None:
                    floor = counted_to.get(command.model_id)
                    if floor is None:
                        floor = counted_to[command.model_id] = owner.offset
                    if offset <= floor:
                        continue
                    if offset > owner.offset:
                        owner.offset = offset
                owner.on_command(
                    command.action, command.start, command.end, command.issued_at, windows
                )
            commands.extend(caused)
        if latency is not None and on_latency is not None:
            on_latency(latency)
        tally.events += 1
        tally.requests += count
        tally.cold_starts += cold
        tally.errors += errors
