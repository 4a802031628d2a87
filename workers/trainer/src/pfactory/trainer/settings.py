"""Trainer settings (env prefix ``PF_TRAINER_``; Kafka from ``PF_BUS_``, the artifact store from ``PF_REGISTRY_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Everything the trainer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_TRAINER_", extra="forbid")

    group_id: str = Field(default="pf-trainer", description="Consumer group for ``pf.train.requested``.")
    health_port: int = Field(default=8101, ge=0, le=65535, description="Port of /health and /ready.")
    backend: Literal["process", "kubernetes"] = Field(
        default="process",
        description="Where runs execute: 'process' forks isolated local processes from a warm fork server; "
        "'kubernetes' starts one pod per run (settings PF_TRAINER_K8S_*).",
    )
    max_concurrent_jobs: int = Field(
        default=2, ge=1, description="Training requests handled at once; when full the consumer pauses."
    )
    max_parallel_runs: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="Isolated runs (trials) executing at once across all jobs of this worker.",
    )
    scratch_dir: Path = Field(
        default=Path(".pfactory/trainer"), description="Local scratch root: one folder per job and run."
    )
    run_root: str | None = Field(
        default=None,
        description="Where runs write their outputs (a folder or s3://bucket/prefix); default: scratch_dir. "
        "Pods need an s3:// root.",
    )
    feature_store_root: str = Field(
        default=".pfactory",
        description="Root of the feature partition store (a folder or s3://bucket/prefix).",
    )
    feature_store_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint override for the feature store, run outputs and labels."
    )
    feature_store_region: str | None = Field(default=None, description="S3 region of the feature store.")
    working_dir: str | None = Field(
        default=None,
        description="Folder relative labels paths are read from; default: the current directory.",
    )
    heartbeat_s: float = Field(
        default=60.0, gt=0, description="How often a long job reports that it is still running."
    )
