"""Kafka wiring: at-least-once consumers, retries, dead letters, idempotency, topics, embedded Tansu.

A worker's ``app.py``::

    settings = BusSettings()
    broker = build_broker(settings, service="registrar")
    publisher = EventPublisher(broker, producer="registrar")
    processed = SqliteProcessedEvents(state_dir / "processed.db")

    @subscribe(broker, topics.MODEL_TRAINED, group_id="registrar", settings=settings, publisher=publisher)
    @idempotent(processed, "registrar.register")
    async def register(envelope: Envelope) -> None:
        registered = await service.register(envelope.open_as(ModelTrained))  # TransientError → retried
        await publisher.publish(registered, cause=envelope)

    app = make_app(broker, settings)
"""

from pfactory.bus.app import health_routes, make_app, make_service_app, publish_answers, serve
from pfactory.bus.broker import (
    EventPublisher,
    aiokafka_client_kwargs,
    build_broker,
    build_security,
    ensure_topics,
)
from pfactory.bus.consumer import (
    TRANSIENT_ERRORS,
    ConsumerLoad,
    EnvelopeHandler,
    LagSample,
    TransientError,
    consumer_lag,
    is_transient,
    subscribe,
)
from pfactory.bus.embedded import EmbeddedBroker, EmbeddedBrokerError
from pfactory.bus.idempotency import (
    InMemoryProcessedEvents,
    ProcessedEvents,
    SqliteProcessedEvents,
    idempotent,
)
from pfactory.bus.reading import SeenEnvelope, read_envelopes, topic_partitions
from pfactory.bus.settings import BusSettings

__all__ = [
    "TRANSIENT_ERRORS",
    "BusSettings",
    "ConsumerLoad",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "EnvelopeHandler",
    "EventPublisher",
    "InMemoryProcessedEvents",
    "LagSample",
    "ProcessedEvents",
    "SeenEnvelope",
    "SqliteProcessedEvents",
    "TransientError",
    "aiokafka_client_kwargs",
    "build_broker",
    "build_security",
    "consumer_lag",
    "ensure_topics",
    "health_routes",
    "idempotent",
    "is_transient",
    "make_app",
    "make_service_app",
    "publish_answers",
    "read_envelopes",
    "serve",
    "subscribe",
    "topic_partitions",
]
