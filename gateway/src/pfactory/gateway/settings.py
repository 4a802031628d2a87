"""Gateway settings (env prefix ``PF_GATEWAY_``), built at the entry point and passed down."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.registry.wiring import RegistrySettings
from pfactory.telemetry.settings import TelemetrySettings

API_KEY_PATTERN = re.compile(r"^pf_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{32,})$")


class GatewaySettings(BaseSettings):
    """HTTP server, job store, outbox relay, registry feed and bootstrap credentials of the gateway."""

    model_config = SettingsConfigDict(env_prefix="PF_GATEWAY_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port uvicorn listens on.")
    data_dir: Path = Field(default=Path("./.pfactory"), description="Folder for the gateway's local state.")
    sqlite_path: Path | None = Field(
        default=None,
        description="SQLite file for jobs, outbox and API keys; defaults to <data_dir>/gateway.db.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description=(
            "Development only: an API key (format pf_<12 hex>_<32+ url-safe chars>) installed with every "
            "scope on start-up, so a fresh stack has a first admin. Generate one with "
            "`python -m pfactory.gateway new-key`."
        ),
    )
    bus_enabled: bool = Field(
        default=True, description="Publish to and consume from Kafka (PF_BUS_* settings); off = outbox only."
    )
    outbox_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often the relay looks for unpublished outbox rows when idle."
    )
    outbox_backoff_max_s: float = Field(
        default=10.0, gt=0, description="Upper bound of the relay's retry delay while the broker is down."
    )
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one publish may take before the relay counts it failed."
    )
    stale_job_republish_age_s: float | None = Field(
        default=900.0,
        gt=0,
        description=(
            "A job not terminal and not updated for this long has its request re-published (same event_id); "
            "None disables the periodic sweep (start-up re-publication always runs)."
        ),
    )
    registry_feed_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How often the registry feed polls the registry's change log when idle (the gateway's own "
            "changes wake it at once; the registrar's are seen at the next poll)."
        ),
    )
    public_base_url: str | None = Field(
        default=None,
        description="Absolute URL clients reach the gateway at; makes Location headers absolute.",
    )

    feature_store_root: str | None = Field(
        default=None,
        description=(
            "Root of the materialiser's partition store (a local folder, file:// or s3://bucket/prefix), "
            "read for partition statistics and validation reports; None: use the URI each "
            "FeaturesMaterialised event recorded."
        ),
    )
    feature_store_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint override for the partition store (e.g. MinIO, moto_server)."
    )
    feature_store_region: str | None = Field(default=None, description="S3 region of the partition store.")

    registry: RegistrySettings | None = Field(
        default=None,
        description=(
            "The registry's backends. None: read PF_REGISTRY_* (embedded folder + SQLite by default), "
            "with the embedded data under <data_dir>/registry unless PF_REGISTRY_DATA_DIR is set."
        ),
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="Metrics, traces and log format (env prefix PF_TELEMETRY_).",
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
    artifact_verify_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description=(
            "Artifacts up to this size are hashed before a download starts, so a tampered one is refused "
            "with 409 instead of aborted mid-stream (every download is also checked as it streams)."
        ),
    )

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _key_has_the_api_key_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not API_KEY_PATTERN.match(value.get_secret_value()):
            raise ValueError(
                "must look like pf_<12 hex chars>_<32+ url-safe chars>; "
                "generate one with `python -m pfactory.gateway new-key`"
            )
        return value

    @property
    def database_path(self) -> Path:
        """The SQLite file actually used."""
        return self.sqlite_path or self.data_dir / "gateway.db"

    def registry_settings(self) -> RegistrySettings:
        """The registry settings actually used (see ``registry``)."""
        if self.registry is not None:
            return self.registry
        from_env = RegistrySettings()
        if "data_dir" in from_env.model_fields_set:
            return from_env
        return from_env.model_copy(update={"data_dir": self.data_dir / "registry"})
