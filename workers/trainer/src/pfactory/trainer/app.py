"""The trainer's FastStream app: wiring only; the decisions live in :mod:`pfactory.trainer.service`."""

from __future__ import annotations

import logging

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, publish_answers, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, TrainRequested
from pfactory.trainer import service
from pfactory.trainer.settings import TrainerSettings

log = logging.getLogger("pfactory.trainer")


def build(settings: TrainerSettings) -> AsgiFastStream:
    """The trainer app: consumes ``pf.train.requested``, answers on ``pf.jobs.status``."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)

    @subscribe(
        broker, topics.TRAIN_REQUESTED, group_id=settings.group_id, settings=settings.bus, publisher=publisher
    )
    async def on_train_requested(envelope: Envelope) -> None:
        request = envelope.open_as(TrainRequested)
        log.info("received TrainRequested job=%s model=%s", request.job_id, request.model_name)
        await publish_answers(publisher, envelope, service.answer_train_request(request))

    return make_service_app(broker, settings.bus, service=service.SERVICE)


def run(settings: TrainerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
