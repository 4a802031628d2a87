"""The alert router's FastStream app: wiring only; the decisions live in :mod:`pfactory.alerter.service`."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

import httpx
from faststream.asgi import AsgiFastStream, AsgiResponse, get, post
from faststream.asgi.types import Scope

from pfactory.alerter.adapters.datadog import DatadogEvents
from pfactory.alerter.adapters.pagerduty import PagerDutyEvents
from pfactory.alerter.adapters.sqlite import SqliteIncidentStore
from pfactory.alerter.model import PagerUnavailable
from pfactory.alerter.routing import load_routes
from pfactory.alerter.service import SERVICE, AlertRouter
from pfactory.alerter.settings import AlerterSettings
from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import TRANSIENT_ERRORS, subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import AlertRaised, AlertResolved, Envelope

log = logging.getLogger("pfactory.alerter")

RETRIED = (*TRANSIENT_ERRORS, PagerUnavailable)
"""PagerDuty not taking an event is retried by the bus (then dead-lettered with the reason)."""


def build_router(
    settings: AlerterSettings, http: httpx.AsyncClient, store: SqliteIncidentStore
) -> AlertRouter:
    """The router with its adapters, from settings.

    Raises:
        RoutesFileError: the routes file is invalid.
    """
    routes = load_routes(settings.routes_file, settings.pagerduty_routing_key)
    metrics = settings.telemetry.metrics(SERVICE)
    pager = PagerDutyEvents(
        http,
        base_url=settings.pagerduty_url,
        metrics=metrics,
        client_url=settings.console_url or settings.gateway_url,
        max_attempts=settings.pagerduty_max_attempts,
        backoff_initial_s=settings.pagerduty_backoff_initial_s,
        backoff_max_s=settings.pagerduty_backoff_max_s,
        retry_after_max_s=settings.pagerduty_retry_after_max_s,
        rate_per_minute=settings.pagerduty_rate_per_minute,
        burst=settings.pagerduty_burst,
        rate_max_wait_s=settings.pagerduty_rate_max_wait_s,
    )
    notifier = None
    if settings.datadog_api_key is not None:
        notifier = DatadogEvents(http, api_url=settings.datadog_api_url, api_key=settings.datadog_api_key)
    return AlertRouter(
        routes, store, pager, notifier, metrics, gateway_url=settings.gateway_url, env=settings.telemetry.env
    )


def build(settings: AlerterSettings) -> AsgiFastStream:
    """The alert router app: ``pf.alerts`` → PagerDuty incidents and Datadog events.

    Raises:
        RoutesFileError: the routes file is invalid (before anything connects).
    """
    http = httpx.AsyncClient(timeout=settings.http_timeout_s)
    store = SqliteIncidentStore(settings.state_dir / "incidents.sqlite3")
    router = build_router(settings, http, store)
    broker = build_broker(settings.bus, service=SERVICE)
    publisher = EventPublisher(broker, producer=SERVICE)

    @subscribe(
        broker,
        topics.ALERTS,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        transient=RETRIED,
        metrics=router.metrics,
        # a handler may wait out PagerDuty's Retry-After and the bus's own retries: as a task, the
        # consumer keeps polling meanwhile instead of being thrown out of its group
        concurrency=1,
    )
    async def on_alert(envelope: Envelope) -> None:
        event = envelope.open()
        if isinstance(event, AlertRaised):
            await router.on_raised(event, event_id=envelope.event_id, occurred_at=envelope.occurred_at)
        elif isinstance(event, AlertResolved):
            await router.on_resolved(event, event_id=envelope.event_id, occurred_at=envelope.occurred_at)
        else:
            log.warning("ignored %s %s on %s: not an alert", envelope.type, envelope.event_id, topics.ALERTS)

    async def started() -> None:
        # logged here, not in build(): serve() configures logging after build() returns
        open_incidents = await store.list_open()
        log.info("incident state %s: %d open", store.path, len(open_incidents))
        if router.notifier is None:
            log.info("Datadog events off: PF_ALERTER_DATADOG_API_KEY is not set")
        unkeyed = router.routes.pages_without_key()
        if unkeyed:
            log.info(
                "PagerDuty off for page routes %s (no routing key; set PF_ALERTER_PAGERDUTY_ROUTING_KEY): "
                "they log 'would page' and still keep incident state",
                ", ".join(unkeyed),
            )

    async def close() -> None:
        await http.aclose()
        store.close()

    app = make_service_app(broker, settings.bus, service=SERVICE, on_startup=[started], on_shutdown=[close])
    if settings.incidents_api:
        for path, route in incident_routes(router):
            app.mount(path, route)
    return app


def _json(code: int, body: Any) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body, default=str).encode(), code, headers={"content-type": "application/json"}
    )


def incident_routes(router: AlertRouter) -> list[tuple[str, Any]]:
    """``GET /incidents`` (the open ones) and ``POST /incidents/acknowledge?dedup_key=...``."""

    @get(include_in_schema=False)
    async def incidents(scope: Scope) -> AsgiResponse:
        return _json(200, {"incidents": [asdict(i) for i in await router.incidents.list_open()]})

    @post(include_in_schema=False)
    async def acknowledge(scope: Scope) -> AsgiResponse:
        keys = parse_qs(scope.get("query_string", b"").decode()).get("dedup_key", [])
        if len(keys) != 1 or not keys[0]:
            return _json(400, {"detail": "give one incident: POST /incidents/acknowledge?dedup_key=<key>"})
        try:
            incident = await router.acknowledge(keys[0])
        except PagerUnavailable as error:
            return _json(503, {"detail": str(error)})
        if incident is None:
            return _json(
                404, {"detail": f"no open incident has dedup key {keys[0]!r}; GET /incidents lists them"}
            )
        return _json(200, asdict(incident))

    return [("/incidents", incidents), ("/incidents/acknowledge", acknowledge)]


def run(settings: AlerterSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
