"""What PagerDuty and Datadog clients share: which answers to retry, and how long to wait."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRIED_STATUSES = frozenset({429}) | frozenset(range(500, 600))


def is_retried(status: int) -> bool:
    """429 and 5xx are worth another attempt; any other 4xx is the request's fault."""
    return status in RETRIED_STATUSES


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential delay before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
    return float(min(max_s, initial_s * 2 ** (attempt - 1)))


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The answer's Retry-After in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_body(response: httpx.Response, limit: int = 2000) -> str:
    """The answer's body as text, for a log line."""
    return response.text[:limit] if response.content else "(empty body)"
