"""Scorer settings (env prefix ``PF_SCORER_``, the online API ``PF_ONLINE_``; Kafka from ``PF_BUS_``, the registry from ``PF_REGISTRY_``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.bus.settings import ServiceSettings
from pfactory.registry.wiring import RegistrySettings
from pfactory.telemetry.settings import TelemetrySettings

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ScorerSettings(ServiceSettings):
    """Everything the scorer needs to run, read from the environment at its entry point."""

    model_config = SettingsConfigDict(env_prefix="PF_SCORER_", extra="forbid")

    group_id: str = Field(default="pf-scorer", description="Consumer group for ``pf.scoring.requested``.")
    health_port: int = Field(default=8105, ge=0, le=65535, description="Port of /health and /ready.")
    store_root: str = Field(
        default=".pfactory",
        description="Root holding the feature partitions (features/...) and where predictions/... are "
        "written: a local folder, file:// or s3://bucket/prefix.",
    )
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint override of the store (moto_server, MinIO); None for AWS."
    )
    region: str | None = Field(default=None, description="S3 region of the store; None lets the SDK decide.")
    batch_rows: int = Field(
        default=65_536,
        ge=1,
        description="Rows per record batch streamed through the model (memory is flat in it).",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings,
        description="The registry the versions are read from (env PF_REGISTRY_*).",
    )
    model_cache_size: int = Field(default=8, ge=1, description="Loaded model versions kept in memory.")
    max_concurrent_jobs: int = Field(
        default=2,
        ge=1,
        description="Scoring runs handled at once (each may take long; the consumer keeps polling).",
    )
    gateway_url: str | None = Field(
        default=None,
        description="The gateway's base URL as people reach it (e.g. https://pfactory.example.com); "
        "scoring and drift alerts link to the job and the version's model card there. None: alerts "
        "carry the job id and version in their details only.",
    )


class OnlineSettings(BaseSettings):
    """The online prediction API (env prefix ``PF_ONLINE_``; the registry from ``PF_REGISTRY_``).

    ``auth="none"`` accepts every caller: use it only when the service listens on loopback behind
    something that authenticates (the embedded stack, tests). Production sets the accepted key
    hashes, which turns key checking on.
    """

    model_config = SettingsConfigDict(env_prefix="PF_ONLINE_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8106, ge=0, le=65535, description="Port of the API, /health and /ready.")
    reload_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often aliases and live versions are resolved again; a moved alias serves its "
        "new version within this interval (the new version is loaded before it takes over).",
    )
    api_key_sha256s: list[str] = Field(
        default_factory=list,
        description="Accepted API keys as sha256 hex of the key's secret part (the part after "
        "pf_<id>_, as the gateway stores it), or of the whole key (JSON list).",
    )
    auth: Literal["none", "keys"] | None = Field(
        default=None,
        description="'keys': each request needs an accepted key in 'X-API-Key' or 'Authorization: "
        "Bearer'; 'none': no check (loopback only). Default: 'keys' when hashes are given, else 'none'.",
    )
    model_cache_size: int = Field(default=8, ge=1, description="Loaded model versions kept in memory.")
    max_rows: int = Field(default=10_000, ge=1, description="The most rows one request may send.")
    max_batch_rows: int = Field(
        default=1024,
        ge=1,
        description="The most rows of concurrent small requests (up to 100 rows each) one model call "
        "scores together; requests that arrive while the model is busy form the next batch, so an "
        "idle service adds no delay. 1 scores every request on its own.",
    )
    preload: list[str] = Field(
        default_factory=list,
        description="Models whose live version is loaded at start-up; /ready waits for them (JSON list).",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings,
        description="The registry the versions are read from (env PF_REGISTRY_*).",
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="Metrics, traces and log format (env prefix PF_TELEMETRY_).",
    )
    metrics_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the rows scored, counted in memory per version, are sent as one metric "
        "each (the request latency is sent per request).",
    )

    @field_validator("api_key_sha256s")
    @classmethod
    def _hex_digests(cls, hashes: list[str]) -> list[str]:
        for position, digest in enumerate(hashes):
            if not _SHA256_HEX.fullmatch(digest.lower()):
                raise ValueError(
                    f"PF_ONLINE_API_KEY_SHA256S[{position}] is not a sha256 hex digest (64 hex characters); "
                    "compute one with: printf %s '<secret>' | sha256sum"
                )
        return [digest.lower() for digest in hashes]

    @model_validator(mode="after")
    def _auth_mode(self) -> OnlineSettings:
        if self.auth is None:
            self.auth = "keys" if self.api_key_sha256s else "none"
        if self.auth == "keys" and not self.api_key_sha256s:
            raise ValueError(
                "PF_ONLINE_AUTH=keys needs the accepted key hashes in PF_ONLINE_API_KEY_SHA256S "
                '(a JSON list such as ["<sha256 hex>"]); set them, or PF_ONLINE_AUTH=none on loopback'
            )
        return self
