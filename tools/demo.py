"""``warmcast demo``: the whole loop on one machine, in a few minutes.

It starts the embedded broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set), a worker (a
``python -m tools.cli worker`` subprocess on topics of its own), and the fleet simulator
(:mod:`tools.fleetsim`) on the shipped sample: 150 functions of the Azure Functions 2019
trace over 4 hours (CC BY 4.0, see ``tools/samples/README.md``), or on ``--trace``. Then
it prints cold starts and wasted model-minutes of the worker-driven fleet and of a fixed
keep-alive fleet, the ``warmcast backtest`` figures of the same slice and policy with the
difference in %, the alerts raised, and where to look (``/health``, ``/metrics``, a plot
of cumulative cold starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from engine.registry import PolicyUnavailable, make_policy, parse_policy
from streams.settings import WarmcastSettings
from tools.fleet import FleetTotals, run_local
from tools.fleetsim import (
    FleetReport,
    FleetSim,
    FleetSimError,
    format_fleets,
    load_slice,
    load_time_model,
)
from tools.headline import Headline
from tools.headline import compute as compute_headline
from tools.replay import (
    add_trace_flags,
    iso,
    positive_float,
    positive_int,
    settings_for,
    time_arg,
    trace_mapping,
)
from tools.traces import Trace, parse_time, read_sizes
from tools.workerproc import cli_command

if TYPE_CHECKING:
    from streams.broker import LocalBroker

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE = SAMPLES / "azure2019_150fn_4h.csv.gz"
SAMPLE_MEMORY = SAMPLES / "azure2019_150fn_memory.csv"
#: The sample's first minute column is minute 481 of a day the trace does not date.
SAMPLE_T0 = parse_time("2019-07-15T08:00:00Z")
AGREEMENT_PCT = 2.0


class DemoError(RuntimeError):
    """The demo could not run."""


def default_policy() -> tuple[str, str]:
    """``warmcast`` when the learning policy can be built here, else ``hybrid``; and why."""
    try:
        make_policy("warmcast")
    except (PolicyUnavailable, ImportError, TypeError, ValueError) as exc:
        return "hybrid", f"default; the warmcast policy is not available here ({exc})"
    return "warmcast", "default: the learning policy"


def pct_diff(streaming: float, offline: float) -> float:
    """``streaming`` relative to ``offline``, in %.

    >>> pct_diff(102, 100), pct_diff(0, 0), pct_diff(3, 0)
    (2.0, 0.0, inf)
    """
    if offline == 0:
        return 0.0 if streaming == 0 else float("inf")
    return 100.0 * (streaming - offline) / offline


# --------------------------------------------------------------------------------- worker


class WorkerProcess:
    """``python -m tools.cli worker`` in a subprocess, until ``stop``."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> WorkerProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                cli_command("worker"),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise DemoError(f"the worker did not become ready within {timeout:.0f}s")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise DemoError(f"the worker exited with code {self.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return bool(orjson.loads(response.read()).get("ready"))
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        from streams.broker import terminate

        proc, self.process = self.process, None
        terminate(proc, timeout)


def worker_env(
    settings: WarmcastSettings, policy: str, port: int, data_dir: Path, knob: float | None
) -> dict[str, str]:
    """The worker's environment: the demo's broker, topics, policy and port."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "WARMCAST_TOPIC_NAMESPACE": settings.topic_namespace,
            "WARMCAST_APP_ID": settings.app_id,
            "WARMCAST_POLICY": policy,
            "WARMCAST_WEB_PORT": str(port),
            "WARMCAST_DATA_DIR": str(data_dir),
            "WARMCAST_PARTITIONS": str(settings.partitions),
        }
    )
    env.setdefault("WARMCAST_LOG_LEVEL", "warning")
    if knob is not None:
        env["WARMCAST_KNOB"] = str(knob)
    return env


def pick_port(wanted: int | None) -> int:
    from streams.broker import free_port, port_in_use

    if wanted:
        if port_in_use("127.0.0.1", wanted):
            raise DemoError(f"web port {wanted} is in use: choose another with --web-port")
        return wanted
    return 6066 if not port_in_use("127.0.0.1", 6066) else free_port()


# --------------------------------------------------------------------------------- alerts


class AlertReader:
    """Reads the alerts topic from its start while the demo runs."""

    def __init__(self, settings: WarmcastSettings) -> None:
        self.settings = settings
        self.alerts: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.alerts

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka import client_kwargs

        topic = self.settings.topic("alerts")
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings), group_id=None, fetch_max_wait_ms=100
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if self._stop.is_set():
                    return
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                stopping = self._stop.is_set()
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        with contextlib.suppress(orjson.JSONDecodeError):
                            self.alerts.append(orjson.loads(record.value))
                if stopping:
                    ends = await consumer.end_offsets(tps)
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                        return
        finally:
            await consumer.stop()


# ---------------------------------------------------------------------------------- demo


@dataclass(slots=True)
class DemoResult:
    report: FleetReport
    policy: str
    backtest: FleetTotals
    backtest_reference: FleetTotals
    backtest_commands: int
    offline: FleetTotals
    partitions: int = 1
    alerts: list[dict[str, Any]] = field(default_factory=list)
    headline: Headline | None = None  # warmcast at equal memory, from the slice's backtest

    @property
    def cold_diff_pct(self) -> float:
        return pct_diff(self.report.fleet.cold_starts, self.backtest.cold_starts)

    @property
    def wasted_diff_pct(self) -> float:
        return pct_diff(self.report.fleet.wasted_minutes, self.backtest.wasted_minutes)

    @property
    def agrees(self) -> bool:
        return abs(self.cold_diff_pct) <= AGREEMENT_PCT


def backtest_totals(
    trace: Trace, policy: str, knob: float, sizes: Mapping[str, float] | None = None
) -> tuple[FleetTotals, FleetTotals, int]:
    """``warmcast backtest`` of the slice (with the models' ``sizes``, as the worker learns
    them from the fleet's memory events): the policy's and fixed:10's scores, as totals."""
    from tools.backtest import run_backtest

    result = run_backtest(trace, [policy], knobs=[knob], progress=False, sizes=sizes)
    label = f"warmcast@{knob:g}" if policy == "warmcast" else policy
    run = result.run(label)

    def totals(score: Any) -> FleetTotals:
        return FleetTotals(
            requests=score.requests,
            cold_starts=score.cold_starts,
            requested_minutes=score.requested_minutes,
            loaded_minutes=score.loaded_minutes,
            wasted_minutes=score.wasted_minutes,
            models=score.models,
        )

    return totals(run.score), totals(result.reference.score), run.commands


def plot(result: DemoResult, path: Path) -> None:
    """Cumulative cold starts over event time: the worker-driven fleet, the same engine
    offline, and the fixed keep-alive fleet."""
    import matplotlib

    matplotlib.use("Agg")
    from itertools import accumulate

    import matplotlib.pyplot as plt

    report = result.report
    fig, ax = plt.subplots(figsize=(9, 4.5))
    minutes = list(range(report.minutes))
    series = (
        (report.fleet_label, report.fleet.cold_by_minute, "tab:blue", "-"),
        (offline_label(result), result.offline.cold_by_minute, "tab:orange", "--"),
        (
            f"fixed keep-alive {report.keepalive} min",
            report.baseline.cold_by_minute,
            "tab:gray",
            "-",
        ),
    )
    for label, values, colour, style in series:
        if values:
            ax.plot(minutes, list(accumulate(values)), style, color=colour, label=label)
    ax.set_xlabel(f"minutes of event time from {iso(60.0 * report.first_minute)}")
    ax.set_ylabel("cumulative cold starts")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def offline_label(result: DemoResult) -> str:
    if result.partitions == 1:
        return f"warmcast backtest, {result.policy}"
    return f"offline, {result.policy}, {result.partitions} partition engines"


def results_text(result: DemoResult) -> str:
    report = result.report
    rows = [
        (report.fleet_label, report.fleet),
        (f"fixed keep-alive {report.keepalive} min", report.baseline),
        (f"warmcast backtest, {result.policy}", result.backtest),
        ("warmcast backtest, fixed:10", result.backtest_reference),
    ]
    if result.partitions > 1:
        rows.insert(3, (offline_label(result), result.offline))
    lines = [format_fleets(rows), ""]
    verdict = "within" if result.agrees else "NOT within"
    lines.append(
        f"streaming vs backtest ({result.policy}): cold starts {result.cold_diff_pct:+.2f} %, "
        f"wasted model-minutes {result.wasted_diff_pct:+.2f} % ({verdict} "
        f"{AGREEMENT_PCT:g} %); commands {report.commands} streamed, "
        f"{result.backtest_commands} offline"
    )
    if result.partitions > 1:
        lines.append(
            f"streaming vs the same engine offline with {result.partitions} partition-scoped "
            f"engines: cold starts "
            f"{pct_diff(report.fleet.cold_starts, result.offline.cold_starts):+.2f} %, wasted "
            f"model-minutes "
            f"{pct_diff(report.fleet.wasted_minutes, result.offline.wasted_minutes):+.2f} % "
            "(the backtest runs one engine for every model)"
        )
    base = report.baseline
    if base.cold_starts:
        fewer = -pct_diff(report.fleet.cold_starts, base.cold_starts)
        more = pct_diff(report.fleet.wasted_minutes, base.wasted_minutes)
        lines.append(
            f"{result.policy} vs fixed keep-alive {report.keepalive} min: "
            f"{fewer:.1f} % fewer cold starts, {more:+.1f} % wasted model-minutes"
        )
    if result.headline is not None:
        lines.append(result.headline.text())
    lines.append(report.describe())
    return "\n".join(lines)


def alerts_text(alerts: list[dict[str, Any]]) -> str:
    """The alerts read from the topic, one line each.

    >>> alerts_text([])
    '  none'
    >>> alerts_text([{"ts": 0, "state": "firing", "kind": "stale_data", "severity": "warning",
    ...               "subject": "t.usage.v1", "summary": "no usage events for 301s"}])
    '  1970-01-01T00:00:00Z  firing    warning   stale_data  t.usage.v1: no usage events for 301s'
    """
    if not alerts:
        return "  none"
    lines = []
    for a in alerts:
        ts = a.get("ts")
        when = iso(float(ts)) if isinstance(ts, int | float) else "?"
        lines.append(
            f"  {when}  {a.get('state', ''):<8}  {a.get('severity', ''):<8}  "
            f"{a.get('kind', '')}  {a.get('subject', '')}: {a.get('summary', '')}"
        )
    return "\n".join(lines)


@dataclass(slots=True)
class DemoOptions:
    trace: str | None = None
    policy: str | None = None
    knob: float | None = None
    minutes: int | None = None
    start: float | None = None
    out: Path = Path("warmcast-demo")
    web_port: int | None = None
    partitions: int = 1
    load_time: float | None = None
    seed: int = 0
    speed: float | None = None
    publish_metrics: bool = True
    bootstrap: str | None = None
    broker: str = "tansu"  # the local broker started when no bootstrap is given
    keep_running: bool = False
    fmt: str = "auto"
    mapping: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None  # topics' namespace (default: a fresh demo-<hex>)
    executor: str | None = None  # "mlserver": warmup commands carried out on a real MLServer
    memory: str | None = None  # model sizes CSV (default: the sample's, for the sample)


def say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoResult:
    """Run the demo; print as it goes; stop the worker and the broker it started."""
    out = out if out is not None else sys.stdout
    settings = settings_for(options.bootstrap)  # bad settings stop the demo before it starts
    policy, why = demo_policy(options)
    outdir = options.out.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    path, sample, trace = demo_slice(options)
    if not trace.events:
        raise DemoError(f"{path}: no requests in the slice")
    knob = options.knob if options.knob is not None else settings.knob
    say(out, "warmcast demo")
    say(out, trace_text(path, sample, trace))
    broker: LocalBroker | None = None
    worker = None
    try:
        settings, broker = demo_broker(options, settings, outdir, out)
        settings = demo_topics(options, settings)
        worker, ready_in = start_worker(options, settings, policy, outdir)
        say(out, worker_text(options, settings, policy, why, knob, worker, ready_in))
        memory = demo_sizes(options, sample)
        report, alerts = run_fleet(options, settings, trace, worker, memory, out)
        result = demo_result(options, trace, policy, knob, memory, report, alerts)
        png = outdir / "cold_starts.png"
        plot(result, png)
        write_report(result, outdir / "report.json")
        say(out)
        say(out, f"results ({report.minutes} minutes of event time)")
        say(out, results_text(result))
        say(out)
        say(out, f"alerts raised ({settings.topic('alerts')})")
        say(out, alerts_text(alerts))
        say(out)
        say(out, where_to_look(settings, worker, png, outdir))
        if options.keep_running:
            say(out, "\nthe worker keeps serving /health and /metrics; Ctrl-C stops the demo")
            wait_for_interrupt()
        return result
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


def demo_policy(options: DemoOptions) -> tuple[str, str]:
    """The policy the worker runs, and why: ``--policy``, else :func:`default_policy`."""
    if not options.policy:
        return default_policy()
    try:
        policy = parse_policy(options.policy)
    except ValueError as exc:
        raise DemoError(f"--policy: {exc}") from None
    make_policy(policy)  # the warmcast policy may not be available here
    return policy, "--policy"


def demo_sizes(options: DemoOptions, sample: bool) -> dict[str, float] | None:
    """The model sizes the fleet reports with its loads (``memory_bytes`` metric events)
    and the backtest beside it plans with: ``--memory``, or the sample's for the sample;
    none when the fleet publishes no metric events, since the worker then learns none.

    >>> demo_sizes(DemoOptions(), sample=False) is None
    True
    >>> len(demo_sizes(DemoOptions(), sample=True) or {})
    150
    >>> demo_sizes(DemoOptions(publish_metrics=False), sample=True) is None
    True
    """
    path = options.memory or (str(SAMPLE_MEMORY) if sample else None)
    if path is None or not options.publish_metrics:
        return None
    return read_sizes(path)


def demo_slice(options: DemoOptions) -> tuple[str, bool, Trace]:
    """The slice the fleet replays: its path, whether it is the shipped sample, the trace."""
    sample = options.trace is None
    path = str(SAMPLE) if sample else str(options.trace)
    mapping = dict(options.mapping)
    if sample and mapping.get("t0") is None:
        mapping["t0"] = SAMPLE_T0
    trace = load_slice(
        path, fmt=options.fmt, start=options.start, minutes=options.minutes, **mapping
    )
    return path, sample, trace


def trace_text(path: str, sample: bool, trace: Trace) -> str:
    """The trace's line: where it comes from, its models, requests and minutes."""
    return (
        f"  trace    {path}{' (shipped sample, Azure Functions 2019, CC BY 4.0)' if sample else ''}"
        f"\n           {trace.models} models, {trace.requests:,} requests, "
        f"{trace.end_minute + 1} minutes from {iso(trace.t0)}"
    )


def demo_broker(
    options: DemoOptions, settings: WarmcastSettings, outdir: Path, out: TextIO
) -> tuple[WarmcastSettings, LocalBroker | None]:
    """The broker the settings name, or a local one started for the demo (then returned)."""
    from streams.broker import describe_broker, start_broker

    if settings.kafka_bootstrap_servers:
        say(out, f"  broker   {settings.kafka_bootstrap_servers}")
        return settings, None
    broker = start_broker(options.broker, log_path=outdir / "broker.log")
    settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
    say(out, f"  broker   {describe_broker(options.broker, broker)}")
    return settings, broker


def demo_topics(options: DemoOptions, settings: WarmcastSettings) -> WarmcastSettings:
    """The settings on the demo's own topics (a fresh namespace unless one is given)."""
    namespace = options.namespace or f"demo-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={"topic_namespace": namespace, "app_id": namespace, "partitions": options.partitions}
    )


def start_worker(
    options: DemoOptions, settings: WarmcastSettings, policy: str, outdir: Path
) -> tuple[WorkerProcess, float]:
    """The worker subprocess, ready, and the seconds it took to be ready."""
    port = pick_port(options.web_port)
    env = worker_env(settings, policy, port, outdir / "worker-data", options.knob)
    worker = WorkerProcess(env, port, outdir / "worker.log")
    started = time.monotonic()
    worker.start()
    return worker, time.monotonic() - started


def worker_text(
    options: DemoOptions,
    settings: WarmcastSettings,
    policy: str,
    why: str,
    knob: float,
    worker: WorkerProcess,
    ready_in: float,
) -> str:
    """The worker's line: its policy and why, how soon it was ready, its topics."""
    knob_text = f", knob {knob:g}" if policy == "warmcast" else ""
    scope = (
        "1 partition: one engine for every model, as the backtest"
        if options.partitions == 1
        else f"{options.partitions} partitions: one engine per partition"
    )
    return (
        f"  worker   policy {policy}{knob_text} ({why}); ready in {ready_in:.1f}s on {worker.url}"
        f"\n           topics {settings.topic_namespace}.*.v1, {scope}"
    )


def run_fleet(
    options: DemoOptions,
    settings: WarmcastSettings,
    trace: Trace,
    worker: WorkerProcess,
    memory: Mapping[str, float] | None,
    out: TextIO,
) -> tuple[FleetReport, list[dict[str, Any]]]:
    """The simulated fleet on the slice, driven by the worker, reporting the models'
    ``memory`` with their loads; and the alerts raised meanwhile."""
    sim = FleetSim(
        settings,
        trace,
        load_times=load_time_model(options.load_time, options.seed),
        baseline_load_times=load_time_model(options.load_time, options.seed),
        memory=memory,
        worker_urls=[worker.url],
        speed=options.speed,
        publish_metrics=options.publish_metrics,
    )
    say(out, f"  fleet    load times {sim.fleet.load_times.describe()}; running ...")

    async def stream() -> tuple[FleetReport, list[dict[str, Any]]]:
        reader = AlertReader(settings)
        reader.start()
        try:
            report = await sim.run()
        finally:
            alerts = await reader.stop()
        return report, alerts

    return asyncio.run(stream())


def demo_result(
    options: DemoOptions,
    trace: Trace,
    policy: str,
    knob: float,
    memory: Mapping[str, float] | None,
    report: FleetReport,
    alerts: list[dict[str, Any]],
) -> DemoResult:
    """The fleet's report beside the backtest and the offline run of the same slice, with
    the same model sizes."""
    ours, reference, commands = backtest_totals(trace, policy, knob, memory)
    knobs = {"knob": knob} if policy == "warmcast" else {}
    return DemoResult(
        report=report,
        policy=policy,
        backtest=ours,
        backtest_reference=reference,
        backtest_commands=commands,
        offline=run_local(trace, policy, partitions=options.partitions, knobs=knobs, sizes=memory),
        partitions=options.partitions,
        alerts=alerts,
        headline=compute_headline(trace, knob, sizes=memory),
    )


def write_report(result: DemoResult, path: Path) -> None:
    """``report.json``: the numbers the demo prints."""
    report = {
        "policy": result.policy,
        "fleet_sim": result.report.to_dict(),
        "backtest": result.backtest.to_dict(),
        "backtest_fixed_10": result.backtest_reference.to_dict(),
        "cold_diff_pct": result.cold_diff_pct,
        "wasted_diff_pct": result.wasted_diff_pct,
        "alerts": result.alerts,
        "headline": result.headline.to_dict() if result.headline else None,
    }
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def where_to_look(
    settings: WarmcastSettings, worker: WorkerProcess, png: Path, outdir: Path
) -> str:
    """The closing lines: the worker's pages, the plot, the report, the log, the tail command."""
    errors = worker_errors(worker.log)
    return "\n".join(
        [
            "where to look",
            f"  {worker.url}/health     rolling health per served model",
            f"  {worker.url}/metrics    Prometheus metrics",
            f"  {png}    cumulative cold starts over event time",
            f"  {outdir / 'report.json'}    the numbers above",
            f"  {worker.log}" + (f"    {errors} errors logged" if errors else ""),
            f"  warmcast tail warmup --from-beginning --bootstrap "
            f"{settings.kafka_bootstrap_servers} --namespace {settings.topic_namespace}",
        ]
    )


def worker_errors(log: Path) -> int:
    """How many errors the worker logged."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if "[ERROR]" in line)


def wait_for_interrupt() -> None:
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="broker + worker + simulated fleet on a shipped sample: cold starts vs keep-alive",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="exit status: 0 done, 2 the demo could not run",
    )
    add_slice_flags(p)
    add_run_flags(p)
    stay = p.add_mutually_exclusive_group()
    stay.add_argument("--keep-running", action="store_true", default=None, help="stay up after")
    stay.add_argument("--exit", dest="keep_running", action="store_false", help="exit after")
    add_trace_flags(p)
    p.set_defaults(func=command)
    return p


def add_slice_flags(p: argparse.ArgumentParser) -> None:
    """The demo's options of what is replayed: the trace, the policy, the slice, the sizes."""
    p.add_argument("--trace", metavar="PATH", help="your own history (default: the sample)")
    p.add_argument(
        "--policy",
        metavar="SPEC",
        help="warmcast, hybrid or fixed:K (default: warmcast if it can be built here, else hybrid)",
    )
    p.add_argument(
        "--knob", type=positive_float, help="warmcast trade-off knob [env: WARMCAST_KNOB]"
    )
    p.add_argument(
        "--minutes", type=positive_int, default=240, help="minutes of the trace (default 240)"
    )
    p.add_argument("--start", type=time_arg, help="start time of the slice")
    p.add_argument(
        "--memory",
        metavar="CSV",
        help="model sizes the fleet reports with each load (model_id,bytes; memory_mb; or "
        "the Azure 2019 memory file), which the worker and the backtest plan with "
        "(default: the sample's, for the sample)",
    )


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The demo's options of how it runs: output, worker, fleet, broker."""
    p.add_argument("--out", type=Path, default=Path("warmcast-demo"), help="output directory")
    p.add_argument("--web-port", type=int, help="worker web port (default 6066, or a free one)")
    p.add_argument(
        "--partitions",
        type=positive_int,
        default=1,
        help="partitions of the demo's topics: engines the worker runs (default 1: one engine "
        "for every model, as warmcast backtest)",
    )
    p.add_argument("--load-time", type=positive_float, metavar="SECONDS", help="fixed load time")
    p.add_argument("--seed", type=int, default=0, help="seed of the load-time draws")
    p.add_argument(
        "--executor",
        choices=["mlserver"],
        help="carry the warmup commands out on a real MLServer (warmcast executor) and "
        "report its measured load times",
    )
    p.add_argument(
        "--speed", type=positive_float, metavar="X", help="event-time pacing (default: max)"
    )
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="use this broker [env: KAFKA_BOOTSTRAP_SERVERS]"
    )
    p.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        default="tansu",
        help="local broker started when no --bootstrap is given: tansu (embedded, default) "
        "or kafka (Apache Kafka from Maven artifacts)",
    )
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="the fleet publishes no metric events (the backtest sees none either)",
    )


def slice_models(options: DemoOptions) -> set[str]:
    """The served models of the demo's slice."""
    _, _, trace = demo_slice(options)
    return {model for _, model, _ in trace.events}


def run_selected(options: DemoOptions, out: TextIO) -> DemoResult:
    """The demo, on a real MLServer through the executor when ``options.executor`` says so."""
    if options.executor == "mlserver":
        from tools.demo_executor import run_demo_with_mlserver

        result: DemoResult = run_demo_with_mlserver(options, out, run_demo, slice_models(options))
        return result
    return run_demo(options, out)


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``demo`` subcommand from parsed arguments; the exit status."""
    from aiokafka.errors import KafkaError

    from streams.broker import BrokerError
    from tools.mlserver import MLServerUnavailable

    out = stdout if stdout is not None else sys.stdout
    keep = args.keep_running
    if keep is None:
        isatty = getattr(out, "isatty", None)
        keep = bool(isatty and isatty() and sys.stdin.isatty())
    options = DemoOptions(
        trace=args.trace,
        policy=args.policy,
        knob=args.knob,
        minutes=args.minutes,
        start=args.start,
        out=args.out,
        web_port=args.web_port,
        partitions=args.partitions,
        load_time=args.load_time,
        seed=args.seed,
        speed=args.speed,
        publish_metrics=not args.no_metrics,
        bootstrap=args.bootstrap,
        broker=args.broker,
        keep_running=keep,
        fmt=args.fmt,
        mapping=trace_mapping(args),
        executor=args.executor,
        memory=args.memory,
    )
    try:
        result = run_selected(options, out)
    except (
        OSError,
        ValueError,
        DemoError,
        FleetSimError,
        BrokerError,
        KafkaError,
        PolicyUnavailable,
        MLServerUnavailable,
    ) as exc:
        print(f"warmcast demo: {exc}", file=sys.stderr)
        return 2
    del result
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.demo ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["DemoOptions", "DemoResult", "default_policy", "register", "run_demo"]
