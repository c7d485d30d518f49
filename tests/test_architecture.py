"""The house: warmcast's packages and modules import each other in one direction only
(read from the source, imports inside functions included), and the usage path reads
agent -> partition step -> publisher."""

from __future__ import annotations

import ast
from pathlib import Path

from tools.architecture import cycles, problems, read_graph

ROOT = Path(__file__).resolve().parent.parent


def test_no_package_imports_another_that_imports_it_back() -> None:
    graph = read_graph()
    assert cycles(graph.packages()) == []
    packages = graph.packages()
    assert packages["engine"] == set()  # pure, at the bottom
    assert "agents" not in packages["streams"]  # the app is made without its agents


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert problems(read_graph()) == []


def test_the_usage_path_reads_in_one_direction() -> None:
    imports = read_graph().imports
    assert {"engine.partition", "streams.app"} <= imports["agents.usage"]
    assert "engine.partition" in imports["streams.runtime"]
    assert "streams.publishers" in imports["streams.app"]
    assert not any(m.startswith(("agents", "streams")) for m in imports["engine.partition"])


def test_first_party_imports_inside_functions_only_defer_a_heavy_load() -> None:
    """Outside the command line (whose subcommands load what they need when run), a module
    imports warmcast's own modules at its top; the one exception defers river until the
    learned policy is asked for."""
    local = {(m, target) for m, target in read_graph().local if not m.startswith("tools")}
    assert local == {("engine.registry", "engine.warmcast")}


def test_agents_make_no_kafka_client_of_their_own() -> None:
    """Agents wire work onto the app; the Kafka clients of their own (the control topic's
    follower, the restore's reads by offset) live in streams/."""
    clients = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
    found = []
    for path in sorted((ROOT / "agents").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and "aiokafka" in node.module:
                found += [f"{path.name}: {a.name}" for a in node.names if a.name in clients]
    assert found == []
