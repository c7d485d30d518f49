"""Replayed usage to a real worker, its warmup commands to the executor, loads on a real
MLServer, and the measured load times back to the worker's performance predictor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.executor.adapters import adapter_for
from streams.executor.service import Executor
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage
from tests.integration.test_executor import OPTIONS, settings, until
from tests.integration.test_executor import mlserver_python as mlserver_python
from tools.mlserver import MLServer

pytestmark = pytest.mark.integration

LOAD_SECONDS = 1.5  # the sleepy runtime's load time of every model here
MODELS = ("e0", "e1", "e2")
TOLERANCE = 0.25


@pytest.fixture
def server(mlserver_python: Any) -> Iterator[MLServer]:
    with MLServer(dict.fromkeys(MODELS, LOAD_SECONDS)) as s:
        yield s


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(kafka_bootstrap, tmp_path, namespace(), policy="warmcast")
    yield w.start()
    w.stop()


def predicted(worker: Worker, model_id: str) -> float | None:
    try:
        document = orjson.loads(worker.get(f"/health/models/{model_id}"))
    except OSError:  # not known yet
        return None
    value = document.get("predicted_load_seconds")
    return None if value is None else float(value)


async def test_usage_to_loads_on_mlserver_and_load_times_back_to_the_predictor(
    worker: Worker, server: MLServer
) -> None:
    ns, bootstrap = worker.namespace, worker.bootstrap
    s = settings(bootstrap, ns)
    executor = Executor(adapter_for(server.target), s, OPTIONS)
    await executor.start()
    try:
        await until(executor.control_read.is_set, 60, "the executor's control history")
        now = time.time()
        replay = [
            (m.encode(), orjson.dumps(usage(m, now - back)))
            for back in (230.0, 170.0, 110.0, 50.0)  # the last lease: about now, a minute
            for m in MODELS
        ]
        await produce(bootstrap, topic(ns, "usage"), replay)
        await consume(bootstrap, [topic(ns, "warmup")], lambda rs: len(rs) >= len(replay))
        await until(lambda: server.ready_models() == set(MODELS), 90, "the leased models loaded")
        assert server.ready_models() == executor.book.leased(time.time())
        for m in MODELS:
            guess = await until(
                lambda m=m: (
                    (p := predicted(worker, m)) is not None
                    and abs(p - LOAD_SECONDS) <= TOLERANCE * LOAD_SECONDS
                    and p
                ),
                60,
                f"{m}'s predicted load time near {LOAD_SECONDS}s",
            )
            print(f"{m}: predicted load {guess:.3f}s, real {LOAD_SECONDS}s")
        # the leases end: the models are unloaded
        await until(lambda: not server.ready_models(), 150, "the models unloaded at lease end")
        assert executor.metrics.unloads._value.get() == len(MODELS)
        assert not executor.book.leased(time.time())
    finally:
        await executor.stop()
