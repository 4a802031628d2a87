"""The registrar's FastStream app: wiring only; the decisions live in :mod:`pfactory.registrar.service`."""

from __future__ import annotations

import logging

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ModelTrained
from pfactory.registrar import service
from pfactory.registrar.settings import RegistrarSettings

log = logging.getLogger("pfactory.registrar")


def build(settings: RegistrarSettings) -> AsgiFastStream:
    """The registrar app: consumes ``pf.model.trained`` (and, for now, only acknowledges it)."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)  # dead letters

    @subscribe(
        broker, topics.MODEL_TRAINED, group_id=settings.group_id, settings=settings.bus, publisher=publisher
    )
    async def on_model_trained(envelope: Envelope) -> None:
        log.info(
            "%s event=%s", service.describe_trained_model(envelope.open_as(ModelTrained)), envelope.event_id
        )

    return make_service_app(broker, settings.bus, service=service.SERVICE)


def run(settings: RegistrarSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
