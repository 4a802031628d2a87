"""The alert router's decisions: one incident per dedup key, paged or notified by route. No network imports.

* ``AlertRaised`` for a key with no open incident: route it; page (PagerDuty trigger) and/or notify
  (a Datadog event), then open the incident. A page PagerDuty rejected opens nothing, so the next
  alert tries again; a PagerDuty that stays unavailable raises :class:`PagerUnavailable` and the bus
  retries the alert (nothing was recorded, so the retry pages).
* ``AlertRaised`` for an open key: counted as suppressed, nothing sent (three retries of a failing
  job are one incident).
* ``AlertResolved`` for an open key: resolve it in PagerDuty (when it was paged) and post a success
  event, then close it. For a key with no open incident: nothing.
* An event id handled before (a redelivery) changes nothing.

Links on a page: ``details["job_id"]`` links to the job, ``model_name`` with
``details["model_version"]`` to that version's model card (without a version, to the model); the
alert's own ``links`` follow.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pfactory.alerter.model import (
    DATADOG_ALERT_TYPE,
    PAGERDUTY_SEVERITY,
    Action,
    Delivery,
    Incident,
    Link,
    Notice,
    Page,
    key_id,
)
from pfactory.alerter.ports import IncidentStore, Notifier, Pager
from pfactory.alerter.routing import Route, RoutingTable
from pfactory.contracts.events import AlertRaised, AlertResolved
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

SERVICE = "alerter"
AGGREGATION_KEY_MAX = 100
log = logging.getLogger("pfactory.alerter")


class Outcome(enum.StrEnum):
    """What handling one alert event did."""

    RAISED = "raised"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"
    DROPPED = "dropped"
    NOT_OPEN = "not_open"
    REDELIVERED = "redelivered"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlertRouter:
    """Routes alert events to PagerDuty and Datadog and keeps one incident per dedup key."""

    def __init__(
        self,
        routes: RoutingTable,
        incidents: IncidentStore,
        pager: Pager,
        notifier: Notifier | None,
        metrics: Metrics,
        *,
        gateway_url: str,
        env: str,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.routes = routes
        self.incidents = incidents
        self.pager = pager
        self.notifier = notifier
        self.metrics = metrics
        self.gateway_url = gateway_url.rstrip("/")
        self.env = env
        self._now = now

    async def on_raised(self, alert: AlertRaised, *, event_id: str, occurred_at: datetime) -> Outcome:
        """Handle one ``AlertRaised``.

        Raises:
            PagerUnavailable: PagerDuty did not take the trigger; nothing was recorded.
        """
        if await self.incidents.seen(event_id):
            log.info("alert %s (%s) handled before: skipped", alert.dedup_key, event_id)
            return Outcome.REDELIVERED
        route = self.routes.route(alert)
        if route.action is Action.DROP:
            log.info("alert %s dropped by route %s", alert.dedup_key, route.rule)
            await self.incidents.record(event_id)
            self._count(alert.check, alert.severity.value, Outcome.DROPPED)
            return Outcome.DROPPED
        if (incident := await self.incidents.get_open(alert.dedup_key)) is not None:
            await self.incidents.record(event_id, repeat_of=alert.dedup_key)
            log.info(
                "alert %s repeated (%d so far) while its incident is open: suppressed",
                alert.dedup_key,
                incident.repeats + 1,
            )
            self._count(alert.check, alert.severity.value, Outcome.SUPPRESSED)
            return Outcome.SUPPRESSED
        links = alert_links(alert, self.gateway_url)
        delivery: Delivery | None = None
        if route.action is Action.PAGE:
            delivery = await self.pager.trigger(page_for(alert, route, occurred_at, links), route.routing_key)
        if self.notifier is not None:
            await self.notifier.post(raised_notice(alert, route, occurred_at, links, self.env))
        if delivery is Delivery.REJECTED:
            await self.incidents.record(event_id)  # no incident: the next alert pages again
        else:
            paged = delivery is Delivery.ACCEPTED and route.routing_key is not None
            opened = Incident(
                dedup_key=alert.dedup_key,
                check=alert.check,
                severity=alert.severity,
                action=route.action,
                rule=route.rule,
                summary=alert.summary,
                opened_at=occurred_at,
                model_name=alert.model_name,
                feature_set_name=alert.feature_set_name,
                routing_key_id=key_id(route.routing_key) if paged and route.routing_key else None,
                paged=paged,
            )
            await self.incidents.record(event_id, opened=opened)
        log.info("alert %s raised: route %s (%s)", alert.dedup_key, route.rule, route.action)
        self._count(alert.check, alert.severity.value, Outcome.RAISED)
        return Outcome.RAISED

    async def on_resolved(self, resolved: AlertResolved, *, event_id: str, occurred_at: datetime) -> Outcome:
        """Handle one ``AlertResolved``.

        Raises:
            PagerUnavailable: PagerDuty did not take the resolve; the incident stays open.
        """
        if await self.incidents.seen(event_id):
            log.info("resolution of %s (%s) handled before: skipped", resolved.dedup_key, event_id)
            return Outcome.REDELIVERED
        incident = await self.incidents.get_open(resolved.dedup_key)
        if incident is None:
            await self.incidents.record(event_id)
            log.info("%s resolved, but no incident is open for it: nothing to do", resolved.dedup_key)
            return Outcome.NOT_OPEN
        if incident.paged:
            routing_key = self.routes.routing_keys().get(incident.routing_key_id or "")
            if routing_key is None:
                log.error(
                    "incident %s was paged with a routing key that is no longer configured; "
                    "resolve it in PagerDuty by hand",
                    incident.dedup_key,
                )
            else:
                await self.pager.resolve(incident.dedup_key, routing_key)
        elif incident.action is Action.PAGE:
            log.info(
                "would resolve %s (it was not paged: PagerDuty disabled or rejected it)", incident.dedup_key
            )
        if self.notifier is not None:
            await self.notifier.post(resolved_notice(resolved, incident, occurred_at, self.env))
        await self.incidents.record(event_id, closed=incident.dedup_key, at=occurred_at)
        log.info("incident %s resolved after %d repeats", incident.dedup_key, incident.repeats)
        self._count(resolved.check, incident.severity.value, Outcome.RESOLVED)
        return Outcome.RESOLVED

    async def acknowledge(self, dedup_key: str) -> Incident | None:
        """Acknowledge an open incident (in PagerDuty when it was paged); None when none is open.

        Raises:
            PagerUnavailable: PagerDuty did not take the acknowledgement; nothing was recorded.
        """
        incident = await self.incidents.get_open(dedup_key)
        if incident is None:
            return None
        routing_key = self.routes.routing_keys().get(incident.routing_key_id or "")
        if incident.paged and routing_key is not None:
            await self.pager.acknowledge(dedup_key, routing_key)
        return await self.incidents.acknowledge(dedup_key, self._now())

    def _count(self, check: str, severity: str, outcome: Outcome) -> None:
        self.metrics.emit(catalog.ALERTS, check=check, severity=severity, action=outcome.value)


def alert_links(alert: AlertRaised, gateway_url: str) -> tuple[Link, ...]:
    """Links to the job and the model card (from the alert's details), then the alert's own links."""
    links: list[Link] = []
    job_id = alert.details.get("job_id")
    if isinstance(job_id, str) and job_id:
        links.append(Link(f"{gateway_url}/v1/jobs/{quote(job_id, safe='')}", f"Job {job_id}"))
    if alert.model_name:
        model = quote(alert.model_name, safe="")
        version = alert.details.get("model_version")
        if isinstance(version, int | str) and not isinstance(version, bool) and str(version).isdigit():
            links.append(
                Link(
                    f"{gateway_url}/v1/models/{model}/versions/{version}/card",
                    f"Model card: {alert.model_name} v{version}",
                )
            )
        else:
            links.append(Link(f"{gateway_url}/v1/models/{model}", f"Model {alert.model_name}"))
    for text, href in alert.links.items():
        if href.startswith(("http://", "https://")):
            links.append(Link(href, text))
    return tuple(links)


def page_for(alert: AlertRaised, route: Route, occurred_at: datetime, links: tuple[Link, ...]) -> Page:
    """The PagerDuty trigger for an alert."""
    details: dict[str, Any] = {
        "dedup_key": alert.dedup_key,
        "check": alert.check,
        "route": route.rule,
        "model": alert.model_name,
        "feature_set": alert.feature_set_name,
    }
    details = {key: value for key, value in details.items() if value is not None}
    if alert.details:
        details["details"] = alert.details
    return Page(
        dedup_key=alert.dedup_key,
        summary=alert.summary,
        source=alert.source,
        severity=PAGERDUTY_SEVERITY[alert.severity],
        timestamp=occurred_at,
        component=alert.model_name or alert.feature_set_name,
        group=alert.feature_set_name,
        event_class=alert.check,
        custom_details=details,
        links=links,
    )


def aggregation_key(dedup_key: str) -> str:
    """The dedup key within Datadog's 100 characters (a long key keeps a stable hash suffix)."""
    if len(dedup_key) <= AGGREGATION_KEY_MAX:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:16]
    return f"{dedup_key[: AGGREGATION_KEY_MAX - 17]}~{digest}"


def _tags(check: str, severity: str, model: str | None, feature_set: str | None, env: str) -> tuple[str, ...]:
    tags = [f"check:{check}", f"severity:{severity}", f"env:{env}"]
    if model:
        tags.append(f"model:{model}")
    if feature_set:
        tags.append(f"feature_set:{feature_set}")
    return tuple(tags)


def raised_notice(
    alert: AlertRaised, route: Route, occurred_at: datetime, links: tuple[Link, ...], env: str
) -> Notice:
    """The Datadog event for a new incident."""
    lines = [alert.summary, "", f"dedup key: {alert.dedup_key}", f"route: {route.rule} ({route.action})"]
    lines += [f"{link.text}: {link.href}" for link in links]
    if alert.details:
        lines += ["", json.dumps(alert.details, indent=2, sort_keys=True, default=str)]
    return Notice(
        title=f"{alert.severity.value.upper()} {alert.check}: {alert.summary}",
        text="\n".join(lines),
        alert_type=DATADOG_ALERT_TYPE[alert.severity],
        aggregation_key=aggregation_key(alert.dedup_key),
        tags=_tags(alert.check, alert.severity.value, alert.model_name, alert.feature_set_name, env),
        occurred_at=occurred_at,
    )


def resolved_notice(resolved: AlertResolved, incident: Incident, occurred_at: datetime, env: str) -> Notice:
    """The Datadog event for a resolved incident."""
    summary = resolved.summary or incident.summary
    text = f"{summary}\n\ndedup key: {incident.dedup_key}\nopened {incident.opened_at.isoformat()}, "
    text += f"repeated {incident.repeats} times while open"
    return Notice(
        title=f"RESOLVED {resolved.check}: {summary}",
        text=text,
        alert_type="success",
        aggregation_key=aggregation_key(incident.dedup_key),
        tags=_tags(
            resolved.check, incident.severity.value, incident.model_name, incident.feature_set_name, env
        ),
        occurred_at=occurred_at,
    )
