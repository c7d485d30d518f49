"""Kafka TLS and SASL settings reach both the Faust worker and the tools' clients, and no
secret is ever shown."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.app import faust_options
from streams.kafka import client_kwargs
from streams.security import broker_credentials, ssl_context, token_matches
from streams.settings import WarmcastSettings

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "kafka_sasl_password": "sasl-pass-9f3a",
    "kafka_ssl_key_password": "key-pass-77c1",
    "checkpoint_key": "checkpoint-key-51d0-of-the-security-tests",
    "control_key": "control-key-8c2e-of-the-security-tests",
    "control_token": "control-token-e2b4",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, and a client certificate it signed with a password-protected key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    password = SECRETS["kafka_ssl_key_password"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out"),
        *("ca.pem", "-days", "2", "-subj", "/CN=warmcast-test-ca"),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-keyout", "client.key", "-out", "client.csr"),
        *("-subj", "/CN=warmcast-worker", "-passout", f"pass:{password}"),
    )
    openssl(
        *("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "client.pem", "-days", "2"),
    )
    return {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"), "key": str(d / "client.key")}


def test_mutual_tls_files_become_one_context_for_faust_and_the_tools(pki: dict[str, str]) -> None:
    settings = WarmcastSettings(
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
        kafka_ssl_key_password=SECRETS["kafka_ssl_key_password"],  # type: ignore[arg-type]
    )
    context = ssl_context(settings)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert any(
        c["subject"] == ((("commonName", "warmcast-test-ca"),),) for c in context.get_ca_certs()
    )
    tools = client_kwargs(settings)
    assert tools["security_protocol"] == "SSL" and isinstance(tools["ssl_context"], ssl.SSLContext)
    worker = credentials_to_aiokafka_auth(faust_options(settings)["broker_credentials"])
    assert worker["security_protocol"] == "SSL"
    assert isinstance(worker["ssl_context"], ssl.SSLContext)


def test_a_wrong_key_password_fails_at_start_not_later(pki: dict[str, str]) -> None:
    settings = WarmcastSettings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
        kafka_ssl_key_password="wrong",  # type: ignore[arg-type]
    )
    with pytest.raises(ssl.SSLError):
        ssl_context(settings)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_reaches_the_worker(mechanism: str) -> None:
    settings = WarmcastSettings(
        kafka_bootstrap_servers="broker:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="warmcast",
        kafka_sasl_password=SECRETS["kafka_sasl_password"],  # type: ignore[arg-type]
        kafka_ssl_check_hostname=False,
    )
    worker = credentials_to_aiokafka_auth(broker_credentials(settings))
    assert worker["security_protocol"] == "SASL_SSL"
    assert worker["sasl_mechanism"] == mechanism
    assert worker["sasl_plain_password"] == SECRETS["kafka_sasl_password"]
    assert worker["ssl_context"].check_hostname is False
    tools = client_kwargs(settings)
    assert tools["sasl_mechanism"] == mechanism and tools["ssl_context"] is not None


def test_plaintext_has_no_credentials() -> None:
    assert broker_credentials(WarmcastSettings()) is None
    assert "broker_credentials" not in faust_options(WarmcastSettings())
    sasl = credentials_to_aiokafka_auth(
        broker_credentials(
            WarmcastSettings(
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_username="u",
                kafka_sasl_password="p",  # type: ignore[arg-type]
            )
        )
    )
    assert sasl["security_protocol"] == "SASL_PLAINTEXT" and sasl["ssl_context"] is None


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"WARMCAST_{name.upper()}", value)
    settings = WarmcastSettings()
    shown = repr(settings) + str(settings) + repr(broker_credentials(settings))
    shown += repr(settings.model_dump())
    for value in SECRETS.values():
        assert value not in shown
    assert settings.checkpoint_key is not None
    assert settings.checkpoint_key.get_secret_value() == SECRETS["checkpoint_key"]
    help_text = subprocess.run(
        [sys.executable, "-m", "tools.cli", "worker", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "WARMCAST_CHECKPOINT_KEY" in help_text and "WARMCAST_CONTROL_TOKEN" in help_text
    for value in SECRETS.values():
        assert value not in help_text


def test_tokens_are_compared_whole() -> None:
    assert token_matches("Bearer s3cret", "s3cret")
    assert token_matches("bearer  s3cret ", "s3cret")
    for presented in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "", "Bearer "):
        assert not token_matches(presented, "s3cret")
    assert not token_matches("Bearer ", "")
