"""Settings: the one place that reads the environment.

Every field is an environment variable (``WARMCAST_<NAME>``; the broker address is the
usual ``KAFKA_BOOTSTRAP_SERVERS``) and a ``warmcast run`` flag of the same name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WarmcastSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARMCAST_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "WARMCAST_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka bootstrap servers, host:port[,host:port]; unset: embedded broker",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="security protocol of the Kafka connection"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    app_id: str = Field(default="warmcast", description="consumer group and table prefix")
    topic_namespace: str = Field(
        default="warmcast", description="prefix of every topic name (<namespace>.usage.v1)"
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="partitions of new topics")
    replication_factor: int = Field(default=1, ge=1, le=16)
    web_host: str = Field(default="127.0.0.1", description="address of /health and /metrics")
    web_port: int = Field(default=6066, ge=0, le=65535, description="port of the web server")
    data_dir: str = Field(default=".warmcast", description="worker's local state directory")
    policy: str = Field(default="hybrid", description="warmcast | hybrid | fixed:K")
    knob: float = Field(
        default=1.0, gt=0, description="warmcast policy: memory-time vs cold-start trade-off"
    )
    max_message_bytes: int = Field(default=1 << 20, ge=1024, description="larger is dead-lettered")
    max_envelope_events: int = Field(default=10_000, ge=1)
    stale_after_seconds: float = Field(
        default=300.0, gt=0, description="no usage event for this long raises stale_data"
    )
    dead_letter_burst: int = Field(
        default=100, ge=1, description="dead letters within the burst window that raise an alert"
    )
    dead_letter_window_seconds: float = Field(default=60.0, gt=0)
    health_window_seconds: float = Field(
        default=300.0, gt=0, description="event-time window of the rolling health rates"
    )
    alert_check_seconds: float = Field(default=5.0, gt=0, description="how often alerts run")
    idle_advance_seconds: float = Field(
        default=90.0,
        gt=0,
        description="live mode: close minutes of a partition idle this long on the wall clock",
    )
    rebalance_timeout_seconds: float = Field(
        default=3.0, gt=0, description="consumer-group rebalance timeout"
    )
    session_timeout_seconds: float = Field(
        default=6.0,
        ge=6.0,
        description="consumer-group session timeout (a group join on the embedded broker "
        "takes about half of it)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def topic(self, name: str) -> str:
        """Full topic name: ``topic("usage")`` is ``warmcast.usage.v1``.

        >>> WarmcastSettings(topic_namespace="t1").topic("warmup")
        't1.warmup.v1'
        """
        return f"{self.topic_namespace}.{name}.v1"

    def env_name(self, field: str) -> str:
        """The environment variable a field is read from."""
        alias = type(self).model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"WARMCAST_{field.upper()}"
