"""``warmcast executor`` as an operator runs it: a process on a real broker and a real
MLServer, its /metrics and /status over HTTP, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from streams.broker import free_port
from tests.integration.harness import REPO, namespace, wait_for
from tests.integration.test_executor import mlserver, mlserver_python, send, settings, warm
from tools.mlserver import MLServer

__all__ = ["mlserver", "mlserver_python"]  # fixtures


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except Exception:
        return None


def test_executor_process(kafka_bootstrap: str, mlserver: MLServer) -> None:
    ns = namespace()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "executor", "--target", mlserver.target,
         "--bootstrap", kafka_bootstrap, "--namespace", ns, "--web-port", str(port),
         "--resync-seconds", "0.5"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        status: Any = wait_for(
            lambda: get(f"http://127.0.0.1:{port}/status"), 90, "the executor's web server"
        )
        assert json.loads(status)["target"] == mlserver.target
        now = time.time()
        asyncio.run(send(settings(kafka_bootstrap, ns), warm("m0", now, now + 600)))
        wait_for(lambda: mlserver.ready_models() == {"m0"}, 90, "m0 loaded by the process")
        text = wait_for(
            lambda: (
                (t := get(f"http://127.0.0.1:{port}/metrics"))
                and "warmcast_executor_loads_total 1.0" in t
                and t
            ),
            30,
            "the load counted",
        )
        assert "warmcast_executor_models_loaded 1.0" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.parametrize(
    ("target", "says"),
    [("nope://127.0.0.1:1", "no adapter for nope://"), ("", "--target URL is needed")],
)
def test_executor_refuses_a_target_it_cannot_serve(
    kafka_bootstrap: str, target: str, says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "executor", "--bootstrap", kafka_bootstrap,
         *(["--target", target] if target else [])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stdout + done.stderr
