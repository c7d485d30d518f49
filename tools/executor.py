"""``warmcast executor --target URL``: carry out the warmup leases on a model server.

It reads the warmup topic in its own consumer group (run one per server, or several in
one group to share the topic's partitions), loads each model so that it is ready when its
lease starts, unloads it when no lease covers the time, and publishes every load's wall
time as a ``load_time_seconds`` metric event. ``/metrics`` (Prometheus) and ``/status``
(JSON) are served on ``--web-port``. Targets: ``kserve-v2://host:port`` (MLServer,
Triton, KServe), ``ollama://host:port``, or any adapter of the
``warmcast.executor_adapters`` entry point group. Settings: ``WARMCAST_EXECUTOR_<NAME>``
(flags win), the broker, topics and control key as for ``warmcast run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from tools.replay import add_kafka_flags, settings_for


def register(subparsers: Any) -> argparse.ArgumentParser:
    from streams.executor.settings import ExecutorSettings

    p: argparse.ArgumentParser = subparsers.add_parser(
        "executor",
        help="carry out the warmup leases on a model server (kserve-v2://, ollama://)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--target", metavar="URL", help="model server [env: WARMCAST_EXECUTOR_TARGET]")
    for name, field in ExecutorSettings.model_fields.items():
        if name == "target":
            continue
        env = f"WARMCAST_EXECUTOR_{name.upper()}"
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"executor_{name}",
            metavar="VALUE",
            default=None,
            help=f"{field.description or name} [env: {env}; default: {field.default}]",
        )
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    from streams.executor.adapters import AdapterError, adapter_for
    from streams.executor.settings import ExecutorSettings

    overrides = {
        name: getattr(args, f"executor_{name}")
        for name in ExecutorSettings.model_fields
        if getattr(args, f"executor_{name}", None) is not None
    }
    if args.target:
        overrides["target"] = args.target
    options = ExecutorSettings(**overrides)
    if not options.target:
        print(
            "warmcast executor: --target URL is needed (e.g. kserve-v2://host:8080)",
            file=sys.stderr,
        )
        return 2
    settings = settings_for(args.bootstrap, args.namespace)
    if not settings.kafka_bootstrap_servers:
        print(
            "warmcast executor: no broker: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap",
            file=sys.stderr,
        )
        return 2
    try:
        adapter = adapter_for(options.target)
    except AdapterError as exc:
        print(f"warmcast executor: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run(adapter, settings, options))


async def run(adapter: Any, settings: Any, options: Any) -> int:
    from streams.executor.service import Executor, serve_web

    executor = Executor(adapter, settings, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    await executor.start()
    try:
        if options.web_port:
            runner = await serve_web(executor, options.web_host, options.web_port)
        print(
            f"executor on {options.target}: /metrics and /status on "
            f"http://{options.web_host}:{options.web_port}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        await executor.stop()
    return 0


__all__ = ["command", "register", "run"]
