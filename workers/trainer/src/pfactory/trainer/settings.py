"""Trainer settings (env prefix ``PF_TRAINER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.bus.settings import BusSettings


class TrainerSettings(BaseSettings):
    """Everything the trainer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_TRAINER_", extra="forbid")

    bus: BusSettings = Field(
        default_factory=BusSettings, description="Kafka connection and delivery (env prefix PF_BUS_)."
    )
    group_id: str = Field(
        default="pf-trainer",
        description="Consumer group for ``pf.train.requested``; shared by the service's instances.",
    )
    health_host: str = Field(
        default="127.0.0.1", description="Interface the /health and /ready endpoints bind."
    )
    health_port: int = Field(
        default=8101, ge=0, le=65535, description="Port of the /health and /ready endpoints."
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
