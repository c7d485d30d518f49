"""The bench's latency stage: event -> command latency at a fixed offered load through
the broker alone, through relays that send each event straight on (a bare aiokafka one
and a Faust agent), then through warmcast's worker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.broker import terminate
from streams.settings import WarmcastSettings
from tools.bench_throughput import FAUST_AGENT, agent_env
from tools.bench_worker import (
    REPO,
    BenchConfig,
    WorkerProcess,
    latency,
)

#: The relays timed like the worker, on topics of their own: the floor of event-to-command
#: latency in this stack, with nothing done between an event and what is sent for it.
RELAYS: dict[str, tuple[str, list[str]]] = {
    "bare_relay": ("bare aiokafka relay", ["-m", "tools.bench_relay"]),
    "faust_relay": ("Faust agent relaying", FAUST_AGENT),
}


def relay_latency(
    bootstrap: str, settings: WarmcastSettings, config: BenchConfig, workdir: Path, argv: list[str]
) -> dict[str, Any]:
    """:func:`latency` through a relay process that sends each usage message straight on
    to the warmup topic (``python argv``: :mod:`tools.bench_relay` or
    :mod:`tools.bench_noop`), with the worker's fetch wait."""
    env = agent_env(
        bootstrap,
        settings.topic("usage"),
        workdir,
        settings.fetch_max_wait_ms,
        BENCH_SINK=settings.topic("warmup"),
    )
    log_path = Path(env["BENCH_DATADIR"] + ".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-P", *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        return asyncio.run(latency(bootstrap, settings, config))
    except RuntimeError as exc:
        tail = log_path.read_bytes()[-3000:].decode(errors="replace")
        raise RuntimeError(f"{exc}; the relay's log ends with:\n{tail}") from exc
    finally:
        terminate(process, timeout=30)


def latency_stages(
    config: BenchConfig,
    bootstrap: str,
    workdir: Path,
    say: Callable[[str, str | None], None],
    namespace: Callable[[str], WarmcastSettings],
    ended: str | None,
) -> tuple[dict[str, Any], str]:
    """The latency table: the broker trip, the relays, then the worker; and the last stage
    ended."""
    # The latency stages run back to back, each on new topics: the stack's floors just
    # before the worker, so that a slow spell of the machine shows in all of them, and
    # none on the topics the throughput stages filled (the embedded broker's fetches slow
    # down as a partition fills up).
    say(f"one trip through the broker at {config.latency_rate} events/s", ended)
    hop = asyncio.run(latency(bootstrap, namespace("hop"), config, read="usage"))
    relayed: dict[str, dict[str, Any]] = {}
    ended = "broker_hop"
    for kind, (name, argv) in RELAYS.items():
        say(f"the same through a {name}", ended)
        relayed[kind] = relay_latency(
            bootstrap, namespace(kind.replace("_", "-")), config, workdir, argv
        )
        ended = kind
    say(f"warmcast worker at {config.latency_rate} events/s", ended)
    timed = namespace("latency")
    w = WorkerProcess(bootstrap, timed.topic_namespace, workdir, config)
    try:
        w.wait_ready()
        measured = asyncio.run(latency(bootstrap, timed, config))
        measured["broker_hop"] = hop
        measured.update(relayed)
    finally:
        w.stop()
    return measured, "latency"
