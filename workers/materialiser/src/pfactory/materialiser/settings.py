"""Materialiser settings (env prefix ``PF_MATERIALISER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class MaterialiserSettings(ServiceSettings):
    """Everything the materialiser needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_MATERIALISER_", extra="forbid")

    group_id: str = Field(
        default="pf-materialiser", description="Consumer group for ``pf.materialisation.requested``."
    )
    health_port: int = Field(default=8102, ge=0, le=65535, description="Port of /health and /ready.")
