"""The scheduler's FastStream app: wiring only; the decisions live in :mod:`pfactory.scheduler.service`."""

from __future__ import annotations

import asyncio
import json
import logging

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import ASGIApp, Scope
from faststream.kafka import KafkaBroker

from pfactory.bus.broker import EventPublisher, build_broker, ensure_topics
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ModelRegistered
from pfactory.scheduler import service
from pfactory.scheduler.settings import SchedulerSettings

log = logging.getLogger("pfactory.scheduler")


def health_routes(broker: KafkaBroker) -> list[tuple[str, ASGIApp]]:
    """``/health``: the process answers; ``/ready``: the broker answers too."""

    def _json(code: int, **body: object) -> AsgiResponse:
        payload = json.dumps({"service": service.SERVICE, **body}).encode()
        return AsgiResponse(payload, code, headers={"content-type": "application/json"})

    @get(include_in_schema=False)
    async def health(scope: Scope) -> AsgiResponse:
        return _json(200, status="ok")

    @get(include_in_schema=False)
    async def ready(scope: Scope) -> AsgiResponse:
        if await broker.ping(timeout=1.0):
            return _json(200, status="ready")
        return _json(503, status="not ready", reason="the Kafka broker does not answer")

    return [("/health", health), ("/ready", ready)]


def build(settings: SchedulerSettings) -> AsgiFastStream:
    """The scheduler app: consumes ``pf.model.registered`` (and, for now, only acknowledges it)."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)  # dead letters

    @subscribe(
        broker,
        topics.MODEL_REGISTERED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
    )
    async def on_model_registered(envelope: Envelope) -> None:
        log.info(
            "%s event=%s",
            service.describe_registered_version(envelope.open_as(ModelRegistered)),
            envelope.event_id,
        )

    async def create_topics() -> None:
        if settings.bus.create_topics:
            await ensure_topics(settings.bus)

    return AsgiFastStream(broker, asgi_routes=health_routes(broker), on_startup=[create_topics])


def run(settings: SchedulerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build(settings)
    asyncio.run(
        app.run(
            log_level=logging.getLevelName(settings.log_level),
            run_extra_options={"host": settings.health_host, "port": settings.health_port},
        )
    )
