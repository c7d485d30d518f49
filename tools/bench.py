"""``warmcast bench``: warmcast's speed against the limits of its own stack, in one run.

On one broker, with an event mix taken from a real trace, it measures:

- the ceiling: a bare aiokafka consumer (``getmany`` + orjson decode) on the same topics;
- a Faust agent that does nothing with each message;
- warmcast's full worker (decode, validate, engine, decisions, tables, metrics, commands),
  with single-event messages and with envelopes;
- end-to-end latency from an event's produce time to the warmup command it caused, at a
  fixed offered load;
- resident memory per tracked served model at several model counts, for the worker
  process and for the engine alone.

It prints a table and writes JSON. Nothing here is a pass/fail test: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.broker import EmbeddedBroker, free_port
from streams.kafka import ensure_topics
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tools.traces import load_trace

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "samples"


@dataclass
class BenchConfig:
    trace: str | None = None
    single_events: int = 20_000
    envelope_events: int = 300_000
    envelope_size: int = 100
    partitions: int = 4
    latency_rate: int = 1000
    latency_seconds: float = 10.0
    model_counts: tuple[int, ...] = (1_000, 10_000, 100_000)
    policy: str = "hybrid"
    json_out: str | None = None


@dataclass
class BenchReport:
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- the event mix ---------------------------------------------------------------------


def default_trace() -> str:
    found = sorted(SAMPLE.glob("*.csv.gz")) + sorted(SAMPLE.glob("*.csv"))
    if not found:
        raise SystemExit("no trace given and no shipped sample in tools/samples/: use --trace")
    return str(found[0])


def event_mix(path: str, n: int) -> list[dict[str, Any]]:
    """``n`` usage events in time order from a real trace, repeated past its end if needed."""
    trace = load_trace(path)
    events = trace.events
    if not events:
        raise SystemExit(f"{path} holds no usage events")
    span = (events[-1][0] - events[0][0]) + 60.0
    out: list[dict[str, Any]] = []
    repeat = 0
    while len(out) < n:
        shift = repeat * span
        for ts, model_id, count in events:
            out.append({"model_id": model_id, "ts": ts + shift, "count": count})
            if len(out) == n:
                break
        repeat += 1
    return out


def messages(
    events: list[dict[str, Any]], partitions: int, envelope: int
) -> Iterator[tuple[int, bytes, bytes, int]]:
    """``(partition, key, value, events)``: single events, or envelopes per owner partition."""
    if envelope <= 1:
        for e in events:
            key = e["model_id"]
            yield partition_for(key, partitions), key.encode(), orjson.dumps(e), 1
        return
    pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        p = partition_for(e["model_id"], partitions)
        batch = pending[p]
        batch.append(e)
        if len(batch) == envelope:
            yield p, batch[0]["model_id"].encode(), orjson.dumps(batch), len(batch)
            pending[p] = []
    for p, batch in pending.items():
        if batch:
            yield p, batch[0]["model_id"].encode(), orjson.dumps(batch), len(batch)


async def produce(bootstrap: str, topic: str, items: list[tuple[int, bytes, bytes, int]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, acks=1
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=p) for p, key, value, _ in items
        ]
        await producer.flush()
        for f in futures:
            f.result()
    finally:
        await producer.stop()


# -- the stages ------------------------------------------------------------------------


async def bare_consumer(bootstrap: str, topic: str, partitions: int, expect: int) -> float:
    """Events per second of getmany + orjson decode, first batch to last."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        n = 0
        first = 0.0
        loads = orjson.loads
        while n < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if not first and batch:
                first = time.monotonic()
            for records in batch.values():
                for r in records:
                    doc = loads(r.value)
                    n += len(doc) if isinstance(doc, list) else 1
        return n / max(time.monotonic() - first, 1e-9)
    finally:
        await consumer.stop()


def faust_noop(bootstrap: str, topic: str, expect: int, workdir: Path) -> float:
    """Messages per second of a Faust agent that does nothing."""
    env = dict(os.environ, BENCH_BOOTSTRAP=bootstrap, BENCH_TOPIC=topic, BENCH_EXPECT=str(expect))
    env["BENCH_DATADIR"] = str(workdir / f"noop-{uuid.uuid4().hex[:6]}")
    out = subprocess.run(
        [sys.executable, "-m", "tools.bench_noop", "worker", "-l", "warn"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    text = out.stdout.decode() + out.stderr.decode()  # a Faust worker logs its stdout
    marker = text.rfind('{"messages"')
    if marker < 0:
        raise RuntimeError(f"the Faust no-op agent failed:\n{text[-3000:]}")
    result = orjson.loads(text[marker : text.index("}", marker) + 1])
    return float(result["messages"] - 1) / max(result["last"] - result["first"], 1e-9)


class WorkerProcess:
    """A ``warmcast worker`` subprocess with its web port, for timing and memory."""

    def __init__(self, bootstrap: str, ns: str, workdir: Path, config: BenchConfig) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            WARMCAST_TOPIC_NAMESPACE=ns,
            WARMCAST_APP_ID=f"{ns}-app",
            WARMCAST_WEB_PORT=str(self.port),
            WARMCAST_DATA_DIR=str(workdir / ns),
            WARMCAST_PARTITIONS=str(config.partitions),
            WARMCAST_POLICY=config.policy,
            WARMCAST_LOG_LEVEL="warning",
        )
        self.log = open(workdir / f"{ns}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited; see {self.log.name}")
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if orjson.loads(response.read()).get("ready"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the worker did not become ready")

    def rate_until(self, expect: int, timeout: float = 600.0) -> float:
        """Events per second from the first counted event until ``expect`` are counted."""
        deadline = time.monotonic() + timeout
        first_t, first_n = 0.0, 0.0
        while time.monotonic() < deadline:
            n = self.metric("warmcast_usage_events_total")
            now = time.monotonic()
            if n and not first_t:
                first_t, first_n = now, n
            if n >= expect:
                return (n - first_n) / max(now - first_t, 1e-9)
            time.sleep(0.02)
        raise RuntimeError(f"the worker did not count {expect} usage events in time")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def latency(
    bootstrap: str, settings: WarmcastSettings, rate: int, seconds: float
) -> dict[str, Any]:
    """Produce new-model events at ``rate``/s; time each until its warmup command arrives."""
    consumer = AIOKafkaConsumer(
        settings.topic("warmup"), bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    total = int(rate * seconds)
    run = uuid.uuid4().hex[:6]

    async def read() -> None:
        while len(got) < total:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    model_id = orjson.loads(r.value)["model_id"]
                    if model_id in sent and model_id not in got:
                        got[model_id] = now

    reader = asyncio.create_task(read())
    start = time.monotonic()
    topic = settings.topic("usage")
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        model_id = f"lat-{run}-{i}"
        sent[model_id] = time.monotonic()
        await producer.send(
            topic,
            orjson.dumps({"model_id": model_id, "ts": time.time()}),
            key=model_id.encode(),
            partition=partition_for(model_id, settings.partitions),
        )
    offered = total / (time.monotonic() - start)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader, timeout=60)
    reader.cancel()
    await producer.stop()
    await consumer.stop()
    lat = sorted(got[m] - sent[m] for m in got)
    if not lat:
        return {"offered_per_second": offered, "commands": 0}
    return {
        "offered_per_second": round(offered, 1),
        "events": total,
        "commands": len(lat),
        "p50_ms": round(1000 * lat[len(lat) // 2], 2),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
        "max_ms": round(1000 * lat[-1], 2),
        "mean_ms": round(1000 * statistics.fmean(lat), 2),
    }


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
    report = BenchReport(config={**config.__dict__, "trace": trace, "bootstrap": bootstrap})
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    n_single, n_env = config.single_events, config.envelope_events
    mix = event_mix(trace, max(n_single, n_env))

    def namespace(kind: str) -> WarmcastSettings:
        s = WarmcastSettings(
            kafka_bootstrap_servers=bootstrap,
            topic_namespace=f"bench-{kind}-{uuid.uuid4().hex[:6]}",
            partitions=config.partitions,
        )
        asyncio.run(ensure_topics(s))
        return s

    single = namespace("single")
    env = namespace("envelope")
    say(f"producing {n_single:,} single-event messages and {n_env:,} events in envelopes")
    single_msgs = list(messages(mix[:n_single], config.partitions, 1))
    env_msgs = list(messages(mix[:n_env], config.partitions, config.envelope_size))
    asyncio.run(produce(bootstrap, single.topic("usage"), single_msgs))
    asyncio.run(produce(bootstrap, env.topic("usage"), env_msgs))

    say("ceiling: bare aiokafka consumer")
    ceiling_single = asyncio.run(
        bare_consumer(bootstrap, single.topic("usage"), config.partitions, n_single)
    )
    ceiling_env = asyncio.run(
        bare_consumer(bootstrap, env.topic("usage"), config.partitions, n_env)
    )
    say("Faust agent doing nothing")
    noop_single = faust_noop(bootstrap, single.topic("usage"), len(single_msgs), workdir)
    noop_env_msgs = faust_noop(bootstrap, env.topic("usage"), len(env_msgs), workdir)
    noop_env = noop_env_msgs * n_env / len(env_msgs)

    say("warmcast worker, single-event messages")
    w = WorkerProcess(bootstrap, single.topic_namespace, workdir, config)
    try:
        w.wait_ready()
        worker_single = w.rate_until(n_single)
    finally:
        w.stop()
    say("warmcast worker, envelopes")
    w = WorkerProcess(bootstrap, env.topic_namespace, workdir, config)
    try:
        w.wait_ready()
        worker_env = w.rate_until(n_env)
        say(f"latency at {config.latency_rate} events/s")
        report.latency = asyncio.run(
            latency(bootstrap, env, config.latency_rate, config.latency_seconds)
        )
    finally:
        w.stop()

    report.rows = [
        row("bare aiokafka getmany + orjson", "single", ceiling_single, ceiling_single),
        row("Faust agent, no work", "single", noop_single, ceiling_single),
        row("warmcast worker", "single", worker_single, ceiling_single, noop_single),
        row(
            "bare aiokafka getmany + orjson",
            f"envelope {config.envelope_size}",
            ceiling_env,
            ceiling_env,
        ),
        row("Faust agent, no work", f"envelope {config.envelope_size}", noop_env, ceiling_env),
        row(
            "warmcast worker", f"envelope {config.envelope_size}", worker_env, ceiling_env, noop_env
        ),
    ]

    say("memory per tracked served model")
    report.memory = memory(bootstrap, namespace("memory"), workdir, config)
    return report


def row(
    stage: str, messages_kind: str, rate: float, ceiling: float, noop: float | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stage": stage,
        "messages": messages_kind,
        "events_per_second": round(rate, 1),
        "ratio_to_ceiling": round(rate / ceiling, 4) if ceiling else None,
    }
    if noop is not None:
        out["ratio_to_faust_noop"] = round(rate / noop, 4) if noop else None
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
        now = time.time()
        for n in sorted(config.model_counts):
            new = [{"model_id": f"mem-{i:07d}", "ts": now} for i in range(done, n)]
            asyncio.run(
                produce(
                    bootstrap,
                    settings.topic("usage"),
                    list(messages(new, config.partitions, config.envelope_size)),
                )
            )
            w.rate_until(n)
            done = n
            gc.collect()
            rss = w.rss_bytes()
            out.append(
                {
                    "models": n,
                    "worker_rss_bytes": rss,
                    "worker_bytes_per_model": round((rss - base) / n, 1),
                    "engine_bytes_per_model": round(engine_bytes_per_model(config.policy, n), 1),
                }
            )
    finally:
        w.stop()
    return out


def format_report(report: BenchReport) -> str:
    lines = [
        f"{'stage':34} {'messages':14} {'events/s':>12} {'/ceiling':>9} {'/faust':>8}",
        "-" * 81,
    ]
    for r in report.rows:
        noop = r.get("ratio_to_faust_noop")
        lines.append(
            f"{r['stage']:34} {r['messages']:14} {r['events_per_second']:>12,.0f} "
            f"{r['ratio_to_ceiling']:>9.1%} {'' if noop is None else f'{noop:.1%}':>8}"
        )
    lat = report.latency
    if lat.get("commands"):
        lines.append("")
        lines.append(
            f"event -> command latency at {lat['offered_per_second']:,.0f} events/s "
            f"({lat['commands']:,} commands): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"max {lat['max_ms']} ms"
        )
    if report.memory:
        lines.append("")
        lines.append(
            f"{'models':>8} {'worker RSS':>12} {'worker B/model':>15} {'engine B/model':>15}"
        )
        for m in report.memory:
            lines.append(
                f"{m['models']:>8,} {m['worker_rss_bytes'] / 2**20:>9.1f} MB "
                f"{m['worker_bytes_per_model']:>15,.0f} {m['engine_bytes_per_model']:>15,.0f}"
            )
    return "\n".join(lines)


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
        "--models",
        default=",".join(map(str, BenchConfig.model_counts)),
        help="served-model counts for the memory stage, comma separated",
    )
    p.add_argument("--policy", default=BenchConfig.policy, help="worker policy")
    p.add_argument("--json", dest="json_out", help="write the figures as JSON here")
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    config = BenchConfig(
        trace=args.trace,
        single_events=args.single_events,
        envelope_events=args.envelope_events,
        envelope_size=args.envelope_size,
        partitions=args.partitions,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        model_counts=tuple(int(x) for x in args.models.split(",") if x),
        policy=args.policy,
        json_out=args.json_out,
    )
    return bench(config)


def bench(config: BenchConfig) -> int:
    import tempfile

    started = time.monotonic()
    bootstrap = WarmcastSettings().kafka_bootstrap_servers
    with (
        tempfile.TemporaryDirectory(prefix="warmcast-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        report = run_bench(config, bootstrap, Path(tmp))
    report.config["seconds"] = round(time.monotonic() - started, 1)
    print(format_report(report))
    if config.json_out:
        Path(config.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.json_out).write_bytes(orjson.dumps(report.__dict__, option=orjson.OPT_INDENT_2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from tools.cli import main as cli

    return int(cli(["bench", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
