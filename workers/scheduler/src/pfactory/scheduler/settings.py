"""Scheduler settings (env prefix ``PF_SCHEDULER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """Everything the scheduler needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCHEDULER_", extra="forbid")

    group_id: str = Field(default="pf-scheduler", description="Consumer group for ``pf.model.registered``.")
    health_port: int = Field(default=8104, ge=0, le=65535, description="Port of /health and /ready.")
