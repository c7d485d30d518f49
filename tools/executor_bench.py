"""``warmcast executor-bench``: how fast the executor keeps up, against a real MLServer.

It starts the embedded broker (unless ``--bootstrap``), an MLServer in its own environment
(installed once under ``~/.cache/warmcast/``) serving ``--models`` models whose load takes
``--load-seconds``, and an executor, then prints two figures:

- **commands/s**: ``--commands`` warm commands (lease renewals) produced at once, divided
  by the time until the executor has read and booked them all;
- **start-to-ready delay**: ``--rounds`` rounds of one short lease per model, each
  starting ``--ahead`` seconds after it is sent; the delay from each lease's ``start`` to
  its model being ready on MLServer, p50 and p99 (0: ready in time; the first round has
  no measured load time yet to load ahead by).

Run it from a clone (the MLServer runtime ships in ``tests/mlserver_runtime``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from typing import Any

from tools.replay import positive_float, positive_int


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "executor-bench",
        help="benchmark the executor against a real MLServer (commands/s, start-to-ready)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--commands", type=positive_int, default=20_000)
    p.add_argument("--models", type=positive_int, default=8)
    p.add_argument("--load-seconds", type=positive_float, default=0.5)
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--ahead", type=positive_float, default=3.0, help="lease start after send")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="broker (default: embedded)")
    p.set_defaults(func=command)
    return p


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([3.0, 1.0, 2.0, 4.0], 50), percentile([3.0, 1.0, 2.0, 4.0], 99)
    (2.0, 4.0)
    """
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def command(args: argparse.Namespace) -> int:
    from tools.mlserver import MLServer, MLServerUnavailable

    broker = None
    bootstrap = args.bootstrap
    try:
        if not bootstrap:
            from streams.broker import EmbeddedBroker

            broker = EmbeddedBroker()
            broker.start()
            bootstrap = broker.bootstrap
        models = {f"bench-{i}": args.load_seconds for i in range(args.models)}
        try:
            server = MLServer(models)
        except MLServerUnavailable as exc:
            print(f"warmcast executor-bench: {exc}", file=sys.stderr)
            return 2
        with server:
            figures = asyncio.run(bench(bootstrap, server, args))
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"commands/s kept up with: {figures['commands_per_second']:,.0f} "
        f"({args.commands} commands booked in {figures['booking_seconds']:.2f}s)"
    )
    delays = figures["delays"]
    print(
        f"start-to-ready delay on MLServer ({len(delays)} loads of {args.load_seconds:g}s, "
        f"{args.models} models, {args.rounds} rounds): "
        f"p50 {percentile(delays, 50):.3f}s  p99 {percentile(delays, 99):.3f}s  "
        f"(after the first round: p50 {figures['later_p50']:.3f}s  "
        f"p99 {figures['later_p99']:.3f}s)"
    )
    print(f"mean load wall time {figures['mean_load']:.3f}s")
    return 0


async def bench(bootstrap: str, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    executor, topic = await _start_executor(bootstrap, server)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    models = list(server.models)
    try:
        await _wait(executor.synced.is_set, 120, "the executor to start")
        booking = await _booking_seconds(executor, producer, topic, models, args.commands)
        delays = await _ready_delays(executor, producer, topic, models, args.rounds, args.ahead)
        later = delays[len(models) :] or delays
        loads = executor.metrics.load_time
        count = loads._sum.get()
        mean = count / max(1, len(executor.ready_delays))
        return {
            "commands_per_second": args.commands / booking,
            "booking_seconds": booking,
            "delays": delays,
            "later_p50": statistics.median(later),
            "later_p99": percentile(later, 99),
            "mean_load": mean,
        }
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        await executor.stop()


async def _start_executor(bootstrap: str, server: Any) -> tuple[Any, str]:
    """An executor on ``server``'s MLServer and topics of its own, started; its warmup topic."""
    from streams.executor.adapters import adapter_for
    from streams.executor.service import Executor
    from streams.executor.settings import ExecutorSettings
    from streams.settings import WarmcastSettings

    ns = "bench" + uuid.uuid4().hex[:8]
    settings = WarmcastSettings(kafka_bootstrap_servers=bootstrap, topic_namespace=ns, app_id=ns)
    options = ExecutorSettings(resync_seconds=2.0, concurrency=8, web_port=0)
    executor = Executor(adapter_for(server.target), settings, options)
    await executor.start()
    return executor, settings.topic("warmup")


async def _booking_seconds(
    executor: Any, producer: Any, topic: str, models: list[str], commands: int
) -> float:
    """Seconds until the executor has read ``commands`` renewals of one far-away lease per
    model, produced all at once."""
    far = time.time() + 86_400
    values = [_lease(models[i % len(models)], far, far + 600) for i in range(commands)]
    started = time.perf_counter()
    futures = [await producer.send(topic, v, key=b"k%d" % i) for i, v in enumerate(values)]
    await asyncio.gather(*futures)
    await _wait(lambda: executor.commands_read >= commands, 600, "the commands read")
    return time.perf_counter() - started


async def _ready_delays(
    executor: Any, producer: Any, topic: str, models: list[str], rounds: int, ahead: float
) -> list[float]:
    """Start-to-ready delays of ``rounds`` rounds of one short lease per model, each starting
    ``ahead`` seconds after it is sent (0: ready in time)."""
    executor.ready_delays.clear()
    for _ in range(rounds):
        start = time.time() + ahead
        for model in models:
            await producer.send(topic, _lease(model, start, start + 1.0), key=model.encode())
        await producer.flush()
        end = start + 1.0
        await _wait(lambda end=end: time.time() > end, 60, "the round's leases to end")
        await _wait(lambda: not executor.loaded and not executor.in_flight, 60, "unloads")
    return [max(0.0, d) for d in executor.ready_delays]


def _lease(model: str, start: float, end: float) -> bytes:
    """A warm command for ``model`` from ``start`` to ``end``, as the warmup topic carries it."""
    from schemas.warmup import WarmupCommand

    return (
        WarmupCommand(
            command_id=uuid.uuid4().hex,
            model_id=model,
            action="warm",
            issued_at=time.time(),
            start=start,
            end=end,
            policy_version="bench",
        )
        .model_dump_json()
        .encode()
    )


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


__all__ = ["bench", "command", "percentile", "register"]
