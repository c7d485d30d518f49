"""Settings: the one place that reads the environment.

Every field is an environment variable (``WARMCAST_<NAME>``; the broker address is the
usual ``KAFKA_BOOTSTRAP_SERVERS``) and a ``warmcast run`` flag of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.budget import Budget
from engine.maintenance import parse_windows
from engine.registry import PolicyUnavailable, make_budget, make_policy, parse_policy
from engine.shadow import parse_shadows


class WarmcastSettings(BaseSettings):
    # Errors never repeat the input: it may hold a secret.
    model_config = SettingsConfigDict(
        env_prefix="WARMCAST_", extra="ignore", hide_input_in_errors=True
    )

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
    policy: str = Field(
        default="hybrid", description="warmcast | hybrid | fixed:K | lru | gdsf | hybrid+lru"
    )
    knob: float = Field(
        default=1.0, gt=0, description="warmcast policy: memory-time vs cold-start trade-off"
    )
    size_weight: float = Field(
        default=0.0,
        ge=0,
        le=4,
        description="warmcast policy: price a loaded minute by (size / median size) ** this; "
        "0 plans in model-minutes, 1 in bytes",
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
    health_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        description="how often changed rolling health is written to its table (changelog)",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="the worker's event loop (asyncio's own if uvloop is missing)"
    )
    usage_batch_messages: int = Field(
        default=200,
        ge=1,
        description="usage messages the agent takes at once (decoded one by one, applied "
        "to each partition's engine together)",
    )
    usage_batch_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        description="most bytes of usage messages taken at once (envelopes fill a batch "
        "by size: about 25 of 100 events)",
    )
    usage_batch_seconds: float = Field(
        default=0.005,
        gt=0,
        description="longest wait for a batch of usage messages to fill up",
    )
    usage_catchup_batch_seconds: float = Field(
        default=0.05,
        gt=0,
        description="longest wait for a batch of usage messages while the worker is behind "
        "(a full batch or more still waiting in the partition): larger batches, less work "
        "per event",
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=0,
        description="allocations between collections of the youngest generation (Python's "
        "default is 700; 0 keeps it): fewer, still short, garbage-collector pauses",
    )
    command_queue_max: int = Field(
        default=50_000,
        ge=1,
        description="warmup commands queued for the producer before the agent waits",
    )
    producer_batch_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        description="largest record batch the producer sends (warmup commands, changelogs)",
    )
    producer_linger_ms: float = Field(
        default=0.0,
        ge=0,
        description="how long the producer gathers commands into one request (0: the "
        "commands of a batch of usage messages leave at once; under load, those queued "
        "while earlier batches wait to leave gather in the next)",
    )
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none",
        description="codec of the record batches the worker writes (commands, alerts, "
        "health, changelogs, dead letters); it reads every codec whatever this says",
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        description="longest a consumer fetch waits for data (the embedded broker holds an "
        "empty fetch this long, so it bounds event-to-command latency)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    web_advertised_host: str | None = Field(
        default=None,
        description="host other workers reach this one at (requests for a served model "
        "are routed to the worker that owns it); default: web_host",
    )
    health_windows: str = Field(
        default="60,300,3600",
        description="rolling health windows, seconds of event time, comma-separated",
    )
    health_cache_models: int = Field(
        default=10_000,
        ge=0,
        description="served models per partition whose rolling health stays decoded in memory",
    )
    health_pending_max: int = Field(
        default=5_000,
        ge=1,
        description="changed models kept decoded before their health is written early",
    )
    health_snapshot_seconds: float = Field(
        default=30.0, gt=0, description="how often changed models' health is published"
    )
    alert_for_seconds: float = Field(
        default=30.0, ge=0, description="how long a condition must hold before it fires"
    )
    alert_keep_firing_seconds: float = Field(
        default=60.0, ge=0, description="how long a firing condition must be clear to resolve"
    )
    alert_hysteresis: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="relative margin by which a value must clear its threshold to resolve",
    )
    alerts_disabled: str = Field(
        default="", description="alert kinds never raised, comma-separated"
    )
    min_volume_events: int = Field(
        default=1000,
        ge=0,
        description="fewer usage events in the volume window raise insufficient_volume (0: never)",
    )
    volume_window_seconds: float = Field(
        default=3600.0, gt=0, description="event-time window of the data-volume check"
    )
    accuracy_min: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="learner ranking (AUC of its probabilities) below this raises low_accuracy",
    )
    accuracy_min_samples: int = Field(
        default=100, ge=0, description="model-minutes scored before accuracy is judged"
    )
    decision_latency_p95_max_seconds: float = Field(
        default=0.5,
        gt=0,
        description="decision latency p95 above this raises high_decision_latency",
    )
    decision_latency_window_seconds: float = Field(
        default=300.0, gt=0, description="wall-clock window of the decision latency p95"
    )
    queue_overflow_window_seconds: float = Field(
        default=300.0,
        gt=0,
        description="warmup-queue overflows within this window raise queue_overflow",
    )
    budget_use_max: float = Field(
        default=0.99,
        gt=0,
        description="resource budget use at or above this raises budget_exhausted",
    )
    anomaly_metrics: str = Field(
        default="load_time,latency", description="metric events watched for anomalies"
    )
    anomaly_threshold: float = Field(
        default=4.0, gt=0, description="robust z-score from which a value is anomalous"
    )
    anomaly_warmup: int = Field(
        default=20, ge=2, description="values a series learns before it is judged"
    )
    health_score_min: float = Field(
        default=0.8, ge=0, le=1, description="a health score below this raises health_degraded"
    )
    checkpoint_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key that signs checkpoints of learned state; unset: "
        "checkpoints are off and a restarted worker starts learning again",
    )
    checkpoint_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="how often each partition's learned state is checkpointed (it also is "
        "when a partition is revoked and at shutdown)",
    )
    checkpoint_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="largest checkpoint written or read, compressed",
    )
    capacity_bytes: float | None = Field(
        default=None,
        gt=0,
        description="a hard memory budget of the pool: at most this many bytes loaded by "
        "lease at any minute (sizes from memory_bytes/memory_mb metric events; a model "
        "without one counts as the median of the known). Each partition of the usage topic "
        "holds an equal share (this over WARMCAST_PARTITIONS), so the pool never exceeds it "
        "wherever its partitions run; unset: no budget",
    )
    capacity_models: int | None = Field(
        default=None,
        ge=1,
        description="a hard budget counted in models (every model of size 1), shared by "
        "the partitions as WARMCAST_CAPACITY_BYTES is; at most one of the two",
    )
    max_models_per_partition: int = Field(
        default=100_000,
        ge=1,
        description="served models an engine tracks; past it the least recently seen is evicted",
    )
    max_future_skew_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="usage events further ahead of the wall clock are dead-lettered "
        "(timestamp_skew); 0: no bound",
    )
    max_past_skew_seconds: float = Field(
        default=0.0,
        ge=0,
        description="usage events further behind the wall clock are dead-lettered; 0: no bound "
        "(replays of history need none)",
    )
    # -- event time and routing ----------------------------------------------------
    watermark_tolerance_seconds: float = Field(
        default=300.0,
        ge=60,
        description="no single usage event moves its partition's event time further ahead "
        "than this: one further ahead waits until the next event (or the wall clock) "
        "confirms it, else counts in the open minute (keep it above "
        "WARMCAST_IDLE_ADVANCE_SECONDS plus two minutes)",
    )
    forwarded_share_max: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="forwarded_events fires when a larger share of the usage events in the "
        "forwarded window arrived on a partition that does not own their model",
    )
    forwarded_window_seconds: float = Field(
        default=300.0, gt=0, description="wall-clock window of the forwarded_events share"
    )
    control_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the /control endpoints and of the /health listing and "
        "model views; unset: the controls are off and /health is open",
    )
    control_max_bytes: int = Field(
        default=4096, ge=256, le=1 << 20, description="largest control command accepted"
    )
    safe_policy: str = Field(
        default="fixed:10", description="policy every engine switches to on reset-to-safe"
    )
    shadow_policies: str = Field(
        default="",
        description="candidate policies run beside the active one on the same usage, issuing "
        "no commands, scored as the backtest scores (GET /policies), comma-separated specs "
        "with knobs after colons: hybrid,warmcast:knob=2",
    )
    promotion_auto: bool = Field(
        default=False,
        description="promote a shadow candidate on its own when it dominates the active policy "
        "(engine/promotion.py says how that is judged); off: only by a promote command",
    )
    promotion_bucket_seconds: float = Field(
        default=300.0, ge=60, description="event-time bucket the policies' scores are paired in"
    )
    promotion_window_seconds: float = Field(
        default=3600.0, ge=60, description="rolling window of buckets a promotion judges"
    )
    promotion_min_buckets: int = Field(
        default=6, ge=2, description="buckets with requests needed before a promotion is judged"
    )
    promotion_min_requests: int = Field(
        default=500, ge=0, description="requests in the window needed before a promotion is judged"
    )
    promotion_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description="a candidate is promoted when the one-sided paired t-test of its cold "
        "minutes against the active policy's has a p-value below this",
    )
    promotion_min_gain_pct: float = Field(
        default=1.0, ge=0, description="fewest points of cold minutes a promotion must gain"
    )
    promotion_waste_tolerance: float = Field(
        default=1.0,
        ge=0,
        description="extra wasted model-minutes per minute with requests a promoted candidate "
        "may cost; also the waste past which the active policy has regressed",
    )
    promotion_cooldown_seconds: float = Field(
        default=1800.0, ge=0, description="event time after a change before another promotion"
    )
    rollback_auto: bool = Field(
        default=True,
        description="roll the active policy back to the previous one (or the rollback policy, "
        "when it runs as a candidate) once it has regressed past it for rollback_after_seconds "
        "and promotion_min_requests requests",
    )
    rollback_after_seconds: float = Field(
        default=900.0, ge=60, description="event time a regression lasts before a rollback"
    )
    rollback_margin_pct: float = Field(
        default=5.0,
        ge=0,
        description="points of cold minutes by which the active policy is worse than its "
        "reference in a bucket that regresses",
    )
    rollback_policy: str = Field(
        default="hybrid",
        description="what the active policy is rolled back to when no promotion came before "
        "(only when it runs as a shadow candidate)",
    )
    maintenance: str = Field(
        default="",
        description="maintenance windows, ';'-separated: during one, warm-ups are paused or "
        "capped and alerts of the models it covers do not page, e.g. 'cron=0 2 * * SUN,"
        "duration=90m,models=llama-*,mode=pause;from=2026-12-03T02:00Z,until="
        "2026-12-03T03:00Z,cap=5' (keys: cron+duration or from+until, models, mode=pause "
        "or cap=N, lead, id, alerts; README, Maintenance windows)",
    )
    broker_stall_seconds: float = Field(
        default=15.0,
        gt=0,
        description="no answer from the broker for this long raises broker_unreachable",
    )
    max_consumer_lag: int = Field(
        default=100_000,
        ge=1,
        description="usage messages behind the log end that raise consumer_lag",
    )
    # -- sending and stopping (streams/sending.py, streams/shutdown.py) --
    send_attempts: int = Field(
        default=3,
        ge=1,
        description="tries of a send that fails for a retriable reason before the input "
        "partition behind it is held (it is still tried again, less often)",
    )
    send_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest pause between two tries of a failed send (the pauses double "
        "from 0.1 s, with jitter)",
    )
    send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest a record waits for the broker before its send counts as failed",
    )
    shutdown_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="longest a stop waits for records to be delivered; then it logs what "
        "was not and exits (the input behind it is read again after a restart)",
    )
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates (TLS)"
    )
    kafka_ssl_certfile: str | None = Field(
        default=None, description="client certificate for mutual TLS (PEM)"
    )
    kafka_ssl_keyfile: str | None = Field(default=None, description="client key (PEM)")
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="check that a broker's certificate names its host"
    )
    # -- health listing and probes --------------------------------------------------
    health_list_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="most served models one /health listing answers with (?limit and "
        "?offset stay within it)",
    )
    agent_crash_loop_crashes: int = Field(
        default=3,
        ge=1,
        description="crashes of one agent within the crash-loop window that make the worker "
        "not ready and raise agent_crash_loop",
    )
    agent_crash_loop_window_seconds: float = Field(
        default=300.0, gt=0, description="window of the agent crash-loop count"
    )

    # -- signed operator controls (streams/control_feed.py, streams/control_auth.py) -----
    control_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key (at least 32 bytes) that signs control records; "
        "unset: no control record is applied and the /control actions are off",
    )
    control_max_age_seconds: float = Field(
        default=300.0, gt=0, description="control records signed longer ago are refused (stale)"
    )
    control_max_future_seconds: float = Field(
        default=60.0,
        ge=0,
        description="control records signed further ahead of the wall clock are refused",
    )
    control_replay_memory: int = Field(
        default=10_000, ge=100, description="command ids remembered to refuse a replayed record"
    )
    # -- secrets from files: WARMCAST_<SECRET>_FILE names a file that holds the secret ----
    kafka_sasl_password_file: str | None = Field(
        default=None, description="file holding the SASL password"
    )
    kafka_ssl_key_password_file: str | None = Field(
        default=None, description="file holding the password of the client key"
    )
    checkpoint_key_file: str | None = Field(
        default=None, description="file holding the checkpoint key"
    )
    control_token_file: str | None = Field(
        default=None, description="file holding the bearer token of the /control endpoints"
    )
    control_key_file: str | None = Field(
        default=None, description="file holding the key that signs control records"
    )

    @model_validator(mode="after")
    def _secrets_from_files_and_keys_long_enough(self) -> Self:
        for name in SECRETS:
            path = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{self.env_name(name)} and {self.env_name(name)}_FILE are both set: "
                    "give the secret one way"
                )
            setattr(self, name, SecretStr(_read_secret(path, self.env_name(name))))
        for name in SIGNING_KEYS:
            secret = getattr(self, name)
            size = len(secret.get_secret_value().encode()) if secret is not None else None
            if size is not None and size < MIN_KEY_BYTES:
                raise ValueError(
                    f"{self.env_name(name)} is {size} bytes: a signing key needs at least "
                    f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)"
                )
        return self

    def topic(self, name: str) -> str:
        """Full topic name: ``topic("usage")`` is ``warmcast.usage.v1``.

        >>> WarmcastSettings(topic_namespace="t1").topic("warmup")
        't1.warmup.v1'
        """
        return f"{self.topic_namespace}.{name}.v1"

    @property
    def health_window_lengths(self) -> tuple[float, ...]:
        """The rolling health windows in seconds.

        >>> WarmcastSettings(health_windows="60, 300,3600").health_window_lengths
        (60.0, 300.0, 3600.0)
        """
        return tuple(float(w) for w in self.health_windows.split(",") if w.strip())

    @property
    def disabled_alerts(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.alerts_disabled.split(",") if k.strip())

    @property
    def anomaly_metric_names(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.anomaly_metrics.split(",") if m.strip())

    @field_validator("safe_policy")
    @classmethod
    def _safe_policy_is_fixed(cls, value: str) -> str:
        kind, _, minutes = value.strip().lower().partition(":")
        if kind != "fixed" or not minutes.isdigit() or int(minutes) < 1:
            raise ValueError("the safe policy is a fixed keep-alive: fixed:K, K minutes")
        return value.strip().lower()

    @field_validator("maintenance")
    @classmethod
    def _windows_parse(cls, value: str) -> str:
        parse_windows(value)  # a WindowSpecError names the bad window and what is wrong
        return value

    @field_validator("health_windows")
    @classmethod
    def _windows_are_positive(cls, value: str) -> str:
        lengths = [w for w in value.split(",") if w.strip()]
        if not lengths or any(float(w) <= 0 for w in lengths):
            raise ValueError("health windows are positive seconds, e.g. 60,300,3600")
        return value

    def env_name(self, field: str) -> str:
        """The environment variable a field is read from."""
        alias = type(self).model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"WARMCAST_{field.upper()}"

    # -- checked before anything starts ---------------------------------------------

    @property
    def policy_knobs(self) -> dict[str, Any]:
        """The knobs :func:`engine.registry.make_policy` takes for ``policy``."""
        if self.policy != "warmcast":
            return {}
        return {"knob": self.knob, "size_weight": self.size_weight}

    @field_validator("policy")
    @classmethod
    def _policy_is_known(cls, value: str) -> str:
        return parse_policy(value)

    def partition_budget(self) -> Budget | None:
        """A fresh memory budget of one partition: its share of the pool's capacity.

        >>> WarmcastSettings(capacity_bytes=8e9, partitions=4).partition_budget().capacity
        2000000000.0
        >>> WarmcastSettings(capacity_models=10, partitions=4).partition_budget().capacity
        2.5
        >>> WarmcastSettings().partition_budget() is None
        True
        """
        if self.capacity_models is not None:
            share = self.capacity_models / self.partitions
            return make_budget(self.policy, share, default_size=1.0, counts_models=True)
        if self.capacity_bytes is not None:
            return make_budget(self.policy, self.capacity_bytes / self.partitions)
        return None

    @model_validator(mode="after")
    def _settings_agree(self) -> WarmcastSettings:
        """Rules between settings; each message names the variables involved."""
        env = self.env_name
        if self.capacity_bytes is not None and self.capacity_models is not None:
            raise ValueError(
                f"{env('capacity_bytes')} and {env('capacity_models')} are both set: "
                "give the budget one way"
            )
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{env('kafka_security_protocol')}={protocol} needs "
                f"{env('kafka_sasl_username')} and {env('kafka_sasl_password')}"
            )
        tls_files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        given = [env(name) for name in tls_files if getattr(self, name)]
        if given and not protocol.endswith("SSL"):
            raise ValueError(
                f"{', '.join(given)} would not be used: TLS needs "
                f"{env('kafka_security_protocol')}=SSL or SASL_SSL (it is {protocol})"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError(
                f"{env('kafka_ssl_keyfile')} needs the certificate it belongs to: "
                f"{env('kafka_ssl_certfile')}"
            )
        return self


#: Settings that are secrets: never flags, read from ``WARMCAST_<NAME>`` or from the file
#: ``WARMCAST_<NAME>_FILE`` names (``--<name>-file PATH``).
SECRETS = (
    "kafka_sasl_password",
    "kafka_ssl_key_password",
    "checkpoint_key",
    "control_token",
    "control_key",
)
#: HMAC keys, refused when shorter than :data:`MIN_KEY_BYTES`.
SIGNING_KEYS = ("checkpoint_key", "control_key")
MIN_KEY_BYTES = 32


def _read_secret(path: str, env: str) -> str:
    """A secret kept in a file: its text without the trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{env}_FILE: cannot read {path}: {exc.strerror or exc}") from exc
    if not text:
        raise ValueError(f"{env}_FILE: {path} is empty")
    return text


class SettingsError(ValueError):
    """Settings a worker cannot start with; the message names each variable and flag."""


def load_settings(**values: Any) -> WarmcastSettings:
    """:class:`WarmcastSettings` from the environment (``values`` override it); raises
    :class:`SettingsError` with one line per bad setting.

    >>> load_settings(policy="nonsense", partitions=0)
    Traceback (most recent call last):
    ...
    streams.settings.SettingsError: invalid settings:
      WARMCAST_PARTITIONS (--partitions): Input should be greater than or equal to 1
      WARMCAST_POLICY (--policy): unknown policy 'nonsense': use fixed:K (K minutes), hybrid, ...
    """
    try:
        return WarmcastSettings(**values)
    except ValidationError as exc:
        raise SettingsError(describe_invalid(exc)) from None


def check_policies(settings: WarmcastSettings) -> None:
    """Build the policy and the safe policy once, as the worker will; raises
    :class:`SettingsError` naming the setting if either cannot be built here."""
    try:
        shadows = parse_shadows(settings.shadow_policies)
    except ValueError as exc:
        raise SettingsError(
            f"invalid settings:\n  {settings.env_name('shadow_policies')} "
            f"(--shadow-policies) = {settings.shadow_policies!r}: {exc}"
        ) from None
    for field, spec, knobs in (
        ("policy", settings.policy, settings.policy_knobs),
        ("safe_policy", settings.safe_policy, {}),
        *(("shadow_policies", shadow, knobs) for shadow, knobs in shadows.values()),
    ):
        try:
            make_policy(spec, **knobs)
        except (PolicyUnavailable, TypeError, ValueError) as exc:
            flag = "--" + field.replace("_", "-")
            raise SettingsError(
                f"invalid settings:\n  {settings.env_name(field)} ({flag}) = {spec!r}: {exc}"
            ) from None


def describe_invalid(exc: ValidationError) -> str:
    """A :class:`ValidationError` of the settings as lines that name variables and flags."""
    fields = WarmcastSettings.model_fields
    defaults = WarmcastSettings.model_construct()
    lines = ["invalid settings:"]
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        where = str(error["loc"][0]) if error["loc"] else ""
        field = where if where in fields else where.lower().removeprefix("warmcast_")
        if field in SECRETS:  # a secret has no flag
            lines.append(f"  {defaults.env_name(field)}: {message}")
        elif field in fields:  # never the input: it may be a secret in the wrong place
            flag = "--" + field.replace("_", "-")
            lines.append(f"  {defaults.env_name(field)} ({flag}): {message}")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)
