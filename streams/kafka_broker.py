"""Apache Kafka on loopback: one broker or a three-node cluster, KRaft, from Maven artifacts.

Each node is a combined broker and controller (``process.roles=broker,controller``) in a
JVM of its own, run with ``java`` from the class path ``streams.kafka_artifacts`` resolves.
Three nodes replicate every topic three times with ``min.insync.replicas=2``: one node
may fail without stopping a producer that waits for all in-sync replicas. Storage is a
temporary folder, formatted at start and removed at stop; records are kept whatever their
timestamps (no time-based retention).

The JVMs never outlive the Python process that started them: a small guard process holds
a pipe from it and kills them when the pipe closes, however that process ended.

>>> with KafkaCluster(nodes=3) as cluster:  # doctest: +SKIP
...     print(cluster.bootstrap)
127.0.0.1:40311,127.0.0.1:40312,127.0.0.1:40313
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiokafka import AIOKafkaClient

from streams.kafka_artifacts import ArtifactsError, classpath, java_binary
from streams.processes import BrokerError, free_port, port_in_use

#: Heap of each node's JVM (MiB): enough for tests and a laptop, small on a shared machine.
HEAP_MB = 256

#: Reads process ids on stdin ("+pid" watches one, "-pid" forgets it) and SIGKILLs every
#: watched one when stdin closes: when the process that started the JVMs has gone.
_GUARD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+": pids.add(int(line[1:]))
    elif line[:1] == "-": pids.discard(int(line[1:]))
for pid in pids:
    try: os.kill(pid, signal.SIGKILL)
    except OSError: pass
"""

_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka.common.config
logger.kafka.level = warn
"""


#: Name of the threads that ask the cluster for its metadata; what aiokafka logs in them
#: (a node not listening yet, or killed on purpose) is dropped.
_PROBE = "warmcast-kafka-probe"


class _NotFromProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith(_PROBE)


for _name in ("aiokafka", "aiokafka.conn", "aiokafka.cluster"):
    logging.getLogger(_name).addFilter(_NotFromProbes())


def cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never
    starting with ``-`` (which Kafka's storage tool would read as an option; Kafka's own
    ``Uuid.randomUuid`` draws again in that case too).

    >>> ids = [cluster_id() for _ in range(500)]
    >>> {len(i) for i in ids}, any(i.startswith("-") for i in ids)
    ({22}, False)
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    voters: str,
    nodes: int,
    log_dir: Path,
) -> dict[str, str]:
    """``server.properties`` of one combined broker and controller.

    >>> props = server_properties(1, "127.0.0.1", 9092, 9093, "1@127.0.0.1:9093", 3, Path("d"))
    >>> props["default.replication.factor"], props["min.insync.replicas"]
    ('3', '2')
    """
    replicas = str(min(nodes, 3))
    min_isr = "2" if nodes >= 3 else "1"
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        # Time-based retention counts from the records' own timestamps, and a replay of
        # history stamps its events with their (old) event times: kept, they stay readable.
        # The storage goes with the cluster anyway.
        "log.retention.ms": "-1",
    }


@dataclass
class KafkaNode:
    """One combined broker and controller."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log(self) -> Path:
        return self.directory / "kafka.log"

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class KafkaCluster:
    """Start, fault and stop Apache Kafka nodes on loopback.

    ``port`` is the first node's client port (the others follow it); by default every
    port is a free one.
    """

    def __init__(
        self,
        nodes: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
        heap_mb: int = HEAP_MB,
        directory: Path | None = None,
    ) -> None:
        if nodes < 1:
            raise BrokerError("a Kafka cluster needs at least one node")
        self.size = nodes
        self.host = host
        self.first_port = port
        self.heap_mb = heap_mb
        self.directory = directory
        self._owns_directory = directory is None
        self.nodes: list[KafkaNode] = []
        self._guard: subprocess.Popen[str] | None = None
        self._java: Path | None = None
        self._classpath = ""

    @property
    def bootstrap(self) -> str:
        if not self.nodes:
            raise BrokerError("the cluster is not started")
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    # -- start ----------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> KafkaCluster:
        try:
            self._java = java_binary()
            self._classpath = classpath()
        except ArtifactsError as exc:
            raise BrokerError(str(exc)) from exc
        try:
            self._lay_out()
            self._format()
            self._guard = subprocess.Popen(
                [sys.executable, "-c", _GUARD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            for node in self.nodes:
                self._launch(node)
            self.wait_brokers({n.node_id for n in self.nodes}, timeout)
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def _ports(self) -> tuple[list[int], list[int]]:
        if self.first_port is not None:
            ports = [self.first_port + i for i in range(self.size)]
            for port in ports:
                if port_in_use(self.host, port):
                    raise BrokerError(f"port {port} on {self.host} is already in use")
        else:
            ports = []
        taken = set(ports)
        chosen: list[int] = []
        while len(chosen) < self.size * 2 - len(ports):
            candidate = free_port(self.host)
            if candidate not in taken:
                taken.add(candidate)
                chosen.append(candidate)
        if not ports:
            ports, chosen = chosen[: self.size], chosen[self.size :]
        return ports, chosen

    def _lay_out(self) -> None:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="warmcast-kafka-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "log4j2.properties").write_text(_LOG4J)
        ports, controller_ports = self._ports()
        self.nodes = [
            KafkaNode(i + 1, ports[i], controller_ports[i], self.directory / f"node-{i + 1}")
            for i in range(self.size)
        ]
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes)
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            props = server_properties(
                node.node_id,
                self.host,
                node.port,
                node.controller_port,
                voters,
                self.size,
                node.directory / "data",
            )
            node.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _java_command(self, *args: str) -> list[str]:
        assert self._java is not None and self.directory is not None
        return [
            str(self._java),
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            "-cp",
            self._classpath,
            *args,
        ]

    def _format(self) -> None:
        """Format every node's storage with one cluster id (the nodes in parallel)."""
        cid = cluster_id()
        running = []
        for node in self.nodes:
            command = self._java_command(
                "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(node.properties)
            )
            log = open(node.directory / "format.log", "wb")  # noqa: SIM115
            running.append((node, log, subprocess.Popen(command, stdout=log, stderr=log)))
        for node, log, proc in running:
            code = proc.wait(120)
            log.close()
            if code != 0:
                text = (node.directory / "format.log").read_text(errors="replace")
                raise BrokerError(
                    f"formatting the storage of Kafka node {node.node_id} failed "
                    f"(exit {code}):\n" + "\n".join(text.splitlines()[-15:])
                )

    def _launch(self, node: KafkaNode) -> None:
        log: IO[bytes] = open(node.log, "ab")  # noqa: SIM115
        try:
            node.process = subprocess.Popen(
                self._java_command("kafka.Kafka", str(node.properties)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._tell_guard(f"+{node.process.pid}")

    def _tell_guard(self, line: str) -> None:
        if self._guard is not None and self._guard.stdin is not None:
            with contextlib.suppress(OSError):
                self._guard.stdin.write(line + "\n")
                self._guard.stdin.flush()

    # -- what the cluster says --------------------------------------------------------

    def metadata(self, timeout: float = 10.0) -> Any | None:
        """The cluster's metadata (aiokafka ``ClusterMetadata``) from a real metadata
        request, or ``None`` when no node answers."""

        async def fetch() -> Any:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=int(timeout * 1000),
                metadata_max_age_ms=1000,
            )
            try:
                await asyncio.wait_for(client.bootstrap(), timeout)
                return await asyncio.wait_for(client.fetch_all_metadata(), timeout)
            finally:
                await client.close()

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=_PROBE) as pool:
            try:
                return pool.submit(asyncio.run, fetch()).result()
            except Exception:
                return None

    def brokers(self) -> set[int]:
        """Ids of the brokers the cluster's metadata lists (registered and unfenced)."""
        meta = self.metadata()
        return {b.nodeId for b in meta.brokers()} if meta is not None else set()

    def leader(self, topic: str, partition: int) -> int | None:
        """The node that leads ``topic``'s ``partition`` (``None``: none now)."""
        meta = self.metadata()
        if meta is None:
            return None
        found = getattr(meta, "_partitions", {}).get(topic, {}).get(partition)
        return found.leader if found is not None and found.leader >= 0 else None

    def under_replicated(self, topics: set[str] | None = None) -> list[tuple[str, int]]:
        """Partitions (of ``topics``, else of every topic) with a replica out of sync
        or no leader; ``[("?", -1)]`` when no node answers."""
        meta = self.metadata()
        if meta is None:
            return [("?", -1)]
        lagging = []
        for topic, partitions in getattr(meta, "_partitions", {}).items():
            if topics is not None and topic not in topics:
                continue
            for number, part in partitions.items():
                if part.leader < 0 or set(part.isr) != set(part.replicas):
                    lagging.append((topic, number))
        return sorted(lagging)

    def wait_brokers(self, ids: set[int], timeout: float = 120.0) -> None:
        """Wait until every node of ``ids`` is a live broker of the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.node_id in ids and node.process is not None:
                    code = node.process.poll()
                    if code is not None:
                        raise BrokerError(
                            f"Kafka node {node.node_id} exited with code {code} while "
                            f"starting:\n{node.log_tail()}"
                        )
            if ids <= self.brokers():
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Kafka nodes {sorted(ids)} did not answer on {self.bootstrap} within "
                    f"{timeout:.0f}s"
                )
            time.sleep(0.2)

    def wait_in_sync(self, topics: set[str] | None = None, timeout: float = 120.0) -> None:
        """Wait until every partition (of ``topics``) has a leader and a full ISR."""
        deadline = time.monotonic() + timeout
        while lagging := self.under_replicated(topics):
            if time.monotonic() > deadline:
                raise BrokerError(f"partitions still out of sync after {timeout:.0f}s: {lagging}")
            time.sleep(0.2)

    def running(self) -> bool:
        """Whether every node runs (``False`` once one has ended or been stopped)."""
        return bool(self.nodes) and all(
            n.process is not None and n.process.poll() is None for n in self.nodes
        )

    def ended(self, lines: int = 40) -> list[str]:
        """What each node that ended on its own left: its id, exit code and log tail
        (empty while every node runs or was stopped on purpose).

        >>> KafkaCluster().ended()
        []
        """
        return [
            f"Kafka node {n.node_id} exited with {n.process.returncode}:\n{n.log_tail(lines)}"
            for n in self.nodes
            if n.process is not None and n.process.poll() is not None
        ]

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process is not None]

    # -- faults and stops -------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one node's JVM (its storage stays, for ``restart``)."""
        node = self.node(node_id)
        proc, node.process = node.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc is not None:
            self._tell_guard(f"-{proc.pid}")

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Stop one node cleanly (SIGTERM: controlled shutdown), SIGKILL after ``timeout``."""
        node = self.node(node_id)
        proc, node.process = node.process, None
        _terminate_all([proc] if proc is not None else [], timeout)
        if proc is not None:
            self._tell_guard(f"-{proc.pid}")

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again on its storage; wait until it serves."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            raise BrokerError(f"Kafka node {node_id} is running")
        self._launch(node)
        self.wait_brokers({node_id}, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node (SIGTERM to all at once, SIGKILL after ``timeout``), then
        remove the storage folder if this cluster made it."""
        procs = [n.process for n in self.nodes if n.process is not None]
        for node in self.nodes:
            node.process = None
        _terminate_all(procs, timeout)
        guard, self._guard = self._guard, None
        if guard is not None:
            if guard.stdin is not None:
                with contextlib.suppress(OSError):
                    guard.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                guard.wait(10)
        if self._owns_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process at once; SIGKILL whichever is still there after ``timeout``.

    The nodes stop together: one by one, the last ones would wait for a controller quorum
    that has already left.
    """
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
