"""Settings come from the environment in one place, and every flag says its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.kafka import client_kwargs, topic_specs
from streams.settings import SECRETS, WarmcastSettings

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


def test_a_signing_key_under_32_bytes_is_refused() -> None:
    for name in ("checkpoint_key", "control_key"):
        assert WarmcastSettings(**{name: "k" * 32}).model_dump()[name] is not None
        with pytest.raises(ValueError, match="is 31 bytes: a signing key needs at least 32"):
            WarmcastSettings(**{name: "k" * 31})


def test_a_short_key_stops_the_worker_at_start_with_a_clear_error(tmp_path: Path) -> None:
    for env in ("WARMCAST_CHECKPOINT_KEY", "WARMCAST_CONTROL_KEY"):
        done = subprocess.run(
            [sys.executable, "-m", "tools.cli", "worker"],
            cwd=REPO,
            env={**os.environ, env: "short-secret", "WARMCAST_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert f"{env} is 12 bytes: a signing key needs at least 32" in done.stderr
        assert "short-secret" not in done.stderr + done.stdout  # errors never echo a secret
        assert "Traceback" not in done.stderr


def test_secrets_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "control.key"
    key.write_text("a control key kept in a file, 32+ bytes\n")
    monkeypatch.setenv("WARMCAST_CONTROL_KEY_FILE", str(key))
    monkeypatch.setenv("WARMCAST_KAFKA_SASL_PASSWORD_FILE", str(key))
    s = WarmcastSettings()
    assert s.control_key is not None and s.kafka_sasl_password is not None
    assert s.control_key.get_secret_value() == "a control key kept in a file, 32+ bytes"
    monkeypatch.setenv("WARMCAST_CONTROL_KEY", "the same key, given twice: 32+ bytes")
    with pytest.raises(ValueError, match="WARMCAST_CONTROL_KEY_FILE are both set"):
        WarmcastSettings()
    monkeypatch.delenv("WARMCAST_CONTROL_KEY")
    monkeypatch.setenv("WARMCAST_CONTROL_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="WARMCAST_CONTROL_KEY_FILE: cannot read"):
        WarmcastSettings()


def test_secrets_are_never_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.cli import _apply_settings_flags, build_parser

    help_text = subprocess.run(
        [sys.executable, "-m", "tools.cli", "worker", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "Secrets are never flags" in " ".join(help_text.split())
    for name in SECRETS:
        flag = "--" + name.replace("_", "-")
        assert f"{flag} " not in help_text and f"{flag}-file PATH" in help_text
        with pytest.raises(SystemExit):
            build_parser().parse_args(["worker", flag, "hunter2-s3cret"])
        refused = capsys.readouterr().err
        assert f"{flag} is not accepted" in refused and "-file PATH" in refused
        assert "hunter2-s3cret" not in refused
    key = tmp_path / "checkpoint.key"
    key.write_text("a checkpoint key kept in a file, 32+ bytes")
    args = build_parser().parse_args(["worker", "--checkpoint-key-file", str(key)])
    monkeypatch.setenv("WARMCAST_CHECKPOINT_KEY_FILE", "")  # undone after the test
    _apply_settings_flags(args)
    settings = WarmcastSettings()
    assert settings.checkpoint_key is not None
    assert settings.checkpoint_key.get_secret_value() == key.read_text()
