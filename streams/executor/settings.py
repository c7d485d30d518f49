"""The executor's own settings (``WARMCAST_EXECUTOR_<NAME>``; the broker, topics and
control key are the worker's: :class:`~streams.settings.WarmcastSettings`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WARMCAST_EXECUTOR_", extra="ignore", hide_input_in_errors=True
    )

    target: str = Field(default="", description="model server, e.g. kserve-v2://host:port")
    group: str = Field(
        default="",
        description="consumer group of the warmup topic (default: <app id>-executor); "
        "executors of one group share the topic's partitions",
    )
    concurrency: int = Field(default=4, ge=1, le=1024, description="loads at once")
    load_timeout_seconds: float = Field(default=300.0, gt=0, description="longest one load")
    call_timeout_seconds: float = Field(
        default=15.0, gt=0, description="longest an unload or an index call takes"
    )
    attempts: int = Field(default=3, ge=1, description="tries of a call before it fails")
    retry_max_seconds: float = Field(
        default=5.0, gt=0, description="longest pause between tries (doubling from 0.2 s, jitter)"
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="failures in a row that open the target's circuit"
    )
    breaker_cooldown_seconds: float = Field(
        default=5.0, gt=0, description="an open circuit lets a probe through after this"
    )
    breaker_max_cooldown_seconds: float = Field(default=60.0, gt=0)
    resync_seconds: float = Field(
        default=10.0, gt=0, description="how often the server's index of loaded models is read"
    )
    lead_seconds: float = Field(
        default=0.0,
        ge=0,
        description="load this long before a lease starts, until a load time is measured",
    )
    failed_retry_seconds: float = Field(
        default=30.0, gt=0, description="a model whose load failed is tried again after this"
    )
    web_host: str = Field(default="127.0.0.1", description="address of /metrics and /status")
    web_port: int = Field(default=6067, ge=0, le=65535, description="0: no web server")


__all__ = ["ExecutorSettings"]
