"""The scorer's FastStream app: wiring only; the decisions live in :mod:`pfactory.scorer.service`."""

from __future__ import annotations

import logging

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, publish_answers, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ScoringRequested
from pfactory.scorer import service
from pfactory.scorer.settings import ScorerSettings

log = logging.getLogger("pfactory.scorer")


def build(settings: ScorerSettings) -> AsgiFastStream:
    """The scorer app: consumes ``pf.scoring.requested``, answers on ``pf.jobs.status``."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)

    @subscribe(
        broker,
        topics.SCORING_REQUESTED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
    )
    async def on_scoring_requested(envelope: Envelope) -> None:
        request = envelope.open_as(ScoringRequested)
        log.info(
            "received ScoringRequested job=%s model=%s ds=%s", request.job_id, request.model_name, request.ds
        )
        await publish_answers(publisher, envelope, service.answer_scoring_request(request))

    return make_service_app(broker, settings.bus, service=service.SERVICE)


def run(settings: ScorerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
