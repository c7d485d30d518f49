"""The probe stage of ``warmcast bench``: what asking ``/health`` costs the events.

A fresh worker is given ``--probe-models`` served models (200,000) and left until it is
idle (the health snapshots of the new models published, and nothing else running), then
gets brand-new models at ``--latency-rate`` events/s for ``--probe-seconds``, each timed
from produce to its warmup command as in the latency table. The run is cut in spans of
:data:`BLOCK_SECONDS` (an eighth of a shorter run), in the order quiet, probed, probed,
quiet, and again: in a quiet span nothing but the events, in a probed one ``/health`` (its
default listing of 100 models) is asked once a second from another thread, as a probe or
a status page would. Events are grouped by the span they were sent in, so both groups
share the same worker, topics and moment of the machine, and the order cancels a steady
drift (the embedded broker slows down as its topics fill); the p99 of the probed group is
set against the quiet one's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from streams.settings import WarmcastSettings
from tools.bench_worker import BenchConfig, WorkerProcess, latency, new_models

#: Seconds of each span, with probes and without.
BLOCK_SECONDS = 2.5
#: Which spans are probed, in turn (quiet, probed, probed, quiet).
PATTERN = (False, True, True, False)
#: The worker counts as idle once it uses less than this share of a core over a second.
IDLE_CPU_SHARE = 0.2
#: Seconds between two probes in a probed span.
PROBE_INTERVAL_SECONDS = 1.0


class Prober(threading.Thread):
    """Asks ``url`` once a second (twice a span, if spans are shorter) in the probed spans
    of ``block`` seconds from its start (:data:`PATTERN`); keeps how long each answer took
    and its size."""

    def __init__(self, url: str, block: float = BLOCK_SECONDS) -> None:
        super().__init__(name="health-prober", daemon=True)
        self.url = url
        self.block = block
        self.interval = min(PROBE_INTERVAL_SECONDS, block / 2)
        self.t0 = time.monotonic()
        self.answers: list[tuple[float, int, int]] = []  # (seconds, bytes, status)
        self.done = threading.Event()

    def probing(self, t: float) -> bool:
        """Whether monotonic time ``t`` falls in a probed span.

        >>> p = Prober("http://127.0.0.1:1/health", block=2.5)
        >>> [p.probing(p.t0 + s) for s in (0.5, 2.6, 5.1, 7.6, 10.1, 12.6)]
        [False, True, True, False, False, True]
        """
        return PATTERN[int((t - self.t0) // self.block) % len(PATTERN)]

    def group_of(self, t: float) -> str:
        return "probed" if self.probing(t) else "quiet"

    def run(self) -> None:
        due = self.t0
        while not self.done.is_set():
            now = time.monotonic()
            if self.probing(now):
                self.answers.append(self._ask())
            due += self.interval
            self.done.wait(max(0.0, due - time.monotonic()))

    def _ask(self) -> tuple[float, int, int]:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                size, status = len(response.read()), response.status
        except OSError as exc:  # a 503 while not ready, or no answer in time
            size, status = 0, getattr(exc, "code", 0)
        return time.monotonic() - start, size, status

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=90)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process ``pid`` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(w: WorkerProcess, models: int, timeout: float = 300.0) -> float:
    """Wait until the worker has published the health snapshots of its ``models`` new
    models (a round every ``WARMCAST_HEALTH_SNAPSHOT_SECONDS``, seconds of work for a
    flood) and then uses less than :data:`IDLE_CPU_SHARE` of a core over a second (or
    ``timeout`` has passed); returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if w.metric("warmcast_health_snapshots_total") >= models:
            break
        time.sleep(1.0)
    used = cpu_seconds(w.process.pid)
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        now = cpu_seconds(w.process.pid)
        if now - used < IDLE_CPU_SHARE:
            break
        used = now
    return time.monotonic() - start


def health_probe(
    bootstrap: str, settings: WarmcastSettings, workdir: Path, config: BenchConfig
) -> dict[str, Any]:
    """The probe stage's figures (``groups``: ``quiet`` and ``probed``)."""
    w = WorkerProcess(bootstrap, settings.topic_namespace, workdir, config)
    try:
        w.wait_ready()
        intake = new_models(w, bootstrap, settings, config, 0, config.probe_models, "probe")
        tracked = int(w.metric("warmcast_tracked_models"))
        settled = wait_idle(w, config.probe_models)
        block = min(BLOCK_SECONDS, config.probe_seconds / 8)
        prober = Prober(f"http://127.0.0.1:{w.port}/health", block)
        timed = dataclasses.replace(config, latency_seconds=config.probe_seconds)
        prober.start()
        try:
            lat = asyncio.run(latency(bootstrap, settings, timed, group_of=prober.group_of))
        finally:
            prober.stop()
        rss = w.rss_bytes()
    finally:
        w.stop()
    groups = lat.get("groups", {})
    quiet, probed = groups.get("quiet"), groups.get("probed")
    rise = None
    if quiet and probed and quiet["p99_ms"] > 0:
        rise = round(probed["p99_ms"] / quiet["p99_ms"] - 1, 4)
    seconds = sorted(a[0] for a in prober.answers)
    return {
        "models": config.probe_models,
        "tracked_models": tracked,
        "new_models_per_second": round(intake, 1),
        "seconds_to_idle": round(settled, 1),
        "worker_rss_bytes": rss,
        "block_seconds": block,
        "offered_per_second": lat.get("offered_per_second", 0.0),
        "events": lat.get("events", 0),
        "groups": groups,
        "p99_ms_by_second": lat.get("p99_ms_by_second", []),
        "p99_rise": rise,
        "answers": {
            "count": len(seconds),
            "statuses": sorted({a[2] for a in prober.answers}),
            "p50_ms": round(1000 * seconds[len(seconds) // 2], 2) if seconds else None,
            "max_ms": round(1000 * seconds[-1], 2) if seconds else None,
            "bytes": max((a[1] for a in prober.answers), default=0),
        },
    }
