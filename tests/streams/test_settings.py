"""Settings come from the environment in one place, and every flag says its variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.kafka import client_kwargs, topic_specs
from streams.settings import WarmcastSettings

REPO = Path(__file__).resolve().parents[2]


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("WARMCAST_PARTITIONS", "8")
    monkeypatch.setenv("WARMCAST_KAFKA_SASL_PASSWORD", "s3cret")
    s = WarmcastSettings()
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.partitions == 8
    assert "s3cret" not in repr(s)
    assert {t.partitions for t in topic_specs(s)} == {8}


def test_sasl_settings_become_client_kwargs() -> None:
    s = WarmcastSettings(
        kafka_bootstrap_servers="k:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="p",  # type: ignore[arg-type]
    )
    kwargs = client_kwargs(s)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "p"
    assert kwargs["ssl_context"] is not None


def test_health_topic_is_compacted_and_every_input_has_a_dead_letter_topic() -> None:
    specs = {t.name: t for t in topic_specs(WarmcastSettings())}
    assert specs["warmcast.health.v1"].compacted
    for name in ("usage", "metrics", "control"):
        assert f"warmcast.{name}.v1.dlq" in specs


def test_run_help_names_the_environment_variables() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.cli", "run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for env in ("KAFKA_BOOTSTRAP_SERVERS", "WARMCAST_WEB_PORT", "WARMCAST_POLICY"):
        assert f"env: {env}" in out
