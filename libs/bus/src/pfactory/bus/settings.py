"""Bus settings: every Kafka client the platform builds is configured from these."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.contracts import topics
from pfactory.telemetry.settings import TelemetrySettings


class BusSettings(BaseSettings):
    """Kafka connection and delivery settings (env prefix ``PF_BUS_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_BUS_", extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    client_id: str = Field(default="pfactory", description="Client id prefix reported to the broker.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: str | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates."
    )
    ssl_certfile: str | None = Field(default=None, description="Client certificate for mutual TLS.")
    ssl_keyfile: str | None = Field(default=None, description="Client key for mutual TLS.")
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Consumer group session timeout; a dead member expires after it.",
    )
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="Consumer heartbeat interval.")
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        description="Longest a consumer's fetch waits for records. Kafka answers a waiting fetch as soon "
        "as a record arrives; the embedded Tansu broker waits this long, so the embedded stack sets it low "
        "(each hop between services costs up to this much, at the price of more idle polling).",
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Handler attempts for a transient error before dead-lettering."
    )
    retry_backoff_initial_s: float = Field(
        default=0.2, gt=0, description="First retry delay; doubles each try."
    )
    retry_backoff_max_s: float = Field(default=5.0, gt=0, description="Upper bound of a retry delay.")
    create_topics: bool = Field(
        default=True, description="Create the platform's topics with their partition counts on start-up."
    )
    dead_letter_topic: str = Field(
        default=topics.DEAD_LETTER,
        description="Where poison messages and exhausted or permanent handler failures go.",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics ensure_topics creates (3 in production)."
    )
    producer_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; Tansu rejects InitProducerId, so enable it on real Kafka only.",
    )


class ServiceSettings(BaseSettings):
    """What every worker service shares; each subclasses it with its env prefix and defaults."""

    model_config = SettingsConfigDict(extra="forbid")

    bus: BusSettings = Field(
        default_factory=BusSettings, description="Kafka connection and delivery (env prefix PF_BUS_)."
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="Metrics, traces and log format (env prefix PF_TELEMETRY_).",
    )
    group_id: str = Field(description="Consumer group of the service's input topic, shared by its instances.")
    health_host: str = Field(
        default="127.0.0.1", description="Interface the /health and /ready endpoints bind."
    )
    health_port: int = Field(ge=0, le=65535, description="Port of the /health and /ready endpoints.")
    log_level: str = Field(default="INFO", description="Python logging level name.")
