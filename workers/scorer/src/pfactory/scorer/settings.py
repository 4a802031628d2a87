"""Scorer settings (env prefix ``PF_SCORER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class ScorerSettings(ServiceSettings):
    """Everything the scorer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCORER_", extra="forbid")

    group_id: str = Field(default="pf-scorer", description="Consumer group for ``pf.scoring.requested``.")
    health_port: int = Field(default=8105, ge=0, le=65535, description="Port of /health and /ready.")
