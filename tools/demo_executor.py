"""``warmcast demo --executor mlserver``: the demo with its warmup commands carried out on
a real MLServer.

An MLServer (:mod:`tools.mlserver`) serves every model of the slice with the sleepy test
runtime (each load takes ``load_seconds``); a ``warmcast executor`` reads the demo's warmup
topic and loads and unloads them there. The demo replays event time faster than the wall
clock, so the executor judges leases by the newest ``issued_at`` it has read (the demo's
event time) rather than by the wall clock; every load still takes its real wall time,
which is measured and published as a metric event, as in production. After the demo's
table, the measured load times are reported (count, p50, p99).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import orjson

from schemas.metric import MetricEvent
from streams.executor.adapters import adapter_for
from streams.executor.service import Executor
from streams.executor.settings import ExecutorSettings
from streams.settings import WarmcastSettings

DEFAULT_LOAD_SECONDS = 0.5


class EventTimeExecutor(Executor):
    """An executor whose clock is the newest ``issued_at`` of the commands it has read;
    it keeps every measured load time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.event_time = 0.0
        self.load_times: list[float] = []
        super().__init__(*args, clock=lambda: self.event_time, **kwargs)

    def take(
        self, value: bytes | None, partition: int = 0, offset: int = -1, key: bytes | None = None
    ) -> bool:
        booked = super().take(value, partition, offset, key)
        if booked and value:
            issued = orjson.loads(value).get("issued_at")
            if isinstance(issued, (int, float)):
                self.event_time = max(self.event_time, float(issued))
        return booked

    async def _publish_metrics(self, events: list[MetricEvent]) -> None:
        self.load_times += [e.value for e in events if e.name == "load_time_seconds"]
        await super()._publish_metrics(events)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank.

    >>> percentile([3.0, 1.0, 2.0], 0.5), percentile([3.0, 1.0, 2.0], 0.99)
    (2.0, 3.0)
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


@dataclass(slots=True)
class ExecutorRun:
    """The executor's figures after the demo."""

    target: str
    load_times: list[float] = field(default_factory=list)
    unloads: int = 0
    failures: int = 0

    def text(self) -> str:
        n = len(self.load_times)
        if not n:
            return f"  executor on {self.target}: no loads done"
        return (
            f"  executor on {self.target}: measured load times of {n} loads done: "
            f"p50 {percentile(self.load_times, 0.5):.3f}s, "
            f"p99 {percentile(self.load_times, 0.99):.3f}s; "
            f"{self.unloads} unloads, {self.failures} failed loads"
        )


class ExecutorThread:
    """The executor on an event loop of its own, beside the demo's."""

    def __init__(self, executor: EventTimeExecutor) -> None:
        self.executor = executor
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.executor.start(), self.loop).result(timeout)

    def settle(self, commands: int, timeout: float = 120.0) -> None:
        """Wait until ``commands`` commands have been read and no load is in flight."""
        ex = self.executor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ex.commands_read >= commands and not ex.in_flight:
                return
            time.sleep(0.2)  # polling a condition, with a deadline

    def stop(self, timeout: float = 60.0) -> None:
        asyncio.run_coroutine_threadsafe(self.executor.stop(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


def run_demo_with_mlserver(
    options: Any,
    out: TextIO,
    run_demo: Callable[[Any, TextIO], Any],
    models: set[str],
    load_seconds: float | None = None,
) -> Any:
    """Run the demo (``run_demo(options, out)``) with an executor on a real MLServer that
    serves ``models``; print the measured load times after its table. Returns the demo's
    result."""
    from streams.broker import start_broker
    from tools.mlserver import MLServer

    seconds = load_seconds or DEFAULT_LOAD_SECONDS
    options.out.mkdir(parents=True, exist_ok=True)
    broker = None
    if options.bootstrap is None:
        broker = start_broker(options.broker, log_path=options.out.resolve() / "broker.log")
    try:
        bootstrap = options.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        namespace = options.namespace or f"demo-{uuid.uuid4().hex[:8]}"
        options = replace(options, bootstrap=bootstrap, namespace=namespace)
        print(f"  mlserver starting: {len(models)} models, each loads in {seconds:g}s",
              file=out, flush=True)  # fmt: skip
        with MLServer(dict.fromkeys(models, seconds)) as server:
            result, figures = _with_executor(options, out, server.target, run_demo)
            print(figures.text(), file=out, flush=True)
            return result
    finally:
        if broker is not None:
            broker.stop()


def _with_executor(
    options: Any, out: TextIO, target: str, run_demo: Any
) -> tuple[Any, ExecutorRun]:
    settings = WarmcastSettings(
        kafka_bootstrap_servers=options.bootstrap,
        topic_namespace=options.namespace,
        app_id=f"{options.namespace}-executor",
        partitions=options.partitions,
    )
    executor = EventTimeExecutor(
        adapter_for(target), settings, ExecutorSettings(web_port=0, resync_seconds=2.0)
    )
    runner = ExecutorThread(executor)
    runner.start()
    try:
        result = run_demo(options, out)
        runner.settle(result.report.commands)
    finally:
        runner.stop()
    m = executor.metrics
    figures = ExecutorRun(
        target,
        list(executor.load_times),
        int(m.unloads._value.get()),
        int(m.failures.labels(call="load")._value.get()),
    )
    return result, figures


__all__ = ["EventTimeExecutor", "ExecutorRun", "percentile", "run_demo_with_mlserver"]
