"""Scheduler settings (env prefix ``PF_SCHEDULER_``; Kafka from ``PF_BUS_``, the registry from ``PF_REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """Everything the scheduler needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCHEDULER_", extra="forbid")

    group_id: str = Field(
        default="pf-scheduler",
        description="Consumer group of ``pf.model.registered`` and ``pf.model.changed``.",
    )
    health_port: int = Field(default=8104, ge=0, le=65535, description="Port of /health and /ready.")
    poll_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between polls of the registry's change log (the safety net for missed events).",
    )
    tick_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between checks for versions due to go live and schedules firing.",
    )
    dags_folder: Path | None = Field(
        default=None,
        description="Airflow's DAGs folder: when set (or dags_s3_bucket), the scheduler writes one DAG per "
        "deployed version there and Airflow runs the schedules; unset, the embedded cron runner does.",
    )
    dags_s3_bucket: str | None = Field(
        default=None, description="Bucket of a DAGs prefix Airflow syncs from."
    )
    dags_s3_prefix: str = Field(default="dags/", description="Prefix of the DAG files in dags_s3_bucket.")
    dags_s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint override (tests, MinIO).")
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The gateway's URL as Airflow's workers reach it (the generated DAGs call it).",
    )
    dag_retries: int = Field(default=2, ge=0, description="Retries of each task of a generated DAG.")
    dag_poke_s: int = Field(
        default=300,
        gt=0,
        description="Seconds between a generated DAG's checks (features there, run finished).",
    )
    state_dir: Path = Field(
        default=Path(".pfactory/scheduler"),
        description="Where the scheduler keeps the schedules of submitted feature sets (feature-sets.json) "
        "and the embedded runner's last tick (last-tick.json).",
    )
    catch_up_s: float = Field(
        default=86_400.0,
        ge=0,
        description="How far back a restarted embedded runner fires the schedules it missed while down "
        "(from the last tick it recorded in state_dir). 0: fire nothing missed.",
    )
    clock_offset_s: float = Field(
        default=0.0,
        description="Seconds added to the wall clock: lets a demo or a test reach tomorrow's go-live and "
        "schedules now. Leave 0 in production.",
    )
