"""Datadog events: ``POST {datadog_api_url}/api/v1/events`` with the ``DD-API-KEY`` header.

Body (https://docs.datadoghq.com/api/latest/events/#post-an-event): ``title`` (≤ 100 characters),
``text`` (≤ 4000), ``alert_type`` (error, warning, info, success), ``aggregation_key`` (≤ 100),
``tags``, ``source_type_name``, ``date_happened`` (epoch seconds). Best effort: 429, 5xx and
connection errors are retried a few times, then the event is given up with a warning; the alert's
handling goes on (PagerDuty is what must not be missed).
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from pydantic import SecretStr

from pfactory.alerter.adapters.pagerduty import Sleep, clip
from pfactory.alerter.adapters.retry import backoff_s, error_body, is_retried, retry_after_s
from pfactory.alerter.model import Notice

log = logging.getLogger("pfactory.alerter.datadog")

EVENTS_PATH = "/api/v1/events"
TITLE_MAX = 100
TEXT_MAX = 4000
SOURCE_TYPE = "pfactory"


class DatadogEvents:
    """The :class:`pfactory.alerter.ports.Notifier` over Datadog's events API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        api_key: SecretStr,
        max_attempts: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = api_url.rstrip("/") + EVENTS_PATH
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._api_key = api_key
        self._client = client
        self._sleep = sleep

    async def post(self, notice: Notice) -> bool:
        """See :meth:`pfactory.alerter.ports.Notifier.post`."""
        body = {
            "title": clip(notice.title, TITLE_MAX),
            "text": clip(notice.text, TEXT_MAX),
            "alert_type": notice.alert_type,
            "aggregation_key": notice.aggregation_key,
            "tags": list(notice.tags),
            "source_type_name": SOURCE_TYPE,
            "date_happened": int(notice.occurred_at.timestamp()),
        }
        headers = {"DD-API-KEY": self._api_key.get_secret_value()}
        for attempt in range(1, self.max_attempts + 1):
            delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
            try:
                response = await self._client.post(self.url, json=body, headers=headers)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.is_success:
                    log.info("Datadog took event %r (%s)", body["title"], notice.alert_type)
                    return True
                if not is_retried(response.status_code):
                    log.warning(
                        "Datadog refused event %r with HTTP %d: %s (check PF_ALERTER_DATADOG_API_KEY "
                        "and PF_ALERTER_DATADOG_API_URL, the site of that key)",
                        body["title"],
                        response.status_code,
                        error_body(response),
                    )
                    return False
                problem = f"HTTP {response.status_code}"
                delay = min(retry_after_s(response) or delay, self.backoff_max_s)
            if attempt == self.max_attempts:
                log.warning(
                    "Datadog event %r given up after %d attempts (%s)", body["title"], attempt, problem
                )
                return False
            await self._sleep(delay)
        return False  # pragma: no cover
