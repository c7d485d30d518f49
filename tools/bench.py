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

Stages: ``throughput``, ``latency``, ``memory``, ``probe`` and ``shadow`` (two shadow policies
against none: the usage step in process, and the worker through the broker); ``--only`` runs
some of them (``--only memory --models 100000``: the memory table alone, at 100,000 models).

It prints a table, the performance targets with whether this run met them, and writes the
same figures as JSON (``--json``). The exit status does not depend on the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from engine import native
from streams.broker import BROKER_KINDS, describe_broker, start_broker
from streams.kafka import ensure_topics
from streams.settings import WarmcastSettings
from tools.bench_latency import latency_stages
from tools.bench_memory import memory
from tools.bench_probe import health_probe
from tools.bench_report import BenchReport, format_report
from tools.bench_shadow import SHADOW_CANDIDATES, shadow_cost
from tools.bench_targets import targets
from tools.bench_throughput import throughput
from tools.bench_worker import STAGES, BenchConfig, default_trace

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
        report.rows, ended = throughput(config, bootstrap, workdir, trace, say, namespace)
    if "latency" in config.stages:
        report.latency, ended = latency_stages(config, bootstrap, workdir, say, namespace, ended)
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
        say(f"with {SHADOW_CANDIDATES} shadowed and without, in process and worker", ended)
        report.shadow = shadow_cost(config, trace, bootstrap, workdir, namespace)
        ended = "shadow"
    say("done", ended)
    report.targets = targets(report, config)
    return report


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
