"""Alert router settings (env prefix ``PF_ALERTER_``; Kafka from ``PF_BUS_``, metrics from ``PF_TELEMETRY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings

ROUTING_KEY_LENGTH = 32
"""PagerDuty refuses any other length ("Length of 'routing_key' is incorrect (should be 32 characters)")."""


def check_routing_key(key: SecretStr | None, where: str) -> SecretStr | None:
    """``key`` when it has PagerDuty's length; a ValueError naming ``where`` and the fix otherwise."""
    if key is not None and len(key.get_secret_value().strip()) != ROUTING_KEY_LENGTH:
        raise ValueError(
            f"{where} has {len(key.get_secret_value().strip())} characters; a PagerDuty routing key has "
            f"{ROUTING_KEY_LENGTH}: copy the Integration Key of the service's Events API v2 integration"
        )
    return SecretStr(key.get_secret_value().strip()) if key is not None else None


class AlerterSettings(ServiceSettings):
    """Everything the alert router needs, read from the environment at its entry point.

    Run one instance: the open incidents live in a SQLite file under ``state_dir``.
    """

    model_config = SettingsConfigDict(env_prefix="PF_ALERTER_", extra="forbid")

    group_id: str = Field(default="pf-alerter", description="Consumer group of ``pf.alerts``.")
    health_port: int = Field(default=8107, ge=0, le=65535, description="Port of /health and /ready.")
    routes_file: Path | None = Field(
        default=None,
        description="YAML routing rules (see pfactory.alerter.routing); unset: the built-in default, "
        "critical and error page, warning and info notify only.",
    )
    state_dir: Path = Field(
        default=Path(".pfactory/alerter"),
        description="Where the open incidents and the handled event ids are kept (incidents.sqlite3), "
        "so a restarted router neither pages again nor forgets what to resolve.",
    )
    pagerduty_url: str = Field(
        default="https://events.pagerduty.com",
        description="PagerDuty Events API base URL; events go to {pagerduty_url}/v2/enqueue.",
    )
    pagerduty_routing_key: SecretStr | None = Field(
        default=None,
        description="Default routing key of page routes that name none. Unset, and a route names none: "
        "that route logs 'would page' and still keeps incident state (offline `pfactory up`).",
    )
    pagerduty_rate_per_minute: float = Field(
        default=60.0,
        gt=0,
        description="Events sent per minute and routing key, sustained (PagerDuty allows about 120).",
    )
    pagerduty_burst: int = Field(default=10, ge=1, description="Events sent at once before the rate applies.")
    pagerduty_rate_max_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="Longest an event waits for the rate limit; beyond it the event is dropped here and "
        "the alert is retried by the bus.",
    )
    pagerduty_max_attempts: int = Field(
        default=5, ge=1, description="Attempts per event on 429, 5xx and connection errors."
    )
    pagerduty_backoff_initial_s: float = Field(default=0.5, gt=0, description="First retry delay; doubles.")
    pagerduty_backoff_max_s: float = Field(default=30.0, gt=0, description="Longest retry delay.")
    pagerduty_retry_after_max_s: float = Field(
        default=60.0, gt=0, description="Longest Retry-After honoured (a longer one waits this long)."
    )
    http_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each PagerDuty/Datadog call.")
    datadog_api_url: str = Field(
        default="https://api.datadoghq.com",
        description="Datadog API base URL of your site (e.g. https://api.datadoghq.eu); "
        "events go to {datadog_api_url}/api/v1/events.",
    )
    datadog_api_key: SecretStr | None = Field(
        default=None, description="Datadog API key; unset, no Datadog events are posted."
    )
    gateway_url: str = Field(
        default="http://127.0.0.1:8080",
        description="The gateway's URL as people on call reach it: links to the job and the model card.",
    )
    console_url: str | None = Field(
        default=None,
        description="Where PagerDuty's 'View in client' link goes; unset: the gateway_url.",
    )
    incidents_api: bool = Field(
        default=False,
        description="Serve GET /incidents and POST /incidents/acknowledge?dedup_key=... on the health "
        "port. No authentication: enable it only where that port is private (the embedded stack).",
    )

    @field_validator("pagerduty_routing_key")
    @classmethod
    def _routing_key_length(cls, key: SecretStr | None) -> SecretStr | None:
        return check_routing_key(key, "PF_ALERTER_PAGERDUTY_ROUTING_KEY")

    @field_validator("pagerduty_url", "datadog_api_url", "gateway_url", "console_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url.rstrip("/") if url is not None else None
