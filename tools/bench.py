"""``warmcast bench``: warmcast's speed against the limits of its own stack, in one run.

On one broker, with an event mix taken from a real trace, it measures:

- the ceiling: a bare aiokafka consumer (``getmany`` + orjson decode) on the same topics;
- a Faust agent that does nothing with each message;
- warmcast's full worker (decode, validate, engine, decisions, tables, metrics, commands),
  with single-event messages and with envelopes (the no-op agent and the worker run
  ``--rounds`` times in turns, and each keeps its best round);
- the worker's own work per event in the bench's process, with no Kafka and no Faust
  (:mod:`tools.bench_engine`), between the worker's rounds: what the worker's rate is a
  share of once Faust and the clients have had their time;
- end-to-end latency from an event's produce time to the warmup command it caused, at a
  fixed offered load, and the same through the broker alone and through relays that send
  each event straight on (a bare aiokafka one and a Faust agent): the stack's own floor;
- resident memory per tracked served model at several model counts, for the worker
  process and for the engine alone;
- the same event -> command latency at a worker holding ``--probe-models`` served models
  (200,000), in spans of 2.5 seconds with ``/health`` asked once a second and spans with
  no probe (:mod:`tools.bench_probe`): what a health probe costs the events.

Stages: ``throughput``, ``latency``, ``memory``, ``probe`` and ``shadow`` (the usage step in
process with two shadow policies and without); ``--only`` runs some of them
(``--only memory --models 100000``: the memory table alone, at 100,000 models).

It prints a table, the performance targets with whether this run met them, and writes the
same figures as JSON (``--json``). The exit status does not depend on the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine import native
from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.broker import BROKER_KINDS, describe_broker, start_broker, terminate
from streams.kafka import ensure_topics
from streams.settings import WarmcastSettings
from tools.bench_engine import run_engine
from tools.bench_probe import health_probe
from tools.bench_worker import (
    REPO,
    STAGES,
    BenchConfig,
    WorkerProcess,
    default_trace,
    event_mix,
    latency,
    messages,
    new_models,
    produce,
)

WORKER_STAGE = "warmcast worker"
ENGINE_STAGE = "warmcast engine in process"


@dataclass
class BenchReport:
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- the event mix ---------------------------------------------------------------------


# -- the stages ------------------------------------------------------------------------


async def bare_consumer(bootstrap: str, topic: str, partitions: int, expect: int) -> float:
    """Events per second of fetch + getmany + orjson decode, all ``expect`` events.

    The clock starts once the consumer is connected and knows where each partition starts,
    so the fetches are timed along with the decoding (timing from the first batch would
    leave out the first fetch, which can hold every event of a small run).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.position(tp)
        n = 0
        loads = orjson.loads
        start = time.monotonic()
        while n < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batch.values():
                for r in records:
                    doc = loads(r.value)
                    n += len(doc) if isinstance(doc, list) else 1
            if time.monotonic() - start > 600:
                raise RuntimeError(f"the bare consumer read {n} of {expect} events in 600 s")
        return n / max(time.monotonic() - start, 1e-9)
    finally:
        await consumer.stop()


#: How the bench starts its Faust agent (``tools.bench_noop``): no-op, or relay. Each agent
#: runs with ``-P``, so that the directory it starts in never stands in for warmcast's packages.
FAUST_AGENT = ["-m", "tools.bench_noop", "worker", "-l", "warn"]


def agent_env(
    bootstrap: str, topic: str, workdir: Path, fetch_wait_ms: int, **more: str
) -> dict[str, str]:
    """The environment of a bench agent process (the Faust agent, or the bare relay) that
    reads ``topic``, with its data in a directory of its own under ``workdir``."""
    return dict(
        os.environ,
        BENCH_BOOTSTRAP=bootstrap,
        BENCH_TOPIC=topic,
        BENCH_FETCH_MAX_WAIT_MS=str(fetch_wait_ms),
        BENCH_DATADIR=str(workdir / f"agent-{uuid.uuid4().hex[:6]}"),
        **more,
    )


def faust_noop(bootstrap: str, topic: str, expect: int, workdir: Path, fetch_wait_ms: int) -> float:
    """Messages per second of a Faust agent that does nothing, first message to last.

    The agent's process is killed if it has not seen ``expect`` messages in 300 s.
    """
    out = subprocess.run(
        [sys.executable, "-P", *FAUST_AGENT],
        cwd=REPO,
        env=agent_env(bootstrap, topic, workdir, fetch_wait_ms, BENCH_EXPECT=str(expect)),
        capture_output=True,
        timeout=300,
        check=False,
    )
    text = out.stdout.decode() + out.stderr.decode()  # a Faust worker logs its stdout
    marker = text.rfind('{"messages"')
    if marker < 0:
        raise RuntimeError(f"the Faust no-op agent failed:\n{text[-3000:]}")
    result = orjson.loads(text[marker : text.index("}", marker) + 1])
    if not result.get("fetch_wait_tuned"):
        raise RuntimeError("the Faust no-op agent could not set its consumer's fetch wait")
    return float(result["messages"] - 1) / max(result["last"] - result["first"], 1e-9)


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


def engine_bytes_per_model(policy: str, n: int) -> float:
    """Heap bytes per served model held by one engine and its policy (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = WarmupEngine(make_policy(policy))
    for i in range(n):
        engine.observe(f"model-{i:07d}", 60.0 * (i // 1000), 1)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del engine
    return (after - before) / n


# -- the run ---------------------------------------------------------------------------


def run_bench(config: BenchConfig, bootstrap: str, workdir: Path) -> BenchReport:
    trace = config.trace or default_trace()
    report = BenchReport(
        config={
            **config.__dict__,
            "trace": trace,
            "bootstrap": bootstrap,
            "engine": native.describe(),
        }
    )
    stages: dict[str, float] = report.config.setdefault("stage_seconds", {})
    clock = [time.monotonic()]

    def say(text: str, stage: str | None = None) -> None:
        """Announce the next step; ``stage``: the name the last one's time is kept under."""
        now = time.monotonic()
        if stage:
            stages[stage] = round(now - clock[0], 1)
        clock[0] = now
        print(text, file=sys.stderr, flush=True)

    def namespace(kind: str) -> WarmcastSettings:
        s = WarmcastSettings(
            kafka_bootstrap_servers=bootstrap,
            topic_namespace=f"bench-{kind}-{uuid.uuid4().hex[:6]}",
            partitions=config.partitions,
        )
        asyncio.run(ensure_topics(s))
        return s

    ended = None
    if "throughput" in config.stages:
        ended = throughput(config, bootstrap, workdir, trace, report, say, namespace)
    if "latency" in config.stages:
        ended = latency_stages(config, bootstrap, workdir, report, say, namespace, ended)
    if "memory" in config.stages:
        say("memory per tracked served model", ended)
        report.memory = memory(bootstrap, namespace("memory"), workdir, config)
        ended = "memory"
    if "probe" in config.stages:
        say(
            f"event -> command latency at {config.probe_models:,} served models, "
            "with and without /health probes",
            ended,
        )
        report.probe = health_probe(bootstrap, namespace("probe"), workdir, config)
        ended = "probe"
    if "shadow" in config.stages:
        say(f"the usage step in process, with {SHADOW_CANDIDATES} shadowed and without", ended)
        report.shadow = shadow_cost(config, trace)
        ended = "shadow"
    say("done", ended)
    report.targets = targets(report, config)
    return report


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


def throughput(
    config: BenchConfig,
    bootstrap: str,
    workdir: Path,
    trace: str,
    report: BenchReport,
    say: Callable[[str, str | None], None],
    namespace: Callable[[str], WarmcastSettings],
) -> str:
    """The throughput rows: the ceiling, the no-op agent, the engine and the worker."""
    loads = _Loads.produced(config, bootstrap, trace, say, namespace)
    say("ceiling: bare aiokafka consumer", "produce")
    ceiling = {
        kind: asyncio.run(
            bare_consumer(bootstrap, loads.topics[kind][0].topic("usage"), config.partitions, n)
        )
        for kind, n in loads.events.items()
    }
    rates, ended = _throughput_rounds(config, bootstrap, workdir, loads, say)
    report.rows = [
        *_throughput_rows("single", ceiling["single"], rates, "single"),
        *_throughput_rows(
            f"envelope {config.envelope_size}", ceiling["envelope"], rates, "envelope"
        ),
    ]
    return ended


@dataclass
class _Loads:
    """The throughput stage's loads, on the broker: single-event messages and envelopes,
    each on topics of its own for every round (a worker writes commands and state there)."""

    batches: dict[str, list[tuple[int, bytes, bytes, int]]]
    events: dict[str, int]
    topics: dict[str, list[WarmcastSettings]]

    @classmethod
    def produced(
        cls,
        config: BenchConfig,
        bootstrap: str,
        trace: str,
        say: Callable[[str, str | None], None],
        namespace: Callable[[str], WarmcastSettings],
    ) -> _Loads:
        n_single, n_env = config.single_events, config.envelope_events
        mix = event_mix(trace, max(n_single, n_env))
        loads = cls(
            batches={
                "single": list(messages(mix[:n_single], config.partitions, 1)),
                "envelope": list(messages(mix[:n_env], config.partitions, config.envelope_size)),
            },
            events={"single": n_single, "envelope": n_env},
            topics={
                "single": [namespace("single") for _ in range(config.rounds)],
                "envelope": [namespace("envelope") for _ in range(config.rounds)],
            },
        )
        say(
            f"producing {n_single:,} single-event messages and {n_env:,} events in envelopes",
            None,
        )
        for single, env in zip(loads.topics["single"], loads.topics["envelope"], strict=True):
            asyncio.run(produce(bootstrap, single.topic("usage"), loads.batches["single"]))
            asyncio.run(produce(bootstrap, env.topic("usage"), loads.batches["envelope"]))
        return loads


def _throughput_rounds(
    config: BenchConfig,
    bootstrap: str,
    workdir: Path,
    loads: _Loads,
    say: Callable[[str, str | None], None],
) -> tuple[dict[str, list[float]], str]:
    """Each round's events/s of the no-op agent, the worker and the engine in process, on
    either load (``noop_single``, ``worker_envelope`` ...), and the last stage ended.

    The no-op agent and the worker take turns, so that a slow spell of a shared machine
    does not fall on one side only; each side keeps its best round."""
    single, env = loads.topics["single"][0], loads.topics["envelope"][0]
    single_msgs, env_msgs = loads.batches["single"], loads.batches["envelope"]
    n_single, n_env = loads.events["single"], loads.events["envelope"]
    wait = single.fetch_max_wait_ms  # the worker's, from the same environment
    in_process = WarmcastSettings(partitions=config.partitions, policy=config.policy)
    rates: dict[str, list[float]] = defaultdict(list)
    ended = "ceiling"
    for r in range(config.rounds):
        tag = f"_{r + 1}" if config.rounds > 1 else ""
        say(f"round {r + 1} of {config.rounds}: Faust agent doing nothing", ended)
        rates["noop_single"].append(
            faust_noop(bootstrap, single.topic("usage"), len(single_msgs), workdir, wait)
        )
        noop_env_msgs = faust_noop(bootstrap, env.topic("usage"), len(env_msgs), workdir, wait)
        rates["noop_envelope"].append(noop_env_msgs * n_env / len(env_msgs))
        say(f"round {r + 1}: warmcast worker, single-event messages", f"faust_noop{tag}")
        rates["worker_single"].append(
            worker_rate(bootstrap, loads.topics["single"][r], workdir, config, n_single)
        )
        say(f"round {r + 1}: warmcast worker, envelopes", f"worker_single{tag}")
        rates["worker_envelope"].append(
            worker_rate(bootstrap, loads.topics["envelope"][r], workdir, config, n_env)
        )
        say(f"round {r + 1}: warmcast engine in process", f"worker_envelope{tag}")
        rates["engine_single"].append(run_engine(single_msgs, in_process).events_per_second)
        rates["engine_envelope"].append(run_engine(env_msgs, in_process).events_per_second)
        ended = f"engine{tag}"
    return rates, ended


def _throughput_rows(
    kind: str, ceiling: float, rates: dict[str, list[float]], load: str
) -> list[dict[str, Any]]:
    """The four throughput rows of one load: the ceiling, the no-op agent, the engine and
    the worker, each at its best round."""
    noops, engines, workers = (rates[f"{side}_{load}"] for side in ("noop", "engine", "worker"))
    return [
        row("bare aiokafka getmany + orjson", kind, ceiling, ceiling),
        row("Faust agent, no work", kind, max(noops), ceiling, rounds=noops),
        row(ENGINE_STAGE, kind, max(engines), ceiling, rounds=engines),
        row(
            WORKER_STAGE,
            kind,
            max(workers),
            ceiling,
            max(noops),
            rounds=workers,
            engine=max(engines),
        ),
    ]


def latency_stages(
    config: BenchConfig,
    bootstrap: str,
    workdir: Path,
    report: BenchReport,
    say: Callable[[str, str | None], None],
    namespace: Callable[[str], WarmcastSettings],
    ended: str | None,
) -> str:
    """The latency table: the broker trip, the relays, then the worker."""
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
        report.latency = asyncio.run(latency(bootstrap, timed, config))
        report.latency["broker_hop"] = hop
        report.latency.update(relayed)
    finally:
        w.stop()
    return "latency"


def worker_rate(
    bootstrap: str, settings: WarmcastSettings, workdir: Path, config: BenchConfig, n: int
) -> float:
    """Events per second of a fresh worker over the ``n`` events waiting in its topics."""
    w = WorkerProcess(bootstrap, settings.topic_namespace, workdir, config)
    try:
        w.wait_ready()
        return w.rate_until(n)
    finally:
        w.stop()


def row(
    stage: str,
    messages_kind: str,
    rate: float,
    ceiling: float,
    noop: float | None = None,
    rounds: Sequence[float] = (),
    engine: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stage": stage,
        "messages": messages_kind,
        "events_per_second": round(rate, 1),
        "ratio_to_ceiling": round(rate / ceiling, 4) if ceiling else None,
    }
    if rounds:
        out["rounds_events_per_second"] = [round(x, 1) for x in rounds]
    if noop is not None:
        out["ratio_to_faust_noop"] = round(rate / noop, 4) if noop else None
    if engine is not None:
        out["ratio_to_engine"] = round(rate / engine, 4) if engine else None
    return out


def memory(
    bootstrap: str, settings: WarmcastSettings, workdir: Path, config: BenchConfig
) -> list[dict[str, Any]]:
    w = WorkerProcess(bootstrap, settings.topic_namespace, workdir, config)
    out: list[dict[str, Any]] = []
    try:
        w.wait_ready()
        base = w.rss_bytes()
        done = 0
        for n in sorted(config.model_counts):
            intake = new_models(w, bootstrap, settings, config, done, n)
            done = n
            rss = w.rss_bytes()
            out.append(
                {
                    "models": n,
                    "tracked_models": int(w.metric("warmcast_tracked_models")),
                    "new_models_per_second": round(intake, 1),
                    "worker_rss_bytes": rss,
                    "worker_bytes_per_model": round((rss - base) / n, 1),
                    "engine_bytes_per_model": round(engine_bytes_per_model(config.policy, n), 1),
                }
            )
    finally:
        w.stop()
    return out


# -- the targets ------------------------------------------------------------------------

MB = 10**6  # the targets count bytes in powers of ten: 2 KB is 2,000 B

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


def format_target(t: dict[str, Any]) -> str:
    value, unit = t["measured"], t["unit"]
    if value is None:
        shown = "-"
    elif unit == "ratio":
        shown = f"{value:.1%}"
    elif unit == "bytes" and t["threshold"] >= MB:
        shown = f"{value / MB:,.1f} MB"
    elif unit == "bytes":
        shown = f"{value:,.0f} B"
    elif unit == "ms":
        shown = f"{value:,.1f} ms"
    else:
        shown = f"{value:,.0f} {unit}"
    if t["name"] == "envelope_events_per_second" and t.get("ratio_to_faust_noop") is not None:
        shown += f" ({t['ratio_to_faust_noop']:.1%} of the Faust no-op)"
    if t.get("relay_p99_ms"):
        floors = ", ".join(
            f"{RELAYS[kind][0]} {p99:,.1f} ms" for kind, p99 in t["relay_p99_ms"].items()
        )
        shown += f" ({floors})"
    verdict = ("met" if t["met"] else "NOT met") if t["judged"] else "not judged"
    line = f"  {verdict:10} {t['target']}: {shown}"
    if not t["judged"]:
        line += f" ({t['not_judged_because']})"
    return line


def format_report(report: BenchReport) -> str:
    lines = [f"engine: {report.config.get('engine', '-')}"]
    if report.config.get("broker_described"):
        lines.append(f"broker: {report.config['broker_described']}")
    if report.rows:
        lines += [
            "",
            f"{'stage':34} {'messages':14} {'events/s':>12} {'/ceiling':>9} {'/faust':>8} "
            f"{'/engine':>8}",
            "-" * 90,
        ]
    for r in report.rows:
        noop, engine = r.get("ratio_to_faust_noop"), r.get("ratio_to_engine")
        lines.append(
            f"{r['stage']:34} {r['messages']:14} {r['events_per_second']:>12,.0f} "
            f"{r['ratio_to_ceiling']:>9.1%} {'' if noop is None else f'{noop:.1%}':>8} "
            f"{'' if engine is None else f'{engine:.1%}':>8}".rstrip()
        )
    lines.extend(format_latency(report.latency))
    if report.memory:
        lines.append("")
        lines.append(
            f"{'models':>8} {'tracked':>8} {'new/s':>8} {'worker RSS':>12} "
            f"{'worker B/model':>15} {'engine B/model':>15}"
        )
        for m in report.memory:
            lines.append(
                f"{m['models']:>8,} {m['tracked_models']:>8,} {m['new_models_per_second']:>8,.0f} "
                f"{m['worker_rss_bytes'] / MB:>9.1f} MB "
                f"{m['worker_bytes_per_model']:>15,.0f} {m['engine_bytes_per_model']:>15,.0f}"
            )
    lines.extend(format_probe(report.probe))
    lines.extend(format_shadow(report.shadow))
    if report.targets:
        lines.append("")
        lines.append("targets")
        lines.extend(format_target(t) for t in report.targets)
    return "\n".join(lines)


def format_latency(lat: dict[str, Any]) -> list[str]:
    """The latency block: the worker, then the relays and the broker trip that bound it."""
    if not lat:
        return []
    timed = [(WORKER_STAGE, lat)]
    timed += [(name, lat[kind]) for kind, (name, _) in RELAYS.items() if kind in lat]
    if "broker_hop" in lat:
        timed.append(("one trip through the broker alone", lat["broker_hop"]))
    lines = [
        "",
        f"event -> command latency at {lat['offered_per_second']:,.0f} events/s, "
        f"{lat['events']:,} events, sent with a {lat.get('producer_linger_ms', 0):g} ms "
        "producer linger",
        f"{'':34} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'first ms':>9}",
    ]
    for name, t in timed:
        if not t.get("commands"):  # no command came back for any event
            lines.append(f"{name:34} {0:>9,}")
            continue
        lines.append(
            f"{name:34} {t['commands']:>9,} {t['p50_ms']:>8.1f} {t['p99_ms']:>8.1f} "
            f"{t['max_ms']:>8.1f} {t['first_events_ms']:>9.1f}"
        )
    lines.append("p99 in each second of the run, ms")
    lines.extend(
        f"  {name:34} {_series(t['p99_ms_by_second'])}"
        for name, t in timed
        if t.get("p99_ms_by_second")
    )
    return lines


def format_probe(probe: dict[str, Any]) -> list[str]:
    """The probe block: the latency of events sent while /health was asked and not."""
    if not probe:
        return []
    groups = probe.get("groups", {})
    lines = [
        "",
        f"/health once a second at {probe['tracked_models']:,} tracked served models, "
        f"events at {probe['offered_per_second']:,.0f}/s, in spans of "
        f"{probe['block_seconds']:g} s with and without probes",
        f"{'':34} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name, label in (("quiet", "no probes"), ("probed", "/health once a second")):
        g = groups.get(name)
        if g:
            lines.append(
                f"{label:34} {g['commands']:>9,} {g['p50_ms']:>8.1f} {g['p99_ms']:>8.1f} "
                f"{g['max_ms']:>8.1f}"
            )
    answers = probe.get("answers", {})
    if answers.get("count"):
        lines.append(
            f"/health answered {answers['count']} times: p50 {answers['p50_ms']:.1f} ms, "
            f"max {answers['max_ms']:.1f} ms, {answers['bytes'] / 1000:,.0f} kB each"
        )
    if probe.get("p99_rise") is not None:
        lines.append(f"p99 with probes / without: {1 + probe['p99_rise']:.1%}")
    return lines


def _series(values: list[float]) -> str:
    """Milliseconds, whole, in a row.

    >>> _series([4.25, 12.0, 130.4])
    '4 12 130'
    """
    return " ".join(f"{v:.0f}" for v in values)


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and memory against the stack's own limits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", help="trace for the event mix (default: the shipped sample)")
    p.add_argument("--single-events", type=int, default=BenchConfig.single_events)
    p.add_argument("--envelope-events", type=int, default=BenchConfig.envelope_events)
    p.add_argument("--envelope-size", type=int, default=BenchConfig.envelope_size)
    p.add_argument("--partitions", type=int, default=BenchConfig.partitions)
    p.add_argument("--latency-rate", type=int, default=BenchConfig.latency_rate)
    p.add_argument("--latency-seconds", type=float, default=BenchConfig.latency_seconds)
    p.add_argument(
        "--latency-linger-ms",
        type=float,
        default=BenchConfig.latency_linger_ms,
        help="linger of the latency stage's event producer (Kafka's default since 4.0: 5)",
    )
    p.add_argument(
        "--models",
        default=",".join(map(str, BenchConfig.model_counts)),
        help="served-model counts for the memory stage, comma separated",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=BenchConfig.rounds,
        help="times the no-op agent and the worker are run, in turns (each keeps its best)",
    )
    p.add_argument("--policy", default=BenchConfig.policy, help="worker policy")
    p.add_argument("--json", dest="json_out", help="write the figures as JSON here")
    p.add_argument(
        "--only",
        default=",".join(STAGES),
        help="the stages to run, comma separated, of: " + ", ".join(STAGES) + " (default: all)",
    )
    p.add_argument(
        "--probe-models",
        type=int,
        default=BenchConfig.probe_models,
        help="probe stage: served models the worker holds while /health is asked",
    )
    p.add_argument(
        "--probe-seconds",
        type=float,
        default=BenchConfig.probe_seconds,
        help="probe stage: seconds of timed events (half of them with /health asked)",
    )
    p.add_argument(
        "--broker",
        choices=BROKER_KINDS,
        default=BenchConfig.broker,
        help="local broker started when KAFKA_BOOTSTRAP_SERVERS is unset: tansu (embedded, "
        "default) or kafka (Apache Kafka, one node)",
    )
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise SystemExit("warmcast bench: --rounds must be at least 1")
    stages = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise SystemExit(f"warmcast bench: --only takes some of {', '.join(STAGES)}")
    config = BenchConfig(
        trace=args.trace,
        single_events=args.single_events,
        envelope_events=args.envelope_events,
        envelope_size=args.envelope_size,
        partitions=args.partitions,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        latency_linger_ms=args.latency_linger_ms,
        model_counts=tuple(int(x) for x in args.models.split(",") if x),
        policy=args.policy,
        json_out=args.json_out,
        rounds=args.rounds,
        stages=tuple(x for x in STAGES if x in stages),
        probe_models=args.probe_models,
        probe_seconds=args.probe_seconds,
        broker=args.broker,
    )
    return bench(config)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` meanwhile, so every stage stops what it started."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench(config: BenchConfig, bootstrap: str | None = None) -> int:
    """Run every stage, print the report and write its JSON; the exit status is 0.

    ``bootstrap``: the broker; by default ``KAFKA_BOOTSTRAP_SERVERS``, else a local broker
    of ``config.broker``'s kind started for the run. Every process a stage starts is
    stopped when it ends, also on an error, Ctrl-C or SIGTERM.
    """
    import tempfile

    started = time.monotonic()
    bootstrap = bootstrap or WarmcastSettings().kafka_bootstrap_servers
    with (
        sigterm_unwinds(),
        tempfile.TemporaryDirectory(prefix="warmcast-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        described = bootstrap
        if not bootstrap:
            broker = start_broker(config.broker)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
            described = describe_broker(config.broker, broker)
        report = run_bench(config, bootstrap, Path(tmp))
        report.config["broker_described"] = described
    report.config["seconds"] = round(time.monotonic() - started, 1)
    print(format_report(report))
    if config.json_out:
        Path(config.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.json_out).write_bytes(orjson.dumps(report.__dict__, option=orjson.OPT_INDENT_2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.bench ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="warmcast")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
