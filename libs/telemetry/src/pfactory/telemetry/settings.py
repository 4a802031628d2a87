"""Telemetry settings (env prefix ``PF_TELEMETRY_``), shared by every service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.telemetry.metrics import Metrics


class TelemetrySettings(BaseSettings):
    """Where metrics and traces go, and how logs look."""

    model_config = SettingsConfigDict(env_prefix="PF_TELEMETRY_", extra="forbid")

    env: str = Field(default="dev", description="Datadog `env` tag on every metric, span and log line.")
    version: str = Field(default="0.1.0", description="Datadog `version` tag: the deployed platform version.")
    metrics_enabled: bool = Field(
        default=True,
        description="Send DogStatsD lines. With no agent listening they are dropped silently (UDP).",
    )
    statsd_host: str = Field(default="127.0.0.1", description="DogStatsD agent host (DD_AGENT_HOST in k8s).")
    statsd_port: int = Field(default=8125, ge=1, le=65535, description="DogStatsD UDP port.")
    tracing_enabled: bool = Field(
        default=False,
        description="ddtrace APM: spans for FastAPI, aiokafka, botocore and httpx sent to the agent's "
        "trace port. Off by default; with no agent the spans are dropped without logging.",
    )
    trace_agent_url: str = Field(
        default="http://127.0.0.1:8126", description="Datadog agent trace intake (DD_TRACE_AGENT_URL)."
    )
    json_logs: bool = Field(
        default=False,
        description="One JSON object per log line with service, env, version and (when tracing) "
        "dd.trace_id/dd.span_id, for Datadog log correlation. Off: a readable text line.",
    )

    def metrics(self, service: str) -> Metrics:
        """The emitter for ``service``."""
        return Metrics(
            service=service,
            env=self.env,
            version=self.version,
            host=self.statsd_host,
            port=self.statsd_port,
            enabled=self.metrics_enabled,
        )
