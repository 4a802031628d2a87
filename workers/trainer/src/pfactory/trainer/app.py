"""The trainer's FastStream app: wiring only; the decisions live in :mod:`pfactory.trainer.service`."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import ASGIApp, Scope
from faststream.kafka import KafkaBroker

from pfactory.bus.broker import EventPublisher, build_broker, ensure_topics
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, Event, TrainRequested
from pfactory.trainer import service
from pfactory.trainer.settings import TrainerSettings

log = logging.getLogger("pfactory.trainer")


async def publish_answers(publisher: EventPublisher, cause: Envelope, events: Sequence[Event]) -> None:
    """Publish a handler's events; ids derive from the cause, so a redelivery re-publishes the same ids."""
    for index, event in enumerate(events):
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{cause.event_id}/{index}"))
        await publisher.publish(event, cause=cause, event_id=event_id)


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

    async def create_topics() -> None:
        if settings.bus.create_topics:
            await ensure_topics(settings.bus)

    return AsgiFastStream(broker, asgi_routes=health_routes(broker), on_startup=[create_topics])


def run(settings: TrainerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build(settings)
    asyncio.run(
        app.run(
            log_level=logging.getLevelName(settings.log_level),
            run_extra_options={"host": settings.health_host, "port": settings.health_port},
        )
    )
