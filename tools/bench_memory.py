"""The bench's memory stage: resident memory per tracked served model at several model
counts, of the worker process and of the engine alone.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.settings import WarmcastSettings
from tools.bench_worker import (
    BenchConfig,
    WorkerProcess,
    new_models,
)


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
