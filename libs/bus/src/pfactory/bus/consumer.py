"""At-least-once envelope consumers: manual commits, in-process retries, dead letters, lag.

A subscribed handler receives a parsed :class:`Envelope`. The offset of a record is committed only
after the handler succeeded or the record was durably dead-lettered; a crash in between means the
record is delivered again (handlers are idempotent, see :mod:`pfactory.bus.idempotency`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from faststream import AckPolicy, Context
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.message import StreamMessage

from pfactory.bus.broker import EventPublisher
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import DeadLettered, Envelope

log = logging.getLogger("pfactory.bus")

EnvelopeHandler = Callable[[Envelope], Awaitable[None]]
"""What ``subscribe`` decorates: ``async def handle(envelope: Envelope) -> None``."""

_DEAD_LETTER_NAMESPACE = uuid.UUID("6d1f4b8e-3c55-4c1e-9a7e-0f1b2c3d4e5f")


class TransientError(Exception):
    """A failure worth retrying (a dependency was briefly unavailable); raise it from a handler."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
"""Exceptions retried in-process by default; anything else is permanent and dead-lettered at once."""


def is_transient(error: BaseException, transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS) -> bool:
    """True when ``error`` (or the exception it was raised from) is one of the ``transient`` types."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, transient):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


@dataclass(frozen=True)
class LagSample:
    """Records still waiting on one partition after a record was handled (highwater - position)."""

    topic: str
    partition: int
    group_id: str
    lag: int


async def consumer_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Lag of every partition assigned to a running consumer (highwater - position).

    Tansu's admin API cannot list group offsets, so lag is measured inside the consumer. Partitions
    not fetched yet (no highwater known) are left out.

    Args:
        consumer: a started aiokafka consumer (``subscriber.consumer`` of a FastStream subscriber).

    Returns:
        Lag per topic-partition.
    """
    lags: dict[TopicPartition, int] = {}
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is None:
            continue
        lags[partition] = max(0, highwater - await consumer.position(partition))
    return lags


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    # Never let FastStream decode: poison bytes must reach our own parsing to be dead-lettered.
    return message.body


class _DeliveryLoop:
    """Runs one handler over the records of one subscription with the delivery guarantees."""

    def __init__(
        self,
        handler: EnvelopeHandler,
        *,
        name: str,
        group_id: str,
        settings: BusSettings,
        publisher: EventPublisher,
        transient: tuple[type[BaseException], ...],
        on_lag: Callable[[LagSample], None] | None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.group_id = group_id
        self.settings = settings
        self.publisher = publisher
        self.transient = transient
        self.on_lag = on_lag

    async def __call__(self, message: Annotated[KafkaMessage, Context("message")]) -> None:
        record = cast("ConsumerRecord[bytes, bytes]", message.raw_message)
        consumer = cast(AIOKafkaConsumer, message.consumer)
        if not await self._process(record):
            # The dead letter could not be published: rewind so the record comes again.
            await message.nack()
            await asyncio.sleep(self.settings.retry_backoff_max_s)
            return
        partition = TopicPartition(record.topic, record.partition)
        try:
            await consumer.commit({partition: record.offset + 1})
        except KafkaError as error:  # a rebalance took the partition: its next owner redelivers
            log.warning(
                "%s: commit of %s@%d failed (%r); it will be redelivered",
                self.name,
                partition,
                record.offset,
                error,
            )
            return
        if self.on_lag is not None:
            highwater = consumer.highwater(partition)
            if highwater is not None:
                self.on_lag(
                    LagSample(
                        record.topic, record.partition, self.group_id, max(0, highwater - record.offset - 1)
                    )
                )

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle or dead-letter one record; False when nothing durable happened (do not commit)."""
        try:
            envelope = Envelope.from_bytes(record.value or b"")
            envelope.open()
        except Exception as error:  # poison: it can never be handled, whatever the retries
            return await self._dead_letter(record, error, attempts=0, envelope=None)
        attempt = 0
        delay = self.settings.retry_backoff_initial_s
        while True:
            attempt += 1
            try:
                await self.handler(envelope)
                return True
            except Exception as error:
                if not is_transient(error, self.transient) or attempt >= self.settings.max_attempts:
                    return await self._dead_letter(record, error, attempts=attempt, envelope=envelope)
                log.warning(
                    "%s: transient failure on %s (attempt %d/%d): %r; retrying in %.2f s",
                    self.name,
                    envelope.event_id,
                    attempt,
                    self.settings.max_attempts,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max_s)

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: BaseException,
        *,
        attempts: int,
        envelope: Envelope | None,
    ) -> bool:
        if record.topic == self.settings.dead_letter_topic:
            log.error(
                "%s: dropping unhandleable dead letter %s@%d/%d: %r",
                self.name,
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            return True
        event = DeadLettered(
            original_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            group_id=self.group_id,
            error_type=f"{type(error).__module__}.{type(error).__qualname__}",
            error=str(error)[:4000],
            attempts=attempts,
            original_key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            original_value_b64=base64.b64encode(record.value or b"").decode(),
            headers={key: value.decode(errors="replace") for key, value in record.headers},
        )
        # Deterministic id: if the commit after this publish is lost, the redelivery's dead letter
        # carries the same event_id and consumers of the dead-letter topic dedupe it.
        event_id = str(
            uuid.uuid5(
                _DEAD_LETTER_NAMESPACE, f"{self.group_id}/{record.topic}/{record.partition}/{record.offset}"
            )
        )
        try:
            await self.publisher.publish(
                event, cause=envelope, event_id=event_id, topic=self.settings.dead_letter_topic
            )
        except Exception as publish_error:
            log.error(
                "%s: could not dead-letter %s@%d/%d: %r",
                self.name,
                record.topic,
                record.partition,
                record.offset,
                publish_error,
            )
            return False
        log.error(
            "%s: dead-lettered %s@%d/%d after %d attempt(s): %r",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )
        return True


def subscribe(
    broker: KafkaBroker,
    topic: str,
    *,
    group_id: str,
    settings: BusSettings,
    publisher: EventPublisher,
    name: str | None = None,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    listener: ConsumerRebalanceListener | None = None,
    on_lag: Callable[[LagSample], None] | None = None,
) -> Callable[[EnvelopeHandler], EnvelopeHandler]:
    """Register an at-least-once envelope handler on ``topic`` for consumer group ``group_id``.

    Records are handled one at a time per subscription. Unparseable records and records whose
    payload does not validate are dead-lettered at once; a handler raising a ``transient`` error is
    retried with exponential backoff up to ``settings.max_attempts`` times, then dead-lettered; any
    other exception is dead-lettered after one attempt. The offset is committed only afterwards.

    Args:
        broker: the service's broker (from :func:`pfactory.bus.build_broker`).
        topic: the topic to consume.
        group_id: the consumer group; instances of one service share it.
        settings: bus settings (timeouts, retries, dead-letter topic).
        publisher: publishes dead letters.
        name: the handler's name in logs; defaults to the function name.
        transient: exception types worth retrying.
        listener: an aiokafka rebalance listener (e.g. to log or expose the assignment).
        on_lag: called after each committed record with that partition's remaining lag.

    Returns:
        A decorator that registers the handler and returns it unchanged.
    """

    def register(handler: EnvelopeHandler) -> EnvelopeHandler:
        handler_name: str = name or str(getattr(handler, "__name__", "handler"))
        delivery = _DeliveryLoop(
            handler,
            name=handler_name,
            group_id=group_id,
            settings=settings,
            publisher=publisher,
            transient=transient,
            on_lag=on_lag,
        )

        async def consume(message: Annotated[KafkaMessage, Context("message")]) -> None:
            await delivery(message)

        consume.__name__ = handler_name
        subscriber = broker.subscriber(
            topic,
            group_id=group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            listener=listener,
            decoder=_raw_body,
            title=f"{handler_name}:{topic}",
        )
        subscriber(consume)
        return handler

    return register
