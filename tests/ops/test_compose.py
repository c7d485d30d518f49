"""docker-compose.yml, checked without a Docker daemon: structure, pinned images, files
that exist, and environment and ports consistent with the settings and Prometheus."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.settings import WarmcastSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


#: What a user must set for ``docker compose up`` to start at all.
REQUIRED_ENV = {"GRAFANA_ADMIN_PASSWORD": "a password of the tests"}
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}"
)


class MissingVariable(LookupError):
    """A ``${NAME:?message}`` whose variable is unset or empty: compose refuses to start."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of the forms the file uses: ``${NAME}``,
    ``${NAME:-default}``, ``${NAME:?message}`` and ``$$``.

    >>> interpolate("${A:-x}:${B}:$$", {"B": "2"})
    'x:2:$'
    """

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m["name"], "")
        if m["op"] == ":-":
            return value or m["arg"]
        if m["op"] == ":?" and not value:
            raise MissingVariable(f"{m['name']}: {m['arg']}")
        return value

    out = _VARIABLE.sub(one, text)
    assert "${" not in out, f"a variable form the tests do not know: {out}"
    return out


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    return dict(yaml.safe_load(interpolate(COMPOSE.read_text(), env)))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(REQUIRED_ENV)


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each port a service publishes."""
    out = []
    for mapping in service.get("ports", []):
        parts = str(mapping).split(":")
        assert len(parts) == 3, f"{mapping}: publish on an address, not on every interface"
        out.append((parts[0], parts[1], parts[2]))
    return out


def warmcast_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("build")}


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in warmcast_services(compose).items() if s["command"][-1] == "worker"}


def test_services_are_all_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "topics", "prometheus", "grafana"} <= set(services)
    assert len(workers(compose)) >= 2
    assert "KRaft" in COMPOSE.read_text() or "controller" in str(services["kafka"])
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("build"):
            assert (REPO / service["build"] / "Dockerfile").is_file(), name
            continue
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and any(c.isdigit() for c in tag), image


def test_referenced_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"


def test_environment_names_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = WarmcastSettings.model_construct()
    known = {defaults.env_name(f) for f in WarmcastSettings.model_fields}
    for name, service in warmcast_services(compose).items():
        env = service["environment"]
        assert set(env) <= known, f"{name}: {sorted(set(env) - known)}"
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, str(value))
            settings = WarmcastSettings()  # every value is valid
        assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_workers_are_reachable_where_prometheus_looks(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    host_ports = []
    for name, service in workers(compose).items():
        env = service["environment"]
        port = env["WARMCAST_WEB_PORT"]
        assert env["WARMCAST_WEB_HOST"] == "0.0.0.0"
        assert env["WARMCAST_WEB_ADVERTISED_HOST"] == service.get("hostname", name)
        assert f"{env['WARMCAST_WEB_ADVERTISED_HOST']}:{port}" in targets
        ((_, host, container),) = published(service)
        assert container == port
        host_ports.append(host)
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    all_ports = [p[1] for s in compose["services"].values() for p in published(s)]
    assert len(all_ports) == len(set(all_ports)), "host ports must be distinct"
    assert compose["services"]["topics"]["command"] == ["warmcast", "topics", "create"]


def test_prometheus_loads_the_rules_it_is_given(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    mounted = {
        v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]
    }
    config_dir = posixpath.dirname(
        next(c for c, h in mounted.items() if h.endswith("prometheus.yml"))
    )
    for rule_file in prometheus["rule_files"]:
        in_container = posixpath.join(config_dir, rule_file)  # relative to the config file
        assert in_container in mounted, in_container
        rules = yaml.safe_load((REPO / mounted[in_container]).read_text())
        assert all(
            r["expr"] and r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]
        )


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: REPO / v.split(":")[0] for v in grafana["volumes"]}
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards/warmcast.yml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    dashboard = orjson.loads((dashboards / "warmcast.json").read_bytes())
    assert dashboard["uid"] == "warmcast" and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert all(t["expr"] for t in panel["targets"])


def test_every_port_is_published_on_loopback_unless_asked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    publishing = {name for name, s in services.items() if s.get("ports")}
    assert {"kafka", "prometheus", "grafana", *workers(compose)} <= publishing
    for name in publishing:
        assert {address for address, _, _ in published(services[name])} == {"127.0.0.1"}, name
    everywhere = load_compose({**REQUIRED_ENV, "WARMCAST_BIND_ADDRESS": "0.0.0.0"})
    for name in publishing:
        assert {a for a, _, _ in published(everywhere["services"][name])} == {"0.0.0.0"}, name


def test_grafana_takes_its_admin_password_from_the_environment_or_does_not_start() -> None:
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        load_compose({})
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        load_compose({"GRAFANA_ADMIN_PASSWORD": ""})
    chosen = load_compose({"GRAFANA_ADMIN_PASSWORD": "s3cret-of-the-operator"})
    env = chosen["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-of-the-operator"
    raw = COMPOSE.read_text()
    assert "GRAFANA_ADMIN_PASSWORD:-" not in raw, "no default password"
    assert "admin/admin" not in raw.replace(" ", "")


def test_health_checks_ask_the_constant_time_readiness_probe(compose: dict[str, Any]) -> None:
    """Docker's and compose's health checks ask ``/readyz`` (never the listing, which grows
    with the models and may want a token), on the port the worker serves."""
    dockerfile = (REPO / "Dockerfile").read_text()
    check = dockerfile[dockerfile.index("HEALTHCHECK") :].split("CMD", 1)[1].splitlines()[0]
    assert "/readyz" in check and "/health'" not in check
    for name, service in workers(compose).items():
        test = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in test and "/health'" not in test, name
        assert "WARMCAST_WEB_PORT" in test, name
        assert service["healthcheck"]["retries"] >= 1


#: Properties of a Kafka node that name its own addresses and folders: the compose file's are
#: the container's (``kafka:9092`` for the
#: workers, ``localhost:29092`` for the host).
PER_DEPLOYMENT = {
    "controller.quorum.voters",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "log.dirs",
}


def test_kafka_is_the_broker_the_tests_start(compose: dict[str, Any]) -> None:
    """docker-compose.yml's Kafka is the release the tests start (streams/kafka_broker.py),
    a combined broker and controller in KRaft mode with that node's every other setting."""
    from streams.kafka_artifacts import KAFKA_VERSION
    from streams.kafka_broker import server_properties

    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = kafka["environment"]
    in_compose = {
        k.removeprefix("KAFKA_").lower().replace("_", "."): str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_")
    }
    tested = server_properties(1, "127.0.0.1", 9092, 9093, "1@127.0.0.1:9093", 1, Path("d"))
    assert {k: in_compose.get(k) for k in tested if k not in PER_DEPLOYMENT} == {
        k: v for k, v in tested.items() if k not in PER_DEPLOYMENT
    }
    assert set(in_compose) - set(tested) == set()
    assert in_compose["controller.quorum.voters"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in in_compose["advertised.listeners"]
