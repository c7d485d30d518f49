"""Shared fixtures: a real Kafka-protocol broker and warmcast workers as real processes.

The broker of a run is ``KAFKA_BOOTSTRAP_SERVERS`` when set; else ``WARMCAST_TEST_BROKER``
picks it: ``tansu`` (the embedded broker), ``kafka`` (Apache Kafka from Maven artifacts,
``WARMCAST_TEST_KAFKA_NODES`` nodes, 1 by default), or, unset, a testcontainers Kafka
when a Docker daemon answers and the embedded broker otherwise. Every test that uses the
broker is marked ``integration``, so ``-m integration`` selects what a broker decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from streams.broker import LocalBroker
    from streams.kafka_broker import KafkaCluster

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

#: The broker a test run uses: tansu | kafka (unset: Docker's Kafka if it answers, else tansu).
TEST_BROKER = os.environ.get("WARMCAST_TEST_BROKER", "").strip().lower()


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "test_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> str:
    default = "default (Docker's Kafka if a daemon answers, else tansu)"
    return f"warmcast test broker: {TEST_BROKER or default}"


@pytest.fixture(scope="session")
def test_broker() -> Iterator[tuple[str, str]]:
    """The session's broker: (``tansu`` | ``kafka`` | ``external``, bootstrap address)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield "external", configured
        return
    if TEST_BROKER not in ("", "tansu", "kafka"):
        raise pytest.UsageError(f"WARMCAST_TEST_BROKER={TEST_BROKER!r}: use tansu or kafka")
    if TEST_BROKER == "kafka":
        from streams.kafka_broker import KafkaCluster

        nodes = int(os.environ.get("WARMCAST_TEST_KAFKA_NODES", "1"))
        # a whole run's topics (every test its own) outgrow the small default heap
        heap = int(os.environ.get("WARMCAST_TEST_KAFKA_HEAP_MB", "1024"))
        with KafkaCluster(nodes=nodes, heap_mb=heap) as cluster:
            _SESSION_CLUSTERS.append(cluster)
            yield "kafka", cluster.bootstrap
        return
    if not TEST_BROKER and os.environ.get("WARMCAST_TEST_DOCKER", "1") == "1" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
            yield "kafka", kafka.get_bootstrap_server()
        return
    from streams.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield "tansu", broker.bootstrap


#: The session's Apache Kafka cluster, once started: each test first checks it still runs.
_SESSION_CLUSTERS: list[KafkaCluster] = []


@pytest.fixture(autouse=True)
def _session_broker_alive(request: pytest.FixtureRequest) -> None:
    """Fail a test at once, with the node's last log lines, when the session's Apache
    Kafka has died under an earlier one (rather than as a later timeout)."""
    if "test_broker" not in request.fixturenames:
        return
    for cluster in _SESSION_CLUSTERS:
        if ended := cluster.ended():
            pytest.fail("the session's broker has died:\n" + "\n".join(ended), pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(test_broker: tuple[str, str]) -> str:
    return test_broker[1]


@pytest.fixture(scope="session")
def broker_kind(test_broker: tuple[str, str]) -> str:
    """``tansu``, ``kafka`` or ``external``: tests apply workarounds for the embedded
    broker's quirks only on ``tansu``."""
    return test_broker[0]


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of the run's kind for one test alone (a test that pauses or stops it):
    Apache Kafka (one node) when ``WARMCAST_TEST_BROKER=kafka``, else the embedded one."""
    from streams.broker import start_broker

    broker = start_broker("kafka" if TEST_BROKER == "kafka" else "tansu")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared traces are not at {DATA}")
    return DATA
