"""Broker wiring: a configured FastStream KafkaBroker, topic creation, and the envelope publisher."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, UnknownError
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import Envelope, Event
from pfactory.contracts.topics import ALL_TOPICS, DAY_MS, TopicSpec

log = logging.getLogger("pfactory.bus")

# Kafka error code 36: the topic exists already, which is what ensure_topics wants anyway.
_TOPIC_ALREADY_EXISTS = 36

HEADER_EVENT_TYPE = "pf-event-type"
HEADER_EVENT_ID = "pf-event-id"
HEADER_SCHEMA_VERSION = "pf-schema-version"
HEADER_PRODUCER = "pf-producer"


def _ssl_context(settings: BusSettings) -> ssl.SSLContext | None:
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def build_security(settings: BusSettings) -> BaseSecurity | None:
    """FastStream's security object for the settings (None for plain TCP).

    Args:
        settings: bus settings; ``security_protocol`` picks TLS and/or SASL.

    Returns:
        The security object, or None for PLAINTEXT.
    """
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings)
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    if settings.sasl_username is None or settings.sasl_password is None:
        raise ValueError(f"{protocol} needs sasl_username and sasl_password")
    classes: dict[str | None, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        None: SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    return classes[settings.sasl_mechanism](
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def aiokafka_client_kwargs(settings: BusSettings, *, service: str = "admin") -> dict[str, Any]:
    """Connection keyword arguments for a bare aiokafka client (admin, lag probes, tests)."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{service}",
        **parse_security(build_security(settings)),
    }


def build_broker(settings: BusSettings, *, service: str, **broker_kwargs: Any) -> KafkaBroker:
    """A FastStream KafkaBroker configured from the bus settings.

    The producer waits for all in-sync replicas (``acks="all"``), so a returned publish is durable.

    Args:
        settings: bus settings.
        service: the service name; the client id becomes ``<client_id>-<service>``.
        **broker_kwargs: extra KafkaBroker arguments (e.g. ``logger``, ``graceful_timeout``).

    Returns:
        The broker (not yet connected: ``await broker.start()`` or run it in a FastStream app;
        a publish-only user such as the gateway may ``await broker.connect()``).
    """
    kwargs: dict[str, Any] = {
        "client_id": f"{settings.client_id}-{service}",
        "security": build_security(settings),
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence,
        # Topics are created with their partition counts by ensure_topics; a consumer must not
        # auto-create one with the broker's default count first.
        "allow_auto_create_topics": False,
        **broker_kwargs,
    }
    return KafkaBroker(settings.bootstrap_servers.split(","), **kwargs)


async def ensure_topics(
    settings: BusSettings,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
    *,
    extra: Iterable[TopicSpec] = (),
) -> list[str]:
    """Create topics with their partition counts; existing topics are left as they are.

    The configured dead-letter topic is always included (one partition) when not listed.

    Args:
        settings: bus settings (connection and replication factor).
        specs: the topics to create; the platform's topics by default.
        extra: more topics, e.g. a test's or a service's private ones.

    Returns:
        The names of the topics this call created (empty when all existed).
    """
    wanted = {spec.name: spec for spec in (*specs, *extra)}
    wanted.setdefault(
        settings.dead_letter_topic,
        TopicSpec(settings.dead_letter_topic, 1, 30 * DAY_MS, "dead letters"),
    )
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=settings.topic_replication_factor,
            topic_configs={"retention.ms": str(spec.retention_ms)},
        )
        for spec in wanted.values()
    ]
    admin = AIOKafkaAdminClient(**aiokafka_client_kwargs(settings, service="admin"))
    await admin.start()
    try:
        response = await admin.create_topics(new_topics)
    finally:
        await admin.close()
    created: list[str] = []
    for topic, code, message in (error[:3] for error in response.topic_errors):
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise RuntimeError(f"could not create topic {topic!r}: error {code} {message}")
    if created:
        log.info("created topics %s", sorted(created))
    return created


PUBLISH_ATTEMPTS = 4


def _worth_retrying(error: BaseException) -> bool:
    return isinstance(error, (UnknownError, OSError)) or bool(getattr(error, "retriable", False))


class EventPublisher:
    """Publishes events wrapped in envelopes: key = the event's partition key, value = envelope JSON."""

    def __init__(self, broker: KafkaBroker, producer: str) -> None:
        """Bind to a (connected or started) broker; ``producer`` names the publishing service."""
        self.broker = broker
        self.producer = producer

    async def publish(
        self,
        event: Event,
        *,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        event_id: str | None = None,
        topic: str | None = None,
    ) -> Envelope:
        """Wrap an event in an envelope and publish it, waiting for the broker's acknowledgement.

        Args:
            event: the payload.
            cause: the envelope being handled (sets causation and correlation ids).
            correlation_id: the flow id when there is no cause (defaults to the event's job id).
            event_id: a fixed id for deterministic re-publication.
            topic: override the event's own ``TOPIC`` (tests, private topics).

        Returns:
            The published envelope.

        Raises:
            aiokafka.errors.KafkaError: the broker did not acknowledge the record.
        """
        envelope = Envelope.wrap(
            event, producer=self.producer, correlation_id=correlation_id, cause=cause, event_id=event_id
        )
        await self.publish_envelope(envelope, topic or event.TOPIC, event.partition_key())
        return envelope

    async def publish_envelope(self, envelope: Envelope, topic: str, key: str | None) -> None:
        """Publish an already built envelope unchanged (an outbox relay re-publishing with its event_id).

        Args:
            envelope: the envelope, event_id included.
            topic: destination topic.
            key: partition key (None spreads records over partitions).

        Raises:
            aiokafka.errors.KafkaError: the broker did not acknowledge the record.
        """
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.broker.publish(
                    envelope.to_bytes(),
                    topic,
                    key=key.encode() if key is not None else None,
                    headers={
                        HEADER_EVENT_TYPE: envelope.type,
                        HEADER_EVENT_ID: envelope.event_id,
                        HEADER_SCHEMA_VERSION: str(envelope.schema_version),
                        HEADER_PRODUCER: envelope.producer,
                        "content-type": "application/json",
                    },
                    correlation_id=envelope.correlation_id,
                )
                return
            except (KafkaError, OSError) as error:
                # Tansu answers UnknownError when two producers race to write a partition's first
                # batch (seen after a broker restart); brokers also fail over. The event id is fixed,
                # so a retry that duplicates the record is deduplicated by consumers.
                if attempt == PUBLISH_ATTEMPTS or not _worth_retrying(error):
                    raise
                log.warning("publishing %s to %s failed (%s); retrying", envelope.type, topic, error)
                await asyncio.sleep(0.1 * 2**attempt)
