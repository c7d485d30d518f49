"""The bench's shadow stage: what two shadow policies cost, with none as the reference.

Measured twice: the worker's usage step in process (no Kafka, no Faust: the engines' own
cost) and the whole worker through the broker, each round a fresh worker with and one
without the candidates on the same envelopes, in turns, each side keeping its best round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.settings import WarmcastSettings
from tools.bench_engine import run_engine
from tools.bench_throughput import worker_rate
from tools.bench_worker import BenchConfig, event_mix, messages, produce

#: The two shadow candidates the ``shadow`` stage runs beside the active policy.
SHADOW_CANDIDATES = "warmcast,fixed:1"
SIDES = (("none", ""), ("two", SHADOW_CANDIDATES))


def shadow_cost(
    config: BenchConfig,
    trace: str,
    bootstrap: str,
    workdir: Path,
    namespace: Callable[[str], WarmcastSettings],
) -> dict[str, Any]:
    """Events/s with no shadow policy and with two (:data:`SHADOW_CANDIDATES`), envelopes
    of ``config.envelope_size``: in process and for the worker through the broker."""
    mix = event_mix(trace, config.envelope_events)
    msgs = list(messages(mix, config.partitions, config.envelope_size))
    in_process: dict[str, float] = {}
    for label, shadows in SIDES:
        settings = WarmcastSettings(
            policy=config.policy, partitions=config.partitions, shadow_policies=shadows
        )
        in_process[label] = max(
            run_engine(msgs, settings).events_per_second for _ in range(config.rounds)
        )
    worker: dict[str, list[float]] = {label: [] for label, _ in SIDES}
    for _ in range(config.rounds):
        for label, shadows in SIDES:
            topics = namespace(f"shadow-{label}")
            asyncio.run(produce(bootstrap, topics.topic("usage"), msgs))
            env = {"WARMCAST_SHADOW_POLICIES": shadows}
            worker[label].append(worker_rate(bootstrap, topics, workdir, config, len(mix), env))
    return {
        "policy": config.policy,
        "candidates": SHADOW_CANDIDATES,
        "events": len(mix),
        "envelope_size": config.envelope_size,
        "events_per_second_without": round(in_process["none"], 1),
        "events_per_second_with_two": round(in_process["two"], 1),
        "ratio": _ratio(in_process["two"], in_process["none"]),
        "worker_events_per_second_without": round(max(worker["none"]), 1),
        "worker_events_per_second_with_two": round(max(worker["two"]), 1),
        "worker_rounds": {label: [round(x, 1) for x in rates] for label, rates in worker.items()},
        "worker_ratio": _ratio(max(worker["two"]), max(worker["none"])),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def format_shadow(shadow: dict[str, Any]) -> list[str]:
    if not shadow:
        return []
    head = f"{shadow['events']:,} events in envelopes, active {shadow['policy']}"
    return [
        "",
        f"shadow policies ({shadow['candidates']}), {head}:",
        f"  usage step in process: {shadow['events_per_second_without']:,.0f} events/s "
        f"without, {shadow['events_per_second_with_two']:,.0f} with two "
        f"({shadow['ratio']:.1%})",
        f"  worker through the broker: {shadow['worker_events_per_second_without']:,.0f} "
        f"events/s without, {shadow['worker_events_per_second_with_two']:,.0f} with two "
        f"({shadow['worker_ratio']:.1%})",
    ]
