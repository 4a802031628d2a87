"""Registrar settings (env prefix ``PF_REGISTRAR_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class RegistrarSettings(ServiceSettings):
    """Everything the registrar needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_REGISTRAR_", extra="forbid")

    group_id: str = Field(default="pf-registrar", description="Consumer group for ``pf.model.trained``.")
    health_port: int = Field(default=8103, ge=0, le=65535, description="Port of /health and /ready.")
