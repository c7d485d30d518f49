"""The Faust app: ``faust -A streams.app worker`` or ``warmcast run``.

Settings come from the environment (see :mod:`streams.settings`); topics are created at
start if missing; agents are registered by importing :mod:`agents`.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TP
from mode.types.signals import BaseSignalT

from streams.kafka import ensure_topics
from streams.runtime import Runtime
from streams.settings import WarmcastSettings


class WarmcastApp(faust.App):
    """A Faust app that creates warmcast's topics before it subscribes to them."""

    runtime: Runtime

    async def on_first_start(self) -> None:
        await super().on_first_start()
        runtime = self.runtime
        partitions = await ensure_topics(runtime.settings)
        runtime.usage_partitions = partitions.get(
            runtime.settings.topic("usage"), runtime.settings.partitions
        )


def faust_options(settings: WarmcastSettings) -> dict[str, Any]:
    """Faust settings derived from warmcast's."""
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers or '127.0.0.1:9092'}",
        "store": "memory://",
        "datadir": settings.data_dir,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "table_standby_replicas": 0,
        "broker_rebalance_timeout": settings.rebalance_timeout_seconds,
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": settings.session_timeout_seconds / 4,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_advertised_host or settings.web_host,
        "web_port": settings.web_port,
        "producer_linger_ms": 1,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password.get_secret_value() if password else "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=None,
        )
    return options


def create_app(settings: WarmcastSettings | None = None) -> WarmcastApp:
    settings = settings or WarmcastSettings()
    app = WarmcastApp(settings.app_id, **faust_options(settings))
    app.runtime = Runtime(settings)
    return app


app = create_app()
settings = app.runtime.settings

usage_topic = app.topic(settings.topic("usage"), partitions=settings.partitions)
metrics_topic = app.topic(settings.topic("metrics"), partitions=settings.partitions)
warmup_topic = app.topic(settings.topic("warmup"), partitions=settings.partitions)
alerts_topic = app.topic(settings.topic("alerts"), partitions=settings.partitions)
health_topic = app.topic(settings.topic("health"), partitions=settings.partitions)

#: Rolling health per served model, recovered from its changelog after a restart.
model_health = app.Table(
    "model-health",
    default=None,
    partitions=settings.partitions,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
)


@app.on_partitions_revoked.connect
def _drop_decoded_health(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """Partitions going away take their decoded health with them (see Runtime)."""
    revoked: set[TP] = args[0]
    usage = settings.topic("usage")
    app.runtime.drop_decoded({tp.partition for tp in revoked if tp.topic == usage})


import agents  # noqa: E402,F401  (registers the agents and web views on ``app``)
