"""Test helpers of the operations tests: workers started from another module, and a
reader of the alerts topic that waits for transitions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.alert import Alert
from tests.integration.harness import REPO, Worker, wait_for


class ModuleWorker(Worker):
    """A worker run as ``python -m <module> [worker]``, e.g. with a stand-in policy."""

    def __init__(
        self, bootstrap: str, workdir: Path, namespace: str, module: str, **settings: Any
    ) -> None:
        super().__init__(bootstrap, workdir, namespace, **settings)
        self.module = module

    def start(self, timeout: float = 90.0) -> ModuleWorker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, f"worker on port {self.port} to serve /health")
        return self


class AlertLog:
    """Everything published on an alerts topic, read as it comes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.alerts: list[Alert] = []
        self.keys: list[bytes | None] = []

    async def __aenter__(self) -> AlertLog:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait(self, condition: Callable[[AlertLog], bool], what: str, timeout: float = 30.0):
        """Read until ``condition(self)`` holds; fail after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self):
            if loop.time() > deadline:
                seen = [(a.kind, a.subject, a.state) for a in self.alerts]
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {seen}")
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self.alerts.append(Alert.model_validate_json(record.value))
                    self.keys.append(record.key)

    def states(self, kind: str) -> list[str]:
        return [a.state for a in self.alerts if a.kind == kind]

    def fired(self, *kinds: str) -> bool:
        return all("firing" in self.states(k) for k in kinds)

    def fired_and_resolved(self, *kinds: str) -> bool:
        """Each kind has fired, and its latest firing has been resolved since."""
        for kind in kinds:
            states = self.states(kind)
            if "firing" not in states or states[-1] != "resolved":
                return False
        return True

    def by_fingerprint(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.alerts:
            out.setdefault(a.fingerprint, []).append(a.state)
        return out
