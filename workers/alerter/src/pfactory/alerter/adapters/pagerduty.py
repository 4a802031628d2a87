"""PagerDuty Events API v2: ``POST {pagerduty_url}/v2/enqueue``, retried, rate limited per routing key.

Body (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/)::

    {"routing_key": 32 chars, "event_action": "trigger" | "acknowledge" | "resolve",
     "dedup_key": ≤ 255 chars,
     "payload": {"summary": ≤ 1024 chars, "source", "severity": "critical" | "error" | "warning" | "info",
                 "timestamp", "component", "group", "class", "custom_details": {...}},
     "links": [{"href", "text"}], "images": [{"src", "href", "alt"}], "client", "client_url"}

``payload``, ``links``, ``images``, ``client`` and ``client_url`` go with a trigger only. 202 is
accepted; 429, 5xx and connection errors are retried with exponential backoff (a Retry-After is
honoured) up to the attempt limit; any other 4xx is rejected and logged with PagerDuty's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from pfactory.alerter.adapters.retry import backoff_s, error_body, is_retried, retry_after_s
from pfactory.alerter.model import Delivery, Page, PagerAction, PagerUnavailable, key_id
from pfactory.alerter.ratelimit import TokenBucket
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.alerter.pagerduty")

ENQUEUE_PATH = "/v2/enqueue"
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
CUSTOM_DETAILS_MAX = 256 * 1024  # PagerDuty refuses events over 512 KB
CLIENT = "Prediction Factory"

Sleep = Callable[[float], Awaitable[None]]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pagerduty_dedup_key(dedup_key: str) -> str:
    """Our dedup key within PagerDuty's 255 characters (a long key keeps a stable hash suffix)."""
    if len(dedup_key) <= DEDUP_KEY_MAX:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:16]
    return f"{dedup_key[: DEDUP_KEY_MAX - 17]}~{digest}"


def _details(details: dict[str, Any]) -> dict[str, Any]:
    encoded = json.dumps(details, default=str, sort_keys=True)
    if len(encoded) <= CUSTOM_DETAILS_MAX:
        return json.loads(encoded)  # type: ignore[no-any-return]
    return {"truncated": True, "start": encoded[:CUSTOM_DETAILS_MAX]}


def event_body(
    action: PagerAction,
    routing_key: SecretStr,
    dedup_key: str,
    page: Page | None = None,
    *,
    client_url: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 request body (``page`` is required for a trigger)."""
    body: dict[str, Any] = {
        "routing_key": routing_key.get_secret_value(),
        "event_action": action.value,
        "dedup_key": pagerduty_dedup_key(dedup_key),
    }
    if action is not PagerAction.TRIGGER:
        return body
    if page is None:
        raise ValueError("a PagerDuty trigger needs a payload")
    payload: dict[str, Any] = {
        "summary": clip(page.summary.strip() or page.dedup_key, SUMMARY_MAX),
        "source": page.source or "pfactory",
        "severity": page.severity,
        "timestamp": page.timestamp.isoformat(),
        "class": page.event_class,
        "custom_details": _details(page.custom_details),
    }
    if page.component:
        payload["component"] = page.component
    if page.group:
        payload["group"] = page.group
    body["payload"] = payload
    body["links"] = [{"href": link.href, "text": link.text} for link in page.links]
    body["images"] = []
    body["client"] = CLIENT
    if client_url:
        body["client_url"] = client_url
    return body


class PagerDutyEvents:
    """The :class:`pfactory.alerter.ports.Pager` over PagerDuty's Events API v2."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        metrics: Metrics,
        client_url: str | None = None,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        rate_per_minute: float = 60.0,
        burst: int = 10,
        rate_max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = base_url.rstrip("/") + ENQUEUE_PATH
        self.client_url = client_url
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.rate_max_wait_s = rate_max_wait_s
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}

    async def trigger(self, page: Page, routing_key: SecretStr | None) -> Delivery:
        """See :meth:`pfactory.alerter.ports.Pager.trigger`."""
        if routing_key is None:
            log.info(
                "would page (PagerDuty disabled: no routing key): %s %s: %s",
                page.severity,
                page.dedup_key,
                page.summary,
            )
            self._count(PagerAction.TRIGGER, "dropped")
            return Delivery.DISABLED
        body = event_body(PagerAction.TRIGGER, routing_key, page.dedup_key, page, client_url=self.client_url)
        return await self._send(PagerAction.TRIGGER, routing_key, page.dedup_key, body)

    async def acknowledge(self, dedup_key: str, routing_key: SecretStr) -> Delivery:
        """See :meth:`pfactory.alerter.ports.Pager.acknowledge`."""
        body = event_body(PagerAction.ACKNOWLEDGE, routing_key, dedup_key)
        return await self._send(PagerAction.ACKNOWLEDGE, routing_key, dedup_key, body)

    async def resolve(self, dedup_key: str, routing_key: SecretStr) -> Delivery:
        """See :meth:`pfactory.alerter.ports.Pager.resolve`."""
        body = event_body(PagerAction.RESOLVE, routing_key, dedup_key)
        return await self._send(PagerAction.RESOLVE, routing_key, dedup_key, body)

    async def _send(
        self, action: PagerAction, routing_key: SecretStr, dedup_key: str, body: dict[str, Any]
    ) -> Delivery:
        bucket = self._bucket(routing_key)
        for attempt in range(1, self.max_attempts + 1):
            wait = bucket.reserve(self.rate_max_wait_s)
            if wait is None:
                self._count(action, "dropped")
                raise PagerUnavailable(
                    f"PagerDuty {action} for {dedup_key} not sent: the rate limit "
                    f"({self.rate_per_minute:g}/min per routing key, PF_ALERTER_PAGERDUTY_RATE_PER_MINUTE) "
                    f"would hold it over {self.rate_max_wait_s:g} s; the bus retries the alert"
                )
            if wait > 0:
                await self._sleep(wait)
            delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
            try:
                response = await self._client.post(self.url, json=body)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.is_success:
                    self._count(action, "accepted")
                    log.info("PagerDuty accepted %s %s", action, dedup_key)
                    return Delivery.ACCEPTED
                if not is_retried(response.status_code):
                    self._count(action, "rejected")
                    log.error(
                        "PagerDuty rejected %s %s with HTTP %d (not retried): %s",
                        action,
                        dedup_key,
                        response.status_code,
                        error_body(response),
                    )
                    return Delivery.REJECTED
                problem = f"HTTP {response.status_code}: {error_body(response, 300)}"
                asked = retry_after_s(response)
                if asked is not None:
                    delay = min(asked, self.retry_after_max_s)
            if attempt == self.max_attempts:
                self._count(action, "dropped")
                raise PagerUnavailable(
                    f"PagerDuty did not take {action} for {dedup_key} in {self.max_attempts} attempts "
                    f"(last: {problem}); the bus retries the alert"
                )
            self._count(action, "retried")
            log.warning(
                "PagerDuty %s %s attempt %d/%d failed (%s); retrying in %.2f s",
                action,
                dedup_key,
                attempt,
                self.max_attempts,
                problem,
                delay,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _bucket(self, routing_key: SecretStr) -> TokenBucket:
        fingerprint = key_id(routing_key)
        bucket = self._buckets.get(fingerprint)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_minute / 60.0, self.burst, clock=self._clock)
            self._buckets[fingerprint] = bucket
        return bucket

    def _count(self, action: PagerAction, outcome: str) -> None:
        self._metrics.emit(catalog.PAGERDUTY_REQUESTS, action=action.value, outcome=outcome)
