"""A service's FastStream app: topics exist before subscribers start; /health and /ready answer."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

from faststream import FastStream
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import ASGIApp, Scope
from faststream.kafka import KafkaBroker

from pfactory.bus.broker import EventPublisher, ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import Envelope, Event
from pfactory.contracts.topics import ALL_TOPICS, TopicSpec
from pfactory.telemetry.logs import adopt_logger, configure_logging
from pfactory.telemetry.logs import is_configured as logging_configured
from pfactory.telemetry.settings import TelemetrySettings

Hook = Callable[[], Awaitable[None]]


def make_app(
    broker: KafkaBroker,
    settings: BusSettings,
    *,
    topics: Iterable[TopicSpec] = ALL_TOPICS,
    on_startup: Iterable[Hook] = (),
    on_shutdown: Iterable[Hook] = (),
) -> FastStream:
    """The FastStream app of a service; creates ``topics`` first when ``settings.create_topics``.

    Args:
        broker: the service's broker with its subscribers registered.
        settings: bus settings.
        topics: topics to create before the broker starts (the platform's by default).
        on_startup: more hooks run before the broker starts (after topic creation).
        on_shutdown: hooks run before the broker stops.

    Returns:
        The app: ``await app.run()`` in production, ``await app.start()`` / ``app.stop()`` in tests.
    """
    return FastStream(
        broker,
        on_startup=[_topic_creator(settings, topics), *on_startup],
        on_shutdown=list(on_shutdown),
    )


def make_service_app(
    broker: KafkaBroker,
    settings: BusSettings,
    *,
    service: str,
    topics: Iterable[TopicSpec] = ALL_TOPICS,
    on_startup: Iterable[Hook] = (),
    on_shutdown: Iterable[Hook] = (),
) -> AsgiFastStream:
    """Like :func:`make_app`, served over ASGI with ``/health`` (process) and ``/ready`` (broker answers).

    Args:
        broker: the service's broker with its subscribers registered.
        settings: bus settings.
        service: the service name reported by the health endpoints.
        topics: topics to create before the broker starts.
        on_startup: more hooks run before the broker starts.
        on_shutdown: hooks run before the broker stops.

    Returns:
        The app; :func:`serve` runs it.
    """
    return AsgiFastStream(
        broker,
        asgi_routes=health_routes(broker, service),
        on_startup=[_topic_creator(settings, topics), *on_startup],
        on_shutdown=list(on_shutdown),
    )


def _topic_creator(settings: BusSettings, topics: Iterable[TopicSpec]) -> Hook:
    specs = tuple(topics)

    async def create_topics() -> None:
        if settings.create_topics:
            await ensure_topics(settings, specs)

    return create_topics


def health_routes(broker: KafkaBroker, service: str) -> list[tuple[str, ASGIApp]]:
    """``/health``: the process answers; ``/ready``: the Kafka broker answers too."""

    def _json(code: int, **body: object) -> AsgiResponse:
        payload = json.dumps({"service": service, **body}).encode()
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


async def publish_answers(publisher: EventPublisher, cause: Envelope, events: Sequence[Event]) -> None:
    """Publish a handler's answers; ids derive from the cause, so a redelivery re-publishes the same ids."""
    for index, event in enumerate(events):
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{publisher.producer}/{cause.event_id}/{index}"))
        await publisher.publish(event, cause=cause, event_id=event_id)


def configure_process(telemetry: TelemetrySettings, service: str, log_level: str) -> bool:
    """Log format and tracing of a service process; call first in ``main``, before the app's imports.

    ddtrace reads its configuration when first imported, hence before the app's imports. In JSON
    mode FastStream's loggers, which write through their own handlers, get ours too, so that
    every line of the process is JSON.

    Args:
        telemetry: the process's telemetry settings.
        service: the Datadog ``service`` of its log lines and spans (e.g. ``"trainer"``).
        log_level: the root logger's level name.

    Returns:
        Whether tracing is on.
    """
    from pfactory.telemetry.tracing import configure_tracing

    configure_logging(telemetry, service, log_level)
    tracing = configure_tracing(telemetry, service)
    if telemetry.json_logs:
        adopt_logger("faststream", telemetry, service, sys.stderr)
        # the broker's message log; FastStream adds its own handler unless one writes to stdout
        adopt_logger("faststream.access.kafka", telemetry, service, sys.stdout)
    return tracing


def serve(app: AsgiFastStream, *, host: str, port: int, log_level: str) -> None:
    """Run a service app and its health endpoints until SIGTERM/SIGINT.

    Logging keeps what :func:`configure_process` set up; a caller that did not call it gets the
    text format at ``log_level``. uvicorn's loggers propagate to the root logger's handler.
    """
    if not logging_configured():
        configure_logging(TelemetrySettings.model_construct(), "pfactory", log_level)
    asyncio.run(
        app.run(
            log_level=logging.getLevelName(log_level),
            run_extra_options={"host": host, "port": port, "log_config": None},
        )
    )
