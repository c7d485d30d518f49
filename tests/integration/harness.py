"""A warmcast worker as a real process, and small Kafka helpers for the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import free_port
from streams.settings import WarmcastSettings
from tests.outgoing import check_answer, check_record

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Worker:
    """``warmcast worker`` in a subprocess, on its own topics and web port."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        namespace: str,
        module: str = "tools.cli",
        environment: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        """``module`` is run as ``python -m module worker``; ``environment`` is added to
        the worker's, and ``settings`` are set as ``WARMCAST_<NAME>``."""
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.namespace = namespace
        self.module = module
        self.environment = environment or {}
        self.port = free_port()
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"worker-{self.port}.log"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "WARMCAST_APP_ID": f"{self.namespace}-app",
                "WARMCAST_TOPIC_NAMESPACE": self.namespace,
                "WARMCAST_WEB_PORT": str(self.port),
                "WARMCAST_DATA_DIR": str(self.workdir / "data"),
                "WARMCAST_PARTITIONS": "2",
            }
        )
        for key, value in self.settings.items():
            env[f"WARMCAST_{key.upper()}"] = str(value)
        env.update(self.environment)
        return env

    def start(self, timeout: float = 90.0) -> Worker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "worker"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, f"worker on port {self.port} to serve /health")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{self.log.read_text()[-4000:]}")
        try:
            return bool(orjson.loads(self.get("/health"))["ready"])
        except OSError:  # not listening yet, or 503 while starting
            return False

    def get(self, path: str) -> bytes:
        """GET ``path``, with the worker's control token when it has one."""
        token = self.settings.get("control_token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            body = bytes(response.read())
        check_answer(path, body)  # held to the contracts
        return body

    def health(self) -> dict[str, Any]:
        return dict(orjson.loads(self.get("/health")))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        proc, self.process = self.process, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode


def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


def topic(ns: str, name: str) -> str:
    return WarmcastSettings(topic_namespace=ns).topic(name)


async def produce(
    bootstrap: str,
    topic_name: str,
    messages: list[tuple[bytes | None, bytes]],
    **producer_options: Any,
) -> None:
    """Send ``messages`` (key, value) in order; ``producer_options`` go to aiokafka (e.g.
    ``max_request_size`` to send more than its default of 1 MiB)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic_name, value, key=key)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[Any]], bool],
    timeout: float = 60.0,
    **consumer_options: Any,
) -> list[Any]:
    """Read ``topics`` from the beginning until ``until(records)`` holds or time runs out
    (``consumer_options`` go to aiokafka). Records of outgoing topics are checked against
    their contracts (:func:`tests.outgoing.check_record`)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        **consumer_options,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(records):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s reading {topics}: have {len(records)} records"
                )
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(check_record(m) for m in msgs)
    finally:
        await consumer.stop()
    return records


def usage(model_id: str, ts: float, **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "ts": ts, **extra}
