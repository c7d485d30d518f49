"""Shared fixtures: a real Kafka-protocol broker and warmcast workers as real processes.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` when set, a testcontainers Kafka when a Docker
daemon answers, and the embedded Tansu broker otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if os.environ.get("WARMCAST_TEST_DOCKER", "1") == "1" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from streams.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared traces are not at {DATA}")
    return DATA
