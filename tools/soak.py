"""``warmcast soak``: a worker under steady load for a while, and its memory over time.

Starts the embedded broker (or uses ``--bootstrap``) and one worker with checkpoints on,
produces usage events at ``--rate`` per second in envelopes, with live timestamps, over
``--models`` served models (Zipf-like popularity, so that some are hot and most are
rare), for ``--minutes``; samples the worker's resident memory every
``--sample-seconds``. Reports the first, last and largest RSS and the slope per minute
(least squares, after the first ``--warmup-minutes``), and writes everything as JSON.

A flat line after the warm-up means no leak at that load; the slope says how flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker, free_port
from streams.partitioning import partition_for
from tools.workerproc import start_worker


@dataclass
class SoakConfig:
    minutes: float = 10.0
    rate: float = 500.0
    models: int = 2000
    envelope: int = 50
    partitions: int = 4
    policy: str = "hybrid"
    sample_seconds: float = 5.0
    warmup_minutes: float = 2.0
    bootstrap: str | None = None
    json_out: str | None = None
    seed: int = 7


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_bytes: int
    events_produced: int
    events_processed: float
    tracked_models: float


@dataclass
class SoakReport:
    config: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute.

    >>> slope_per_minute([(0, 100.0), (60, 110.0), (120, 120.0)])
    10.0
    >>> slope_per_minute([(0, 5.0)])
    0.0
    """
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


def summarise(samples: Sequence[Sample], warmup_seconds: float) -> dict[str, Any]:
    """First, last, largest RSS and the slope after the warm-up (whole run if too short).

    >>> s = [Sample(t, 100 + (t > 45) * 50, 0, 0.0, 0.0) for t in range(0, 300, 30)]
    >>> summarise(s, 60.0)["slope_bytes_per_minute"]
    0.0
    """
    if not samples:
        return {}
    rss = [s.rss_bytes for s in samples]
    steady = [s for s in samples if s.t >= warmup_seconds] or list(samples)
    slope = slope_per_minute([(s.t, float(s.rss_bytes)) for s in steady])
    first = steady[0].rss_bytes
    return {
        "samples": len(samples),
        "rss_first_bytes": rss[0],
        "rss_after_warmup_bytes": first,
        "rss_last_bytes": rss[-1],
        "rss_max_bytes": max(rss),
        "slope_bytes_per_minute": round(slope, 1),
        "slope_share_per_hour": round(slope * 60 / first, 4) if first else None,
    }


def zipf_weights(n: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(n)]


class SoakWorker:
    """``warmcast worker`` in a subprocess, with checkpoints on."""

    def __init__(self, bootstrap: str, workdir: Path, config: SoakConfig) -> None:
        self.ns = "soak" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.process, self.log_path = start_worker(
            bootstrap,
            self.ns,
            workdir,
            port=self.port,
            partitions=config.partitions,
            policy=config.policy,
            extra_env={
                "WARMCAST_CHECKPOINT_KEY": secrets.token_hex(16),
                "WARMCAST_CHECKPOINT_INTERVAL_SECONDS": "30",
            },
            new_session=True,
        )

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        out: dict[str, float] = {}
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
        return out

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited; see {self.log_path}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if orjson.loads(response.read()).get("ready"):
                        return
            time.sleep(0.2)
        raise RuntimeError("the worker did not become ready")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


async def produce_load(
    bootstrap: str, topic: str, config: SoakConfig, stop_at: float, produced: list[int]
) -> None:
    """Usage events at ``config.rate`` per second, live timestamps, envelopes per owning
    partition; ``produced[0]`` counts them."""
    rng = random.Random(config.seed)
    models = [f"soak-model-{i}" for i in range(config.models)]
    weights = zipf_weights(len(models))
    owner = {m: partition_for(m, config.partitions) for m in models}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    tick = 0.2
    try:
        started = time.monotonic()
        due = 0.0
        while time.monotonic() < stop_at:
            due += config.rate * tick
            n, due = int(due), due - int(due)
            now = time.time()
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for model in rng.choices(models, weights, k=n):
                event = {"model_id": model, "ts": now, "cold_start": rng.random() < 0.05}
                by_partition.setdefault(owner[model], []).append(event)
            for partition, events in by_partition.items():
                for i in range(0, len(events), config.envelope):
                    chunk = orjson.dumps(events[i : i + config.envelope])
                    await producer.send(topic, chunk, partition=partition)
            produced[0] += n
            ticks = round((time.monotonic() - started) / tick) + 1
            await asyncio.sleep(max(started + ticks * tick - time.monotonic(), 0))
        await producer.flush()
    finally:
        await producer.stop()


async def soak(config: SoakConfig, workdir: Path) -> SoakReport:
    report = SoakReport(config=asdict(config))
    broker = None
    bootstrap = config.bootstrap
    if bootstrap is None:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    worker = SoakWorker(bootstrap, workdir, config)
    try:
        await asyncio.to_thread(worker.wait_ready)
        began = time.monotonic()
        stop_at = began + config.minutes * 60
        produced = [0]
        load = asyncio.ensure_future(
            produce_load(bootstrap, f"{worker.ns}.usage.v1", config, stop_at, produced)
        )
        next_sample = began
        while not load.done():
            await asyncio.sleep(max(next_sample - time.monotonic(), 0))
            next_sample += config.sample_seconds
            metrics = await asyncio.to_thread(worker.metrics)
            sample = Sample(
                t=round(time.monotonic() - began, 2),
                rss_bytes=worker.rss_bytes(),
                events_produced=produced[0],
                events_processed=metrics.get("warmcast_usage_events_total", 0.0),
                tracked_models=metrics.get("warmcast_tracked_models", 0.0),
            )
            report.samples.append(sample)
            print(
                f"{sample.t:7.0f}s  rss {sample.rss_bytes / 2**20:7.1f} MiB  "
                f"produced {sample.events_produced:>9}  processed {sample.events_processed:>9.0f}",
                flush=True,
            )
        await load
        deadline = time.monotonic() + 120
        processed = 0.0
        while time.monotonic() < deadline:
            processed = (await asyncio.to_thread(worker.metrics)).get(
                "warmcast_usage_events_total", 0.0
            )
            if processed >= produced[0]:
                break
            await asyncio.sleep(0.5)
        report.summary = summarise(report.samples, config.warmup_minutes * 60)
        report.summary.update(
            events_produced=produced[0],
            events_processed=processed,
            worker_alive=worker.process.poll() is None,
            rate_achieved=round(produced[0] / (config.minutes * 60), 1),
        )
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
    return report


def format_summary(summary: dict[str, Any]) -> str:
    mib = 2**20
    return "\n".join(
        [
            f"samples            {summary['samples']}",
            f"RSS first          {summary['rss_first_bytes'] / mib:.1f} MiB",
            f"RSS after warm-up  {summary['rss_after_warmup_bytes'] / mib:.1f} MiB",
            f"RSS last           {summary['rss_last_bytes'] / mib:.1f} MiB",
            f"RSS max            {summary['rss_max_bytes'] / mib:.1f} MiB",
            f"slope              {summary['slope_bytes_per_minute'] / 1024:.1f} KiB/min "
            f"({summary['slope_share_per_hour']:.2%} of RSS per hour)",
            f"events             {summary['events_produced']} produced, "
            f"{summary['events_processed']:.0f} processed",
        ]
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "soak",
        help="run a worker under steady load and report its memory over time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = SoakConfig()
    p.add_argument("--minutes", type=float, default=d.minutes, help="how long the load runs")
    p.add_argument("--rate", type=float, default=d.rate, help="usage events per second")
    p.add_argument("--models", type=int, default=d.models, help="served models in the load")
    p.add_argument("--envelope", type=int, default=d.envelope, help="events per message")
    p.add_argument("--partitions", type=int, default=d.partitions)
    p.add_argument("--policy", default=d.policy)
    p.add_argument("--sample-seconds", type=float, default=d.sample_seconds)
    p.add_argument("--warmup-minutes", type=float, default=d.warmup_minutes)
    p.add_argument("--bootstrap", help="a running broker (default: start the embedded one)")
    p.add_argument("--json", dest="json_out", help="write samples and summary as JSON here")
    p.add_argument("--workdir", default=".warmcast/soak", help="worker logs and data")
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        models=args.models,
        envelope=args.envelope,
        partitions=args.partitions,
        policy=args.policy,
        sample_seconds=args.sample_seconds,
        warmup_minutes=args.warmup_minutes,
        bootstrap=args.bootstrap,
        json_out=args.json_out,
    )
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(soak(config, workdir))
    print(format_summary(report.summary))
    if config.json_out:
        Path(config.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.json_out).write_bytes(
            orjson.dumps(
                {
                    "config": report.config,
                    "summary": report.summary,
                    "samples": [asdict(s) for s in report.samples],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        print(f"wrote {config.json_out}")
    ok = report.summary.get("worker_alive") and (
        report.summary["events_processed"] >= report.summary["events_produced"]
    )
    return 0 if ok else 1
