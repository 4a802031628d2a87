"""The scheduler's FastStream app: wiring only; the decisions live in :mod:`pfactory.scheduler.service`."""

from __future__ import annotations

import logging

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ModelRegistered
from pfactory.scheduler import service
from pfactory.scheduler.settings import SchedulerSettings

log = logging.getLogger("pfactory.scheduler")


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

    return make_service_app(broker, settings.bus, service=service.SERVICE)


def run(settings: SchedulerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
