"""Materialiser settings (env prefix ``PF_MATERIALISER_``; Kafka from ``PF_BUS_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings
from pfactory.materialiser.adapters.emr import EmrOnEksSettings


class MaterialiserSettings(ServiceSettings):
    """Everything the materialiser needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_MATERIALISER_", extra="forbid")

    group_id: str = Field(
        default="pf-materialiser", description="Consumer group for ``pf.materialisation.requested``."
    )
    health_port: int = Field(default=8102, ge=0, le=65535, description="Port of /health and /ready.")
    data_root: str = Field(
        default=".", description="Folder (or s3:// prefix) that relative source paths resolve against."
    )
    store_root: str = Field(
        default="./pf-store",
        description="Where partitions are written: a local folder or 's3://bucket/prefix'.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint override for the partition store and s3:// sources (e.g. moto_server).",
    )
    s3_region: str | None = Field(default=None, description="AWS region of the store bucket and S3 sources.")
    engine: Literal["local", "emr"] = Field(
        default="local", description="SQL engine: 'local' (a warm PySpark session) or 'emr' (EMR on EKS)."
    )
    spark_master: str = Field(default="local[2]", description="Spark master URL of the local engine.")
    spark_shuffle_partitions: int = Field(
        default=4, ge=1, description="spark.sql.shuffle.partitions of the local engine (small data: few)."
    )
    macros_dir: str | None = Field(
        default=None, description="Folder of user Jinja macro files available to every SQL model."
    )
    sql_root: str | None = Field(
        default=None, description="Folder that models' 'sql_file' paths are relative to."
    )
    gateway_url: str | None = Field(
        default=None,
        description="The gateway's base URL as people reach it (e.g. https://pfactory.example.com); "
        "validation alerts link to the job and the day's partition report there. None: alerts carry "
        "the job id in their details only.",
    )
    emr: EmrOnEksSettings | None = Field(
        default=None,
        description="EMR on EKS settings of the 'emr' engine; None: read from the PF_EMR_* env vars.",
    )

    def emr_settings(self) -> EmrOnEksSettings:
        """The EMR on EKS settings of the 'emr' engine: ``emr`` if given, else the ``PF_EMR_*`` env.

        Raises:
            ValueError: required EMR settings are missing or invalid; the message names the env vars.
        """
        if self.emr is not None:
            return self.emr
        try:
            return EmrOnEksSettings()
        except ValidationError as error:
            problems = sorted(
                {
                    f"PF_EMR_{str(e['loc'][0]).upper()}"
                    + ("" if e["type"] == "missing" else f" ({e['msg']})")
                    for e in error.errors()
                    if e["loc"]
                }
            )
            required = ", ".join(
                f"PF_EMR_{name.upper()}"
                for name, field in EmrOnEksSettings.model_fields.items()
                if field.is_required()
            )
            raise ValueError(
                "engine 'emr' needs EMR on EKS settings: set "
                + required
                + f" (missing or invalid: {', '.join(problems)})"
            ) from None
