"""Registrar settings (env prefix ``PF_REGISTRAR_``; Kafka from ``PF_BUS_``, the registry from ``PF_REGISTRY_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings
from pfactory.registry.wiring import RegistrySettings


class RegistrarSettings(ServiceSettings):
    """Everything the registrar needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_REGISTRAR_", extra="forbid")

    group_id: str = Field(default="pf-registrar", description="Consumer group for ``pf.model.trained``.")
    health_port: int = Field(default=8103, ge=0, le=65535, description="Port of /health and /ready.")
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings,
        description="Artifact store and version index: embedded or AWS (env prefix PF_REGISTRY_).",
    )
    versions_gauge_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="How often the registry's versions are counted by status for the registry-size gauge "
        "(catalog.REGISTRY_VERSIONS; catches status changes made through the gateway or the scheduler). Each count reads every "
        "version record (on DynamoDB, whole items from the by_status index), so keep it minutes, not seconds.",
    )
    versions_gauge_min_gap_s: float = Field(
        default=30.0,
        ge=0,
        description="A registration asks for a fresh count, but never sooner than this after the last one "
        "(a burst of registrations costs one count).",
    )
    crash_after: Literal["artifact_write"] | None = Field(
        default=None,
        description="TEST HOOK, never set in production: 'artifact_write' kills the process "
        "(os._exit(1)) after a version's files are written and before its metadata is committed, "
        "to prove a crash there loses nothing and leaves nothing half-visible.",
    )
