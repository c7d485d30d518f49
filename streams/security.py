"""The Kafka connection's security (TLS, SASL) and the checks of the operator's token.

Secrets stay :class:`~pydantic.SecretStr` until the one call that needs them, so that no
repr, log line or ``--help`` text ever shows them.
"""

from __future__ import annotations

import hmac
import ssl
from typing import Any

import faust

from streams.settings import WarmcastSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def ssl_context(settings: WarmcastSettings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka connection; ``None`` when it is not encrypted.

    The CA file (default: the system's trust store) verifies the brokers; a client
    certificate and key, when given, identify the worker (mutual TLS).

    >>> ssl_context(WarmcastSettings()) is None
    True
    >>> ssl_context(WarmcastSettings(kafka_security_protocol="SSL")).verify_mode.name
    'CERT_REQUIRED'
    """
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password=password.get_secret_value() if password else None,
        )
    return context


def broker_credentials(settings: WarmcastSettings) -> Any:
    """Faust's ``broker_credentials`` for the configured protocol (``None``: plaintext).

    >>> broker_credentials(WarmcastSettings(
    ...     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
    ...     kafka_sasl_username="warmcast", kafka_sasl_password="s3cret"))
    <SASLCredentials: username=warmcast>
    """
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password.get_secret_value() if password else "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def token_matches(presented: str | None, expected: str) -> bool:
    """Whether a presented bearer token is the expected one, in constant time.

    >>> token_matches("Bearer abc", "abc"), token_matches("Bearer abd", "abc")
    (True, False)
    >>> token_matches(None, "abc"), token_matches("abc", "abc")
    (False, False)
    """
    if not presented or not expected:
        return False
    scheme, _, token = presented.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


__all__ = ["broker_credentials", "ssl_context", "token_matches"]
