"""Settings come from the environment in one place, and every flag says its variable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.kafka import client_kwargs, topic_specs
from streams.settings import SECRETS, SettingsError, WarmcastSettings, load_settings

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


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("hybrid", "hybrid"),
        (" WarmCast ", "warmcast"),
        ("fixed:10", "fixed:10"),
        ("FIXED:020", "fixed:20"),
    ],
)
def test_policy_specs_are_read_in_their_canonical_form(spec: str, canonical: str) -> None:
    assert load_settings(policy=spec).policy == canonical


@pytest.mark.parametrize(
    "spec", ["nonsense", "fixed", "fixed:", "fixed:0", "fixed:-5", "fixed:1.5", "fixed:x", ""]
)
def test_a_policy_spec_that_names_no_policy_is_refused(spec: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(policy=spec)
    assert "WARMCAST_POLICY (--policy)" in str(refused.value)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "WARMCAST_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_password": "p"},
            "WARMCAST_KAFKA_SASL_USERNAME",
        ),
        ({"kafka_ssl_cafile": "/etc/ca.pem"}, "WARMCAST_KAFKA_SSL_CAFILE"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/key.pem"},
            "WARMCAST_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_refused(
    values: dict[str, Any], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(**values)


def test_every_bad_setting_is_named_and_no_secret_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMCAST_PARTITIONS", "many")
    monkeypatch.setenv("WARMCAST_SAFE_POLICY", "hybrid")
    with pytest.raises(SettingsError) as refused:
        load_settings(checkpoint_key=["s3cret value"])
    lines = str(refused.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert sorted(line.split()[0] for line in lines[1:]) == [
        "WARMCAST_CHECKPOINT_KEY:",
        "WARMCAST_PARTITIONS",
        "WARMCAST_SAFE_POLICY",
    ]
    assert "many" not in str(refused.value)  # no input is repeated: it may be a secret
    assert "s3cret" not in str(refused.value)


def test_sasl_credentials_may_come_from_a_file(tmp_path: Path) -> None:
    password = tmp_path / "sasl"
    password.write_text("a SASL password kept in a file\n")
    s = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password_file=str(password),
    )
    assert s.kafka_sasl_password is not None


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """``warmcast ARGS`` as a process of its own; killed with everything it started if it
    is still running after ``timeout`` (a command that should have refused to start)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WARMCAST_")}
    full_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    full_env.update(env)
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"warmcast {' '.join(args)} was still running after {timeout:.0f}s:\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["run", "--policy", "nonsense"], {}, "WARMCAST_POLICY (--policy)"),
        (["worker"], {"WARMCAST_POLICY": "nonsense"}, "WARMCAST_POLICY (--policy)"),
        (["worker", "--policy", "fixed:0"], {}, "WARMCAST_POLICY (--policy)"),
        (["demo", "--policy", "nonsense", "--exit"], {}, "--policy: unknown policy 'nonsense'"),
        (["demo", "--exit"], {"WARMCAST_POLICY": "nonsense"}, "WARMCAST_POLICY (--policy)"),
        (
            ["run"],
            {"WARMCAST_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "WARMCAST_KAFKA_SASL_USERNAME",
        ),
        (["tail", "warmup"], {"WARMCAST_PARTITIONS": "0"}, "WARMCAST_PARTITIONS (--partitions)"),
    ],
)
def test_a_bad_setting_stops_a_command_before_it_starts_anything(
    args: list[str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    """The worker, ``run`` (which would start a broker first) and the demo refuse at once:
    status 2 and the setting's name, no broker started, no worker ready."""
    if args[0] == "demo":
        args = [*args, "--out", str(tmp_path / "demo")]
    if args[0] == "worker":
        env = {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # never reached
    done = run_cli(args, env)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert done.stderr.startswith(f"warmcast {args[0]}: ")
    assert "Traceback" not in done.stderr
    assert "embedded broker on" not in done.stderr
    assert not (tmp_path / "demo").exists()
