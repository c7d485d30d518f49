"""What the bench shares between its stages: its settings, the event mix, a worker
process to measure, and the event -> command latency measurement."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import free_port, terminate
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tools.traces import load_trace
from tools.workerproc import start_worker

REPO = Path(__file__).resolve().parent.parent


SAMPLE = Path(__file__).resolve().parent / "samples"


#: Least time between two reads of a worker's usage-event counter. Each read asks
#: ``/metrics`` for that one series (``name[]``): rendering every series costs the worker
#: CPU (about a tenth of it at one read every 20 ms).
POLL_SECONDS = 0.1


#: The latency stage's reader: the embedded broker holds an empty fetch for the whole wait,
#: which the reader would add to every latency it measures.
READER_FETCH_WAIT_MS = 5


@dataclass
class BenchConfig:
    trace: str | None = None
    single_events: int = 20_000
    envelope_events: int = 300_000
    envelope_size: int = 100
    partitions: int = 4
    latency_rate: int = 1000
    latency_seconds: float = 10.0
    latency_linger_ms: float = 5.0
    model_counts: tuple[int, ...] = (1_000, 10_000, 100_000)
    rounds: int = 2
    policy: str = "hybrid"
    json_out: str | None = None
    stages: tuple[str, ...] = ("throughput", "latency", "memory", "probe", "shadow")
    probe_models: int = 200_000
    probe_seconds: float = 20.0
    broker: str = "tansu"  # the local broker started when no bootstrap is given


#: The stages of a run, in the order they run (``--only`` picks some).
STAGES = BenchConfig.stages


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


def rate_from_samples(samples: Sequence[tuple[float, float]], expect: int) -> float:
    """Events per second from ``(time, events counted)`` samples of a run of ``expect``.

    The rate is taken between samples strictly inside the run (the first that counted
    something, the last that had not counted everything), so how often the counter is read
    does not bias it. With fewer than two such samples: from the first sample that counted
    something to the first that counted everything, or, when one sample saw the run start
    and end, from the last sample that counted nothing (a lower bound).
    """
    inside = [(t, n) for t, n in samples if 0 < n < expect]
    if len(inside) >= 2:
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        if t1 > t0 and n1 > n0:
            return (n1 - n0) / (t1 - t0)
    counted = [(t, n) for t, n in samples if n > 0]
    done = [(t, n) for t, n in counted if n >= expect]
    if not done:
        raise ValueError(f"no sample counted all {expect} events")
    (t0, n0), (t1, n1) = counted[0], done[0]
    if t1 > t0 and n1 > n0:
        return (n1 - n0) / (t1 - t0)
    idle = [t for t, n in samples if n <= 0 and t < t1]
    if idle:
        return n1 / (t1 - idle[-1])
    raise ValueError(
        f"all {expect} events were counted before the first sample: too few events to time"
    )


class WorkerProcess:
    """A ``warmcast worker`` subprocess with its web port, for timing and memory."""

    def __init__(
        self,
        bootstrap: str,
        ns: str,
        workdir: Path,
        config: BenchConfig,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.process, self.log_path = start_worker(
            bootstrap,
            ns,
            workdir,
            port=self.port,
            partitions=config.partitions,
            policy=config.policy,
            extra_env=extra_env,
        )

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log (it lives in the run's temporary directory)."""
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def failed(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what}; the worker's log ends with:\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics?name[]={name}"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.failed(f"the worker exited with code {self.process.returncode}")
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if orjson.loads(response.read()).get("ready"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise self.failed(f"the worker did not become ready in {timeout:.0f} s")

    def count_until(self, expect: int, timeout: float = 600.0) -> list[tuple[float, float]]:
        """Read the usage-event counter at most every ``POLL_SECONDS`` until ``expect``.

        Returns the ``(time, count)`` samples; each is timed at the middle of its request.
        """
        deadline = time.monotonic() + timeout
        samples: list[tuple[float, float]] = []
        while True:
            before = time.monotonic()
            n = self.metric("warmcast_usage_events_total")
            after = time.monotonic()
            samples.append(((before + after) / 2, n))
            if n >= expect:
                return samples
            if self.process.poll() is not None:
                raise self.failed(f"the worker exited after counting {n:,.0f} usage events")
            if after > deadline:
                raise self.failed(f"the worker counted {n:,.0f} of {expect:,} usage events")
            time.sleep(max(0.0, before + POLL_SECONDS - time.monotonic()))

    def rate_until(self, expect: int, timeout: float = 600.0) -> float:
        """Events per second while the worker counts its first ``expect`` usage events."""
        return rate_from_samples(self.count_until(expect, timeout), expect)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        terminate(self.process, timeout=30)


@contextlib.contextmanager
def collector_frozen() -> Iterator[None]:
    """Keep what this process holds out of the garbage collector's passes for a while.

    The latency stages time events with the bench's own producer and reader, in a process
    that also holds every message of the throughput stages: a collection passing over
    those would be timed as latency.

    >>> with collector_frozen():
    ...     gc.get_freeze_count() > 0
    True
    >>> gc.get_freeze_count()
    0
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def latency(
    bootstrap: str,
    settings: WarmcastSettings,
    config: BenchConfig,
    read: str = "warmup",
    group_of: Callable[[float], str] | None = None,
) -> dict[str, Any]:
    """Produce new-model events at ``config.latency_rate``/s for ``config.latency_seconds``;
    time each until its warmup command arrives.

    Each latency runs from just before the event is handed to the producer (which lingers
    ``config.latency_linger_ms`` to gather a request, as Kafka's own producer does by
    default) to the return of the fetch that brought its command to a reader that waits at
    most ``READER_FETCH_WAIT_MS`` for data. One untimed event per partition goes first; the
    slowest of their latencies is ``first_events_ms``.

    ``read="usage"`` (topics no worker reads) times the events themselves: one trip through
    the broker, producer to reader, with nothing in between. ``group_of(sent)`` names the
    group of an event sent at ``time.monotonic()`` value ``sent``; each group's figures are
    then under ``groups`` too.
    """
    consumer = AIOKafkaConsumer(
        settings.topic(read),
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=READER_FETCH_WAIT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=config.latency_linger_ms)
    await consumer.start()
    try:
        await producer.start()
        try:
            with collector_frozen():
                timed = await _latency(
                    consumer,
                    producer,
                    settings,
                    config.latency_rate,
                    config.latency_seconds,
                    group_of,
                )
            return {**timed, "producer_linger_ms": config.latency_linger_ms}
        finally:
            await producer.stop()
    finally:
        await consumer.stop()


async def _latency(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    settings: WarmcastSettings,
    rate: int,
    seconds: float,
    group_of: Callable[[float], str] | None = None,
) -> dict[str, Any]:
    await _await_assignment(consumer)
    trips = _Trips(consumer, producer, settings)
    run = uuid.uuid4().hex[:6]
    reader = asyncio.create_task(trips.read())
    try:
        first_ms = await _first_events(trips, reader, run)
        ids = [f"lat-{run}-{i}" for i in range(int(rate * seconds))]
        start, offered = await _offer(trips, ids, rate)
        await trips.arrived(reader, ids, 60)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return _trip_figures(trips, ids, start, offered, first_ms, group_of)


async def _await_assignment(consumer: AIOKafkaConsumer) -> None:
    """Wait (30 s at most) until the reader holds its partitions, then resolve their ends
    before the first event is sent."""
    deadline = time.monotonic() + 30
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the latency reader was assigned no partition of {consumer.subscription()}"
            )
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)


class _Trips:
    """The latency stage's events: when each was sent and when its answer came back."""

    def __init__(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, settings: WarmcastSettings
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.topic = settings.topic("usage")
        self.partitions = settings.partitions
        self.sent: dict[str, float] = {}
        self.got: dict[str, float] = {}
        self.progress = asyncio.Event()

    async def read(self) -> None:
        """Stamp each answer with the return of the fetch that brought it, for ever."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    model_id = orjson.loads(r.value)["model_id"]
                    if model_id in self.sent and model_id not in self.got:
                        self.got[model_id] = now
            self.progress.set()

    async def send(self, model_id: str) -> None:
        """Hand a new-model event for ``model_id`` to the producer, stamped just before."""
        self.sent[model_id] = time.monotonic()
        await self.producer.send(
            self.topic,
            orjson.dumps({"model_id": model_id, "ts": time.time()}),
            key=model_id.encode(),
            partition=partition_for(model_id, self.partitions),
        )

    async def arrived(self, reader: asyncio.Task[None], ids: list[str], timeout: float) -> bool:
        """Whether every one of ``ids`` came back within ``timeout``; the reader's error if
        it failed."""
        deadline = time.monotonic() + timeout
        while True:
            self.progress.clear()
            if all(m in self.got for m in ids):
                return True
            if reader.done():
                reader.result()  # the reader failed: its error, not a timeout
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)

    def seconds(self, ids: list[str]) -> list[tuple[str, float]]:
        """``(model_id, latency)`` of each of ``ids`` that came back, in order."""
        return [(m, self.got[m] - self.sent[m]) for m in ids if m in self.got]


async def _first_events(trips: _Trips, reader: asyncio.Task[None], run: str) -> float:
    """Untimed: one event per partition first, until their commands arrive; the slowest
    of their latencies in ms. A worker that has just caught up with a backlog can answer
    its first events late, once (it has taken up to a second); that is reported apart
    (first_events_ms), not in the percentiles of the steady load."""
    warm: dict[int, str] = {}
    k = 0
    while len(warm) < trips.partitions:
        model_id = f"lat-{run}-warm-{k}"
        warm.setdefault(partition_for(model_id, trips.partitions), model_id)
        k += 1
    for model_id in warm.values():
        await trips.send(model_id)
    if not await trips.arrived(reader, list(warm.values()), 60):
        raise RuntimeError("nothing came back for the latency stage's first events in 60 s")
    return max(latency for _, latency in trips.seconds(list(warm.values()))) * 1000


async def _offer(trips: _Trips, ids: list[str], rate: int) -> tuple[float, float]:
    """Send ``ids`` at ``rate`` per second; the start and the rate achieved."""
    start = time.monotonic()
    for i, model_id in enumerate(ids):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await trips.send(model_id)
    return start, len(ids) / (time.monotonic() - start)


def _trip_figures(
    trips: _Trips,
    ids: list[str],
    start: float,
    offered: float,
    first_ms: float,
    group_of: Callable[[float], str] | None,
) -> dict[str, Any]:
    """The latency stage's figures: overall, by second of the run, and by group."""
    back = trips.seconds(ids)
    lat = sorted(latency for _, latency in back)
    by_second: dict[int, list[float]] = {}
    for m, latency in back:
        by_second.setdefault(int(trips.sent[m] - start), []).append(latency)
    out: dict[str, Any] = {
        "offered_per_second": round(offered, 1),
        "events": len(ids),
        "commands": len(lat),
        "first_events_ms": round(first_ms, 2),
    }
    if lat:
        out.update(
            latency_figures(lat),
            # how the latency moves over the run (the embedded broker slows as it fills)
            p99_ms_by_second=[round(1000 * _p99(by_second[k]), 1) for k in sorted(by_second)],
        )
    if group_of is not None:
        groups: dict[str, list[float]] = {}
        for m, latency in back:
            groups.setdefault(group_of(trips.sent[m]), []).append(latency)
        out["groups"] = {g: latency_figures(sorted(v)) for g, v in sorted(groups.items())}
    return out


def latency_figures(lat: list[float]) -> dict[str, Any]:
    """p50, p99, max and mean in milliseconds of latencies in seconds, sorted."""
    return {
        "commands": len(lat),
        "p50_ms": round(1000 * lat[len(lat) // 2], 2),
        "p99_ms": round(1000 * _p99(lat), 2),
        "max_ms": round(1000 * lat[-1], 2),
        "mean_ms": round(1000 * statistics.fmean(lat), 2),
    }


def _p99(values: list[float]) -> float:
    """The 99th percentile of ``values`` (nearest rank, as in the latency table).

    >>> _p99([float(i) for i in range(1, 201)])
    199.0
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def new_models(
    w: WorkerProcess,
    bootstrap: str,
    settings: WarmcastSettings,
    config: BenchConfig,
    done: int,
    n: int,
    prefix: str = "mem",
) -> float:
    """Send the worker, idle after ``done`` events, one event of each new served model up
    to ``n``, in envelopes; wait until it has counted them; its intake in models/s."""
    now = time.time()
    new = [{"model_id": f"{prefix}-{i:07d}", "ts": now} for i in range(done, n)]
    envelopes = list(messages(new, config.partitions, config.envelope_size))
    sent = time.monotonic()
    asyncio.run(produce(bootstrap, settings.topic("usage"), envelopes))
    samples = [(sent, 0.0)] + [(t, c - done) for t, c in w.count_until(n)]
    return rate_from_samples(samples, n - done)
