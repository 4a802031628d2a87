"""What the router decides and remembers: pages, notices, incidents. No network imports."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from pfactory.contracts.events import Severity


class Action(enum.StrEnum):
    """What a route does with an alert."""

    PAGE = "page"
    NOTIFY = "notify"
    DROP = "drop"


class PagerAction(enum.StrEnum):
    """PagerDuty Events API v2 ``event_action``."""

    TRIGGER = "trigger"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Delivery(enum.StrEnum):
    """How a PagerDuty event ended (an unavailable PagerDuty raises :class:`PagerUnavailable`)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DISABLED = "disabled"


class PagerUnavailable(Exception):
    """PagerDuty did not take the event after the bounded retries (or the rate limit held it too long).

    Transient: the bus retries the alert, then dead-letters it with this message.
    """


PAGERDUTY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "critical",
    Severity.ERROR: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}
DATADOG_ALERT_TYPE: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.ERROR: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}


def key_id(routing_key: SecretStr) -> str:
    """A routing key's fingerprint: what the incident state stores instead of the secret."""
    return hashlib.sha256(routing_key.get_secret_value().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Link:
    """A link on the incident (PagerDuty ``links[]``) and in the Datadog event's text."""

    href: str
    text: str


@dataclass(frozen=True)
class Page:
    """A trigger for PagerDuty: the documented payload fields, before any length limit is applied."""

    dedup_key: str
    summary: str
    source: str
    severity: str
    timestamp: datetime
    component: str | None
    group: str | None
    event_class: str
    custom_details: dict[str, Any]
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Notice:
    """A Datadog event: raised (error/warning/info) or resolved (success)."""

    title: str
    text: str
    alert_type: str
    aggregation_key: str
    tags: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True)
class Incident:
    """An open incident: one per dedup key, from the first AlertRaised to its AlertResolved."""

    dedup_key: str
    check: str
    severity: Severity
    action: Action
    rule: str
    summary: str
    opened_at: datetime
    model_name: str | None = None
    feature_set_name: str | None = None
    routing_key_id: str | None = None
    paged: bool = False
    repeats: int = 0
    acknowledged_at: datetime | None = None
