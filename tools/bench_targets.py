"""The bench's performance targets, each judged on the figures of one run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tools.bench_latency import RELAYS
from tools.bench_report import MB, BenchReport
from tools.bench_throughput import WORKER_STAGE
from tools.bench_worker import (
    BenchConfig,
)

#: The performance targets: events per second per worker in envelopes of 100; the share of
#: the Faust no-op agent's rate with single-event messages; p99 event -> command latency
#: at 1,000 events/s at most 1.5 times the bare aiokafka relay's in the same run; state and
#: resident memory per tracked served model.
ENVELOPE_TARGET_EVENTS_PER_SECOND = 50_000
ENVELOPE_TARGET_SIZE = 100
SINGLE_TARGET_RATIO_TO_NOOP = 0.8
LATENCY_TARGET_RATIO_TO_RELAY = 1.5
LATENCY_TARGET_RATE = 1000
BYTES_PER_MODEL_TARGET = 2_000
RSS_TARGET_BYTES = 400 * MB
RSS_TARGET_MODELS = 100_000
#: With this many served models, /health asked once a second raises the p99 event ->
#: command latency by less than this share of the p99 without probes.
PROBE_TARGET_MODELS = 200_000
PROBE_TARGET_RISE = 0.2


def target(
    name: str,
    text: str,
    measured: float | None,
    threshold: float,
    unit: str,
    ok: Callable[[float], bool],
    why_not: str | None = None,
) -> dict[str, Any]:
    """One target: judged only when this run measured what it is about."""
    judged = measured is not None and why_not is None
    out: dict[str, Any] = {
        "name": name,
        "target": text,
        "measured": measured,
        "threshold": threshold,
        "unit": unit,
        "judged": judged,
        "met": bool(judged and measured is not None and ok(measured)),
    }
    if not judged:
        out["not_judged_because"] = why_not or "not measured"
    return out


def targets(report: BenchReport, config: BenchConfig) -> list[dict[str, Any]]:
    """Each target with the figure this run measured for it, and whether it was met.

    ``met`` is true only for a target that was judged and reached; a target is not judged
    when the run did not measure what it is about (another envelope size, another offered
    load, no 100k-model count).
    """
    worker = {r["messages"]: r for r in report.rows if r["stage"] == WORKER_STAGE}
    single = worker.get("single")
    largest = max(report.memory, key=lambda m: m["models"]) if report.memory else None
    at_100k = next((m for m in report.memory if m["models"] == RSS_TARGET_MODELS), None)
    return [
        envelope_target(worker.get(f"envelope {config.envelope_size}"), config),
        target(
            "single_ratio_to_faust_noop",
            f"single-event messages: >= {SINGLE_TARGET_RATIO_TO_NOOP:.0%} "
            "of the Faust no-op agent's rate",
            single.get("ratio_to_faust_noop") if single else None,
            SINGLE_TARGET_RATIO_TO_NOOP,
            "ratio",
            lambda v: v >= SINGLE_TARGET_RATIO_TO_NOOP,
        ),
        latency_target(report.latency, config),
        target(
            "worker_bytes_per_model",
            f"< {BYTES_PER_MODEL_TARGET:,} bytes of worker memory per tracked served model "
            "(at the largest model count)",
            largest["worker_bytes_per_model"] if largest else None,
            BYTES_PER_MODEL_TARGET,
            "bytes",
            lambda v: v < BYTES_PER_MODEL_TARGET,
        ),
        target(
            "worker_rss_at_100k_models",
            f"worker RSS < {RSS_TARGET_BYTES // MB} MB at {RSS_TARGET_MODELS:,} models",
            at_100k["worker_rss_bytes"] if at_100k else None,
            RSS_TARGET_BYTES,
            "bytes",
            lambda v: v < RSS_TARGET_BYTES,
            None if at_100k else f"{RSS_TARGET_MODELS:,} models not measured",
        ),
        probe_target(report.probe),
    ]


def envelope_target(env: dict[str, Any] | None, config: BenchConfig) -> dict[str, Any]:
    """The envelope throughput target, judged on the worker's envelope row ``env``."""
    judged = target(
        "envelope_events_per_second",
        f"envelopes of {ENVELOPE_TARGET_SIZE}: "
        f">= {ENVELOPE_TARGET_EVENTS_PER_SECOND:,} events/s per worker",
        env["events_per_second"] if env else None,
        ENVELOPE_TARGET_EVENTS_PER_SECOND,
        "events/s",
        lambda v: v >= ENVELOPE_TARGET_EVENTS_PER_SECOND,
        None
        if config.envelope_size == ENVELOPE_TARGET_SIZE
        else f"measured with envelopes of {config.envelope_size}",
    )
    judged["ratio_to_faust_noop"] = env.get("ratio_to_faust_noop") if env else None
    return judged


def latency_target(lat: dict[str, Any], config: BenchConfig) -> dict[str, Any]:
    """The p99 latency target, judged against the bare aiokafka relay of the same run."""
    relay = lat.get("bare_relay", {}) if lat.get("bare_relay", {}).get("commands") else {}
    ceiling = LATENCY_TARGET_RATIO_TO_RELAY * relay["p99_ms"] if relay else math.inf
    why_not = None
    if config.latency_rate < LATENCY_TARGET_RATE:
        why_not = f"measured at {config.latency_rate:,} events/s"
    elif not relay:
        why_not = "the bare aiokafka relay was not measured in this run"
    judged = target(
        "latency_p99_ms",
        f"p99 event -> command latency <= {LATENCY_TARGET_RATIO_TO_RELAY:g}x the bare "
        f"aiokafka relay's at {LATENCY_TARGET_RATE:,} events/s",
        lat.get("p99_ms") if lat.get("commands") else None,
        ceiling,
        "ms",
        lambda v: v <= ceiling,
        why_not,
    )
    # the same p99 through relays that do nothing: the stack's own floor on this broker
    judged["relay_p99_ms"] = {
        kind: lat[kind]["p99_ms"] for kind in RELAYS if lat.get(kind, {}).get("commands")
    }
    return judged


def probe_target(probe: dict[str, Any]) -> dict[str, Any]:
    """/health once a second at 200,000 models: the p99 rises by less than 20 %."""
    tracked = probe.get("tracked_models", 0)
    why_not = None
    if tracked < PROBE_TARGET_MODELS:
        why_not = f"{tracked:,} served models, not {PROBE_TARGET_MODELS:,}"
    return target(
        "health_probe_p99_rise",
        f"/health once a second at {PROBE_TARGET_MODELS:,} served models: p99 event -> "
        f"command latency rises < {PROBE_TARGET_RISE:.0%}",
        probe.get("p99_rise"),
        PROBE_TARGET_RISE,
        "ratio",
        lambda v: v < PROBE_TARGET_RISE,
        why_not if probe else "not measured",
    )
