"""Apache Kafka from Maven artifacts: clear errors without Java or Maven; and, on the
Kafka run, ``warmcast broker --kind kafka`` serves clients, stops on SIGINT, and leaves no
JVM behind when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams import kafka_artifacts
from streams.broker import BrokerError
from streams.kafka_broker import KafkaCluster, server_properties
from tests.integration.harness import wait_for

REPO = Path(__file__).resolve().parents[2]

on_kafka = pytest.mark.skipif(
    os.environ.get("WARMCAST_TEST_BROKER", "").lower() != "kafka",
    reason="starts Apache Kafka: the run with WARMCAST_TEST_BROKER=kafka",
)


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"Java was not found.*openjdk-17-jre-headless"):
        KafkaCluster().start()
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "broker", "--kind", "kafka"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert b"Java was not found" in result.stderr


def test_missing_maven_on_a_cold_cache_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARMCAST_KAFKA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kafka_artifacts.ArtifactsError, match=r"Maven \(mvn\) was not found"):
        kafka_artifacts.classpath()


def test_a_class_path_naming_a_missing_jar_is_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARMCAST_KAFKA_CACHE", str(tmp_path))
    stored = tmp_path / kafka_artifacts.kafka_version() / "classpath.txt"
    stored.parent.mkdir(parents=True)
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"")
    stored.write_text(f"{jar}{os.pathsep}{tmp_path / 'gone.jar'}")
    with pytest.raises(kafka_artifacts.ArtifactsError, match="is not resolved"):
        kafka_artifacts.classpath(resolve=False)
    stored.write_text(str(jar))
    assert kafka_artifacts.classpath(resolve=False) == str(jar)


def test_three_nodes_replicate_three_times_with_two_in_sync() -> None:
    one = server_properties(1, "127.0.0.1", 1, 2, "1@127.0.0.1:2", 1, Path("d"))
    three = server_properties(2, "127.0.0.1", 3, 4, "v", 3, Path("d"))
    assert (one["default.replication.factor"], one["min.insync.replicas"]) == ("1", "1")
    assert three["offsets.topic.replication.factor"] == "3"
    assert three["transaction.state.log.min.isr"] == "2"
    assert three["process.roles"] == "broker,controller"


async def _produce_one(bootstrap: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        return (await producer.send_and_wait("broker-test", b"hello")).offset
    finally:
        await producer.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _start_cli(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "broker", "--kind", "kafka", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


@pytest.mark.integration
@on_kafka
def test_cli_serves_kafka_and_stops_on_sigint() -> None:
    proc, bootstrap = _start_cli()
    try:
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert asyncio.run(_produce_one(bootstrap)) == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stderr is not None and b"Apache Kafka" in proc.stderr.read()
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
@on_kafka
def test_no_jvm_outlives_a_killed_launcher() -> None:
    proc, bootstrap = _start_cli("--nodes", "3")
    try:
        assert len(bootstrap.split(",")) == 3
        jvms = [p for p in _children(proc.pid) if "java" in Path(f"/proc/{p}/comm").read_text()]
        assert len(jvms) == 3
        proc.kill()
        proc.wait(30)
        wait_for(lambda: not any(_alive(p) for p in jvms), 60, "the JVMs to be killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
