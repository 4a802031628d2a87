"""Trainer settings (env prefix ``PF_TRAINER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Everything the trainer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_TRAINER_", extra="forbid")

    group_id: str = Field(default="pf-trainer", description="Consumer group for ``pf.train.requested``.")
    health_port: int = Field(default=8101, ge=0, le=65535, description="Port of /health and /ready.")
