"""``warmcast hostile``: a hostile mixed stream through a real worker, every message accounted.

Starts the embedded broker (or uses ``--bootstrap``) and a worker with checkpoints and
signed controls on, then publishes ``--messages`` messages of a seeded mix: good events
keyed as the worker expects, envelopes, events compressed with each of Kafka's codecs,
events on partitions that do not own their model (forwarded), unkeyed events, malformed
JSON, schema violations, events stamped beyond the future bound and just inside it,
envelopes with bad items among good ones, oversize messages (usage and metric), metric
events good and bad, and forged operator controls (unsigned, wrongly signed, stamped in
2100). With ``--kill`` the worker is killed with SIGKILL once, half-way, and started again.

Then it reads everything back as a downstream consumer would and checks:

- every bad message or envelope item has a dead letter naming its topic, partition, offset
  (and item), and no good one has: the unique dead letters equal the bad items exactly;
- every served model's ``requests_total`` in the rolling health is exactly the requests
  it was sent: none lost, none counted twice (not even those read again after the kill,
  nor events forwarded again by a partition read again);
- no forged control took effect: no ``release`` command of an emergency stop, the worker
  not paused;
- the worker is up at the end.

The report (printed, and written as JSON with ``--json``) gives the counts of each kind.
Exit status 0 when every check holds, 1 when one fails, 2 on a usage or broker error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import random
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import EmbeddedBroker, free_port
from streams.kafka import allow_larger_records
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tools.workerproc import start_worker

#: Kafka's codecs, and none.
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
#: The larger messages are 1.2 MB: above the worker's message bound (1 MiB) and above the
#: default producer request limit (1,000,000 bytes), so that dead letters of them must
#: be cut to be sent at all.
OVERSIZE_BYTES = 1_200_000

#: Share of each kind of message in the mix; oversize messages and forged controls are
#: counted apart (``HostileConfig.oversize``, ``HostileConfig.forged``).
MIX: dict[str, float] = {
    "keyed": 0.34,
    "envelope": 0.08,
    "compressed": 0.20,
    "foreign": 0.08,
    "unkeyed": 0.04,
    "mixed_envelope": 0.05,
    "malformed": 0.06,
    "schema": 0.06,
    "future": 0.03,
    "near_future": 0.01,
    "metric": 0.04,
    "metric_bad": 0.01,
}


@dataclass
class HostileConfig:
    messages: int = 100_000
    partitions: int = 4
    models: int = 400
    oversize: int = 12
    forged: int = 24
    kill: bool = True
    seed: int = 11
    policy: str = "hybrid"
    bootstrap: str | None = None
    json_out: str | None = None
    timeout: float = 900.0


@dataclass
class Planned:
    """One message to publish, with what the worker must make of it."""

    kind: str
    topic: str  # usage, metrics or control (the name in the namespace is found later)
    value: bytes
    key: bytes | None = None
    partition: int | None = None  # None: the producer's partitioner
    codec: str = "none"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: served models and the requests of the good events in it
    requests: Counter[str] = field(default_factory=Counter)
    #: None: the whole message is bad; an int: that envelope item is bad
    bad: list[int | None] = field(default_factory=list)


def plan(config: HostileConfig, now: float) -> list[Planned]:
    """The seeded mix of ``config.messages`` messages, event times around ``now``.

    >>> mix = plan(HostileConfig(messages=2000, oversize=2, forged=3), now=1.7e9)
    >>> len(mix)
    2000
    >>> kinds = Counter(m.kind for m in mix)
    >>> kinds["oversize_usage"] + kinds["oversize_metric"], kinds["forged"]
    (2, 3)
    >>> all(m.bad or m.requests or m.kind in ("forged", "metric") for m in mix)
    True
    """
    rng = random.Random(config.seed)
    n = config.partitions
    models = [f"hostile-{i}" for i in range(config.models)]
    owner = {m: partition_for(m, n) for m in models}
    out: list[Planned] = []
    for i in range(config.oversize):
        out.append(_oversize(rng, models, now, metric=i % 3 == 2))
    for i in range(config.forged):
        out.append(_forged(i, now))
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    while len(out) < config.messages:
        kind = rng.choices(kinds, weights)[0]
        out.append(_message(kind, rng, models, owner, n, now))
    rng.shuffle(out)
    return out


def _event(model: str, ts: float, count: int = 1) -> dict[str, Any]:
    return {"model_id": model, "ts": round(ts, 3), "count": count, "cold_start": False}


def _message(
    kind: str, rng: random.Random, models: list[str], owner: dict[str, int], n: int, now: float
) -> Planned:
    model = rng.choice(models)
    ts = now + rng.uniform(-30.0, 0.0)
    try:
        make = _MESSAGES[kind]
    except KeyError:
        raise ValueError(f"no such kind of message: {kind}") from None
    return make(_Draw(kind, rng, models, owner, n, now, model, ts))


@dataclass(slots=True)
class _Draw:
    """What a message of one kind is made from: the seeded draws so far and the fleet."""

    kind: str
    rng: random.Random
    models: list[str]
    owner: dict[str, int]
    n: int
    now: float
    model: str
    ts: float


def _keyed(d: _Draw) -> Planned:
    ts = d.now + 3500.0 if d.kind == "near_future" else d.ts  # inside the future bound (3,600 s)
    codec = d.rng.choice(CODECS[1:]) if d.kind == "compressed" else "none"
    p = Planned(d.kind, "usage", orjson.dumps(_event(d.model, ts)), d.model.encode(), None, codec)
    p.requests[d.model] += 1
    return p


def _envelope(d: _Draw) -> Planned:
    home = d.owner[d.model]
    chosen = [m for m in d.rng.sample(d.models, 40) if d.owner[m] == home][:20] or [d.model]
    events = [_event(m, d.ts + j * 0.001, d.rng.randint(1, 3)) for j, m in enumerate(chosen)]
    p = Planned(d.kind, "usage", orjson.dumps(events), b"envelope", home)
    for e in events:
        p.requests[e["model_id"]] += e["count"]
    return p


def _misrouted(d: _Draw) -> Planned:
    home = d.owner[d.model]
    partition = (home + d.rng.randint(1, d.n - 1)) % d.n if d.kind == "foreign" else None
    key = b"elsewhere" if d.kind == "foreign" else None
    p = Planned(d.kind, "usage", orjson.dumps(_event(d.model, d.ts)), key, partition)
    p.requests[d.model] += 1
    return p


def _mixed_envelope(d: _Draw) -> Planned:
    rng, ts = d.rng, d.ts
    items: list[Any] = []
    p = Planned(d.kind, "usage", b"", b"mixed", rng.randrange(d.n))
    for j in range(6):
        m = rng.choice(d.models)
        roll = rng.random()
        if roll < 0.2:
            items.append({"model_id": m, "ts": ts, "count": -1})  # a count below 1
            p.bad.append(j)
        elif roll < 0.3:
            items.append({"model_id": m, "ts": d.now + 7200.0})  # beyond the future bound
            p.bad.append(j)
        else:
            items.append(_event(m, ts))
            p.requests[m] += 1
    p.value = orjson.dumps(items)
    return p


def _malformed(d: _Draw) -> Planned:
    garbage = d.rng.choice([b"\xff\xfe\x00garbage", b'{"model_id": "x", "ts": ', b"[1, 2,", b""])
    return Planned(d.kind, "usage", garbage, d.model.encode(), None, bad=[None])


def _schema(d: _Draw) -> Planned:
    model, ts = d.model, d.ts
    bad = d.rng.choice(
        [
            {"model_id": "", "ts": ts},
            {"model_id": model},
            {"model_id": model, "ts": ts, "count": 0},
            {"model_id": model, "ts": "yesterday"},
            {"model_id": model * 50, "ts": ts},
        ]
    )
    return Planned(d.kind, "usage", orjson.dumps(bad), model.encode(), None, bad=[None])


def _future(d: _Draw) -> Planned:
    value = orjson.dumps(_event(d.model, d.now + 7200.0))
    return Planned(d.kind, "usage", value, d.model.encode(), None, bad=[None])


def _metric(d: _Draw) -> Planned:
    value = 12.5 if d.kind == "metric" else "slow"
    event = {"model_id": d.model, "ts": d.ts, "name": "load_time_seconds", "value": value}
    bad: list[int | None] = [] if d.kind == "metric" else [None]
    return Planned(d.kind, "metrics", orjson.dumps(event), d.model.encode(), bad=bad)


_MESSAGES: dict[str, Callable[[_Draw], Planned]] = {
    "keyed": _keyed,
    "compressed": _keyed,
    "near_future": _keyed,
    "envelope": _envelope,
    "foreign": _misrouted,
    "unkeyed": _misrouted,
    "mixed_envelope": _mixed_envelope,
    "malformed": _malformed,
    "schema": _schema,
    "future": _future,
    "metric": _metric,
    "metric_bad": _metric,
}


def _oversize(rng: random.Random, models: list[str], now: float, metric: bool) -> Planned:
    model = rng.choice(models)
    event: dict[str, Any] = {"model_id": model, "ts": now, "node": "x" * OVERSIZE_BYTES}
    if metric:
        event.update(name="load_time_seconds", value=1.0)
        value = orjson.dumps(event)
        return Planned("oversize_metric", "metrics", value, model.encode(), bad=[None])
    value = orjson.dumps(event) if rng.random() < 0.5 else b"{" + b"x" * OVERSIZE_BYTES
    return Planned("oversize_usage", "usage", value, model.encode(), bad=[None])


def _forged(i: int, now: float) -> Planned:
    """An emergency stop that releases the fleet, forged one of three ways."""
    body = {"command": "emergency_stop", "release": True, "id": f"forged-{i}-{uuid.uuid4().hex}"}
    way = i % 3
    headers: list[tuple[str, bytes]] = []
    if way == 1:  # signed with a key that is not the control key
        body["ts"] = now
        raw = orjson.dumps(body)
        forged_key = secrets.token_bytes(32)
        digest = hmac.new(forged_key, raw, hashlib.sha256).hexdigest()
        headers.append(("warmcast.signature", f"sha256={digest}".encode()))
        return Planned("forged", "control", raw, None, headers=headers)
    if way == 2:  # stamped in 2100, to outrank every later command
        body["ts"] = 4_102_444_800.0
    return Planned("forged", "control", orjson.dumps(body), None, headers=headers)


# -- running it -----------------------------------------------------------------------------


@dataclass
class Sent:
    planned: Planned
    partition: int
    offset: int


async def publish(
    bootstrap: str, topics: dict[str, str], messages: Sequence[Planned]
) -> list[Sent]:
    """Publish ``messages`` with one producer per codec; each message's partition and
    offset as the broker wrote it."""
    producers: dict[str, AIOKafkaProducer] = {}
    for codec in CODECS:
        producers[codec] = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            max_request_size=4 << 20,
            linger_ms=5,
        )
        await producers[codec].start()
    try:
        futures = []
        for i, m in enumerate(messages):
            producer = producers[m.codec]
            futures.append(
                await producer.send(
                    topics[m.topic], m.value, key=m.key, partition=m.partition, headers=m.headers
                )
            )
            if i % 2000 == 1999:
                await asyncio.gather(*futures[-2000:])
        metadata = await asyncio.gather(*futures)
    finally:
        for producer in producers.values():
            await producer.stop()
    return [Sent(m, md.partition, md.offset) for m, md in zip(messages, metadata, strict=True)]


def expected_dead_letters(sent: Sequence[Sent], topics: dict[str, str]) -> set[tuple[Any, ...]]:
    """(topic, partition, offset, envelope item or None) of every bad item sent."""
    out: set[tuple[Any, ...]] = set()
    for s in sent:
        if s.planned.topic == "control":
            continue
        for index in s.planned.bad:
            out.add((topics[s.planned.topic], s.partition, s.offset, index))
    return out


async def read_all(bootstrap: str, topic: str, idle_seconds: float = 3.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, until nothing new comes for a while."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_bytes=16 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_seconds:
            batch = await consumer.getmany(timeout_ms=500)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def dead_letter_ids(records: Sequence[Any]) -> Counter[tuple[Any, ...]]:
    """Each dead letter's (topic, partition, offset, item) from its headers."""
    out: Counter[tuple[Any, ...]] = Counter()
    for r in records:
        h = {k: v.decode() for k, v in (r.headers or ())}
        index = h.get("warmcast.envelope-index")
        out[
            (
                h.get("warmcast.original-topic"),
                int(h.get("warmcast.original-partition", -1)),
                int(h.get("warmcast.original-offset", -1)),
                None if index is None else int(index),
            )
        ] += 1
    return out


class Runner:
    """The worker under test, started, killed and started again."""

    def __init__(self, bootstrap: str, workdir: Path, config: HostileConfig) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.config = config
        self.ns = "hostile" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.control_key = secrets.token_hex(32)
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0

    @property
    def topics(self) -> dict[str, str]:
        s = WarmcastSettings(topic_namespace=self.ns)
        return {name: s.topic(name) for name in ("usage", "metrics", "control", "warmup")}

    def start(self) -> None:
        self.starts += 1
        logs = self.workdir / f"start{self.starts}"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            "WARMCAST_CHECKPOINT_KEY": secrets.token_hex(32),
            "WARMCAST_CHECKPOINT_INTERVAL_SECONDS": "5",
            "WARMCAST_CONTROL_KEY": self.control_key,
            "WARMCAST_CONTROL_TOKEN": self.token,
            "WARMCAST_DATA_DIR": str(self.workdir / "data"),  # the same for every start
        }
        self.process, self.log_path = start_worker(
            self.bootstrap,
            self.ns,
            logs,
            port=self.port,
            partitions=self.config.partitions,
            policy=self.config.policy,
            extra_env=env,
            new_session=True,
        )
        self.wait(lambda: bool(self.get("/health")), 180, "the worker to answer")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            with contextlib.suppress(Exception):
                return orjson.loads(exc.read())
            return None
        except OSError:
            return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, condition: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the worker exited while waiting for {what}")
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    def consumed(self) -> float:
        text = self.metrics_text()
        usage = self.topics["usage"]
        for line in text.splitlines():
            if line.startswith(f'warmcast_messages_consumed_total{{topic="{usage}"}}'):
                return float(line.rpartition(" ")[2])
        return 0.0

    def metrics_text(self) -> str:
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                return None
        return self.process.returncode


async def run_hostile(config: HostileConfig, workdir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        bootstrap = config.bootstrap
        if bootstrap is None:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        runner = Runner(bootstrap, workdir, config)
        runner.start()
        try:
            return await _drive(runner, config)
        finally:
            runner.stop()
    raise AssertionError("unreachable")


async def _drive(runner: Runner, config: HostileConfig) -> dict[str, Any]:
    if config.oversize:  # a broker that refuses them would keep them from the worker
        settings = WarmcastSettings(
            kafka_bootstrap_servers=runner.bootstrap, topic_namespace=runner.ns
        )
        await allow_larger_records(settings, ("usage", "metrics"), 4 * OVERSIZE_BYTES)
    started = time.monotonic()
    sent, killed_at = await _send(runner, config)
    produced_s = time.monotonic() - started
    expected_dead = expected_dead_letters(sent, runner.topics)
    requests: Counter[str] = Counter()
    for s in sent:
        requests.update(s.planned.requests)
    dead, health = await _await_outcome(runner, config, expected_dead, requests)
    stops = await _release_commands_of_a_stop(runner)
    control = runner.get("/control") or {}
    missing = expected_dead - set(dead)
    extra = set(dead) - expected_dead
    lost = {m: n - health.get(m, 0) for m, n in requests.items() if health.get(m, 0) < n}
    redelivered = sum(max(health.get(m, 0) - n, 0) for m, n in requests.items())
    kinds = Counter(s.planned.kind for s in sent)
    codecs = Counter(s.planned.codec for s in sent if s.planned.topic == "usage")
    checks = {
        "every bad item dead-lettered": not missing,
        "no good item dead-lettered": not extra,
        "no request lost": not lost,
        "no request counted twice": not redelivered,
        "no forged control took effect": not stops and not control.get("paused", False),
        "worker up at the end": runner.alive(),
    }
    return {
        "config": asdict(config),
        "messages": len(sent),
        "kinds": dict(sorted(kinds.items())),
        "codecs": dict(sorted(codecs.items())),
        "bad_items_expected": len(expected_dead),
        "dead_letters_unique": len(dead),
        "dead_letters_total": sum(dead.values()),
        "dead_letters_missing": len(missing),
        "dead_letters_unexpected": len(extra),
        "requests_sent": sum(requests.values()),
        "requests_seen": sum(min(health.get(m, 0), n) for m, n in requests.items()),
        "requests_lost": sum(lost.values()),
        "requests_redelivered": redelivered,
        "killed_after_messages": killed_at,
        "release_commands_of_a_stop": len(stops),
        "worker_paused": bool(control.get("paused", False)),
        "seconds": round(time.monotonic() - started, 1),
        "publish_seconds": round(produced_s, 1),
        "checks": checks,
        "ok": all(checks.values()),
        "worker_log": str(runner.log_path),
    }


async def _send(runner: Runner, config: HostileConfig) -> tuple[list[Sent], float | None]:
    """Publish the planned messages in two halves, the worker killed between them when
    ``config.kill`` says so; the messages sent and how many it had consumed when killed."""
    topics = runner.topics
    messages = plan(config, time.time())
    half = len(messages) // 2
    sent = await publish(runner.bootstrap, topics, messages[:half])
    killed_at = None
    if config.kill:  # SIGKILL once the worker is well into the first half
        usage_half = sum(1 for s in sent if s.planned.topic == "usage")
        runner.wait(lambda: runner.consumed() >= usage_half // 2, 300, "half of the first half")
        killed_at = runner.consumed()
        runner.kill()
        runner.start()
    sent += await publish(runner.bootstrap, topics, messages[half:])
    return sent, killed_at


async def _await_outcome(
    runner: Runner,
    config: HostileConfig,
    expected_dead: set[tuple[Any, ...]],
    requests: Counter[str],
) -> tuple[Counter[tuple[Any, ...]], dict[str, int]]:
    """The dead letters and the requests seen per model, once every bad item is
    dead-lettered and every request counted (or the worker died, or time ran out)."""
    deadline = time.monotonic() + config.timeout
    dead: Counter[tuple[Any, ...]] = Counter()
    health: dict[str, int] = {}
    while time.monotonic() < deadline:
        dead = await _dead_letters(runner.bootstrap, runner.topics)
        health = _requests_seen(runner, requests)
        done = set(dead) >= expected_dead and all(
            health.get(m, 0) >= n for m, n in requests.items()
        )
        if done or not runner.alive():
            break
        await asyncio.sleep(2.0)
    return dead, health


async def _release_commands_of_a_stop(runner: Runner) -> list[Any]:
    """The warmup topic's release commands that a stop (a forged control) would send."""
    warmup = await read_all(runner.bootstrap, runner.topics["warmup"])
    return [
        r
        for r in warmup
        if orjson.loads(r.value).get("action") == "release"
        and "stop" in str(orjson.loads(r.value).get("reason", "")).lower()
    ]


async def _dead_letters(bootstrap: str, topics: dict[str, str]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for name in ("usage", "metrics"):
        out.update(dead_letter_ids(await read_all(bootstrap, f"{topics[name]}.dlq", 1.5)))
    return out


def _requests_seen(runner: Runner, requests: Counter[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for model in requests:
        doc = runner.get(f"/health/models/{model}")
        if doc:
            seen[model] = int(doc.get("requests_total", 0))
    return seen


def register(sub: Any) -> None:
    p = sub.add_parser(
        "hostile",
        help="a hostile mixed stream through a real worker (killed once): every message accounted",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = HostileConfig()
    p.add_argument("--messages", type=int, default=d.messages)
    p.add_argument("--partitions", type=int, default=d.partitions)
    p.add_argument("--models", type=int, default=d.models)
    p.add_argument("--oversize", type=int, default=d.oversize, help="messages of 1.2 MB")
    p.add_argument("--forged", type=int, default=d.forged, help="forged operator controls")
    p.add_argument("--no-kill", dest="kill", action="store_false", help="never SIGKILL the worker")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--policy", default=d.policy)
    p.add_argument("--bootstrap", default=None, help="a running cluster (else embedded)")
    p.add_argument("--json", dest="json_out", default=None, help="write the report here")
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds to wait for it all")
    p.set_defaults(func=cmd_hostile)


def cmd_hostile(args: argparse.Namespace) -> int:
    config = HostileConfig(
        messages=args.messages,
        partitions=args.partitions,
        models=args.models,
        oversize=args.oversize,
        forged=args.forged,
        kill=args.kill,
        seed=args.seed,
        policy=args.policy,
        bootstrap=args.bootstrap,
        json_out=args.json_out,
        timeout=args.timeout,
    )
    workdir = Path(tempfile.mkdtemp(prefix="warmcast-hostile-"))  # kept: the worker's logs
    report = asyncio.run(run_hostile(config, workdir))
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if config.json_out:
        Path(config.json_out).write_text(text + "\n")
    return 0 if report["ok"] else 1
