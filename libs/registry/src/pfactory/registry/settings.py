"""Typed settings of the cloud backends (built at the entry point and passed down)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class S3ArtifactStoreSettings(BaseSettings):
    """Where ``S3ArtifactStore`` keeps artifacts (env prefix ``PF_REGISTRY_S3_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_REGISTRY_S3_", extra="forbid")

    bucket: str = Field(description="The bucket holding model artifacts.")
    prefix: str = Field(
        default="", description="Key prefix inside the bucket, e.g. 'registry/'; empty for the bucket root."
    )
    region: str = Field(default="eu-west-1", description="AWS region of the bucket.")
    endpoint_url: str | None = Field(
        default=None, description="Override of the S3 endpoint (moto_server, MinIO); None for AWS."
    )
    multipart_threshold_bytes: int = Field(
        default=64 * 1024 * 1024, ge=5 * 1024 * 1024, description="Files at least this big upload in parts."
    )


class DynamoDBVersionIndexSettings(BaseSettings):
    """Where ``DynamoDBVersionIndex`` keeps version metadata (env prefix ``PF_REGISTRY_DYNAMODB_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_REGISTRY_DYNAMODB_", extra="forbid")

    table_name: str = Field(
        default="pf-registry", description="The single table holding every registry item."
    )
    region: str = Field(default="eu-west-1", description="AWS region of the table.")
    endpoint_url: str | None = Field(
        default=None,
        description="Override of the DynamoDB endpoint (moto_server, DynamoDB Local); None for AWS.",
    )
    max_write_attempts: int = Field(
        default=50, ge=1, description="Attempts of a conditional write that loses to concurrent writers."
    )
    change_log_ttl_days: int = Field(
        default=30, ge=1, description="Days change-log items live (DynamoDB TTL on 'expires_at')."
    )
