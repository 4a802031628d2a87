"""Scheduler settings (env prefix ``PF_SCHEDULER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.bus.settings import BusSettings


class SchedulerSettings(BaseSettings):
    """Everything the scheduler needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCHEDULER_", extra="forbid")

    bus: BusSettings = Field(
        default_factory=BusSettings, description="Kafka connection and delivery (env prefix PF_BUS_)."
    )
    group_id: str = Field(
        default="pf-scheduler",
        description="Consumer group for ``pf.model.registered``; shared by the service's instances.",
    )
    health_host: str = Field(
        default="127.0.0.1", description="Interface the /health and /ready endpoints bind."
    )
    health_port: int = Field(
        default=8104, ge=0, le=65535, description="Port of the /health and /ready endpoints."
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
