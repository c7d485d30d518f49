"""The bench's shadow stage: the worker's usage step in process with two shadow policies
and without.
"""

from __future__ import annotations

from typing import Any

from streams.settings import WarmcastSettings
from tools.bench_engine import run_engine
from tools.bench_worker import (
    BenchConfig,
    event_mix,
    messages,
)

#: The two shadow candidates the ``shadow`` stage runs beside the active policy.
SHADOW_CANDIDATES = "warmcast,fixed:1"


def shadow_cost(config: BenchConfig, trace: str) -> dict[str, Any]:
    """Events/s of the worker's usage step in process (envelopes), with no shadow policy
    and with two (:data:`SHADOW_CANDIDATES`); the best of ``config.rounds`` each."""
    mix = event_mix(trace, config.envelope_events)
    msgs = list(messages(mix, config.partitions, config.envelope_size))
    rates: dict[str, float] = {}
    for label, shadows in (("none", ""), ("two", SHADOW_CANDIDATES)):
        settings = WarmcastSettings(
            policy=config.policy, partitions=config.partitions, shadow_policies=shadows
        )
        rates[label] = max(
            run_engine(msgs, settings).events_per_second for _ in range(config.rounds)
        )
    return {
        "policy": config.policy,
        "candidates": SHADOW_CANDIDATES,
        "events": len(mix),
        "events_per_second_without": round(rates["none"], 1),
        "events_per_second_with_two": round(rates["two"], 1),
        "ratio": round(rates["two"] / rates["none"], 4) if rates["none"] else None,
    }


def format_shadow(shadow: dict[str, Any]) -> list[str]:
    if not shadow:
        return []
    return [
        "",
        f"usage step in process, {shadow['events']:,} events in envelopes, active "
        f"{shadow['policy']}: {shadow['events_per_second_without']:,.0f} events/s without "
        f"shadow policies, {shadow['events_per_second_with_two']:,.0f} with two "
        f"({shadow['candidates']}): {shadow['ratio']:.1%}",
    ]
