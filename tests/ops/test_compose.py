"""docker-compose.yml, checked without a Docker daemon: structure, pinned images, files
that exist, and environment and ports consistent with the settings and Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.settings import WarmcastSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


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
        (mapping,) = service["ports"]
        host, _, container = mapping.partition(":")
        assert container == port
        host_ports.append(host)
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    all_ports = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(all_ports) == len(set(all_ports)), "host ports must be distinct"
    assert compose["services"]["topics"]["command"] == ["warmcast", "topics", "create"]


def test_prometheus_loads_the_rules_it_is_given(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    mounted = {
        v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]
    }
    for rule_file in prometheus["rule_files"]:
        assert rule_file in mounted
        rules = yaml.safe_load((REPO / mounted[rule_file]).read_text())
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
