"""Scorer settings (env prefix ``PF_SCORER_``; Kafka from ``PF_BUS_``, the registry from ``PF_REGISTRY_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings
from pfactory.registry.wiring import RegistrySettings


class ScorerSettings(ServiceSettings):
    """Everything the scorer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCORER_", extra="forbid")

    group_id: str = Field(default="pf-scorer", description="Consumer group for ``pf.scoring.requested``.")
    health_port: int = Field(default=8105, ge=0, le=65535, description="Port of /health and /ready.")
    store_root: str = Field(
        default=".pfactory",
        description="Root holding the feature partitions (features/...) and where predictions/... are "
        "written: a local folder, file:// or s3://bucket/prefix.",
    )
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint override of the store (moto_server, MinIO); None for AWS."
    )
    region: str | None = Field(default=None, description="S3 region of the store; None lets the SDK decide.")
    batch_rows: int = Field(
        default=65_536,
        ge=1,
        description="Rows per record batch streamed through the model (memory is flat in it).",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings,
        description="The registry the versions are read from (env PF_REGISTRY_*).",
    )
    model_cache_size: int = Field(default=8, ge=1, description="Loaded model versions kept in memory.")
    max_concurrent_jobs: int = Field(
        default=2,
        ge=1,
        description="Scoring runs handled at once (each may take long; the consumer keeps polling).",
    )
