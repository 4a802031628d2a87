"""The materialiser's FastStream app: wiring only; decisions live in :mod:`pfactory.materialiser.service`."""

from __future__ import annotations

import logging

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, publish_answers, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, MaterialisationRequested
from pfactory.materialiser import service
from pfactory.materialiser.settings import MaterialiserSettings

log = logging.getLogger("pfactory.materialiser")


def build(settings: MaterialiserSettings) -> AsgiFastStream:
    """The materialiser app: consumes ``pf.materialisation.requested``, answers on ``pf.jobs.status``."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)

    @subscribe(
        broker,
        topics.MATERIALISATION_REQUESTED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
    )
    async def on_materialisation_requested(envelope: Envelope) -> None:
        request = envelope.open_as(MaterialisationRequested)
        log.info(
            "received MaterialisationRequested job=%s feature_set=%s", request.job_id, request.feature_set
        )
        await publish_answers(publisher, envelope, service.answer_materialisation_request(request))

    return make_service_app(broker, settings.bus, service=service.SERVICE)


def run(settings: MaterialiserSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
