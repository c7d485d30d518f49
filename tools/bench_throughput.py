"""The bench's throughput stage: the ceiling (a bare aiokafka consumer), a Faust agent that
does nothing, warmcast's engine in process and its worker, on single-event messages and
on envelopes, in rounds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import WarmcastSettings
from tools.bench_engine import run_engine
from tools.bench_worker import (
    REPO,
    BenchConfig,
    WorkerProcess,
    event_mix,
    messages,
    produce,
)

WORKER_STAGE = "warmcast worker"
ENGINE_STAGE = "warmcast engine in process"


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


def throughput(
    config: BenchConfig,
    bootstrap: str,
    workdir: Path,
    trace: str,
    say: Callable[[str, str | None], None],
    namespace: Callable[[str], WarmcastSettings],
) -> tuple[list[dict[str, Any]], str]:
    """The throughput rows: the ceiling, the no-op agent, the engine and the worker; and
    the last stage ended."""
    loads = _Loads.produced(config, bootstrap, trace, say, namespace)
    say("ceiling: bare aiokafka consumer", "produce")
    ceiling = {
        kind: asyncio.run(
            bare_consumer(bootstrap, loads.topics[kind][0].topic("usage"), config.partitions, n)
        )
        for kind, n in loads.events.items()
    }
    rates, ended = _throughput_rounds(config, bootstrap, workdir, loads, say)
    rows = [
        *_throughput_rows("single", ceiling["single"], rates, "single"),
        *_throughput_rows(
            f"envelope {config.envelope_size}", ceiling["envelope"], rates, "envelope"
        ),
    ]
    return rows, ended


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


def worker_rate(
    bootstrap: str,
    settings: WarmcastSettings,
    workdir: Path,
    config: BenchConfig,
    n: int,
    extra_env: dict[str, str] | None = None,
) -> float:
    """Events per second of a fresh worker over the ``n`` events waiting in its topics
    (``extra_env``: settings of its own, e.g. shadow policies)."""
    w = WorkerProcess(bootstrap, settings.topic_namespace, workdir, config, extra_env)
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
