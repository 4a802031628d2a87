"""At-least-once envelope consumers: manual commits, in-process retries, dead letters, lag.

A subscribed handler receives a parsed :class:`Envelope`. The offset of a record is committed only
after the handler succeeded or the record was durably dead-lettered; a crash in between means the
record is delivered again (handlers are idempotent, see :mod:`pfactory.bus.idempotency`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from faststream import AckPolicy, Context
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.message import StreamMessage

from pfactory.bus import delivery
from pfactory.bus.broker import EventPublisher
from pfactory.bus.concurrency import ConcurrentDelivery
from pfactory.bus.delivery import EnvelopeHandler, LagGauge, LagSample, RecordProcessor
from pfactory.bus.inflight import ConsumerLoad
from pfactory.bus.settings import BusSettings
from pfactory.telemetry.metrics import Metrics

__all__ = [
    "TRANSIENT_ERRORS",
    "ConsumerLoad",
    "EnvelopeHandler",
    "LagSample",
    "TransientError",
    "consumer_lag",
    "is_transient",
    "subscribe",
]

log = logging.getLogger("pfactory.bus")


class TransientError(Exception):
    """A failure worth retrying (a dependency was briefly unavailable); raise it from a handler."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
"""Exceptions retried in-process by default; anything else is permanent and dead-lettered at once."""


def is_transient(error: BaseException, transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS) -> bool:
    """True when ``error`` (or the exception it was raised from) is one of the ``transient`` types."""
    return delivery.is_transient(error, transient)


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
    """Runs one handler over the records of one subscription, one record at a time."""

    def __init__(
        self,
        processor: RecordProcessor,
        *,
        on_lag: Callable[[LagSample], None] | None,
        load: ConsumerLoad | None,
    ) -> None:
        self.processor = processor
        self.on_lag = on_lag
        self.load = load
        if load is not None:
            load.capacity = 1

    async def __call__(self, message: KafkaMessage) -> None:
        record = cast("ConsumerRecord[bytes, bytes]", message.raw_message)
        consumer = cast(AIOKafkaConsumer, message.consumer)
        if self.load is not None:
            self.load.in_flight = 1
        try:
            durable = await self.processor.process(record)
        finally:
            if self.load is not None:
                self.load.in_flight = 0
        if not durable:
            # The dead letter could not be published: rewind so the record comes again.
            await message.nack()
            await asyncio.sleep(self.processor.settings.retry_backoff_max_s)
            return
        partition = TopicPartition(record.topic, record.partition)
        try:
            await consumer.commit({partition: record.offset + 1})
        except KafkaError as error:  # a rebalance took the partition: its next owner redelivers
            log.warning(
                "%s: commit of %s@%d failed (%r); it will be redelivered",
                self.processor.name,
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
                        record.topic,
                        record.partition,
                        self.processor.group_id,
                        max(0, highwater - record.offset - 1),
                    )
                )


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
    concurrency: int | None = None,
    load: ConsumerLoad | None = None,
    max_poll_interval_ms: int = 300_000,
    metrics: Metrics | None = None,
) -> Callable[[EnvelopeHandler], EnvelopeHandler]:
    """Register an at-least-once envelope handler on ``topic`` for consumer group ``group_id``.

    Unparseable records and records whose payload does not validate are dead-lettered at once; a
    handler raising a ``transient`` error is retried with exponential backoff up to
    ``settings.max_attempts`` times, then dead-lettered; any other exception is dead-lettered after
    one attempt. The offset is committed only afterwards.

    By default records are handled one at a time inside FastStream's consume loop, so a handler must
    finish within ``max_poll_interval_ms`` or the member is thrown out of its group and the record
    redelivered. With ``concurrency=N`` (1 included) up to N handlers run at once as asyncio tasks
    and the loop keeps polling, so a handler may run for hours; when N run, the partitions are
    paused until one finishes. Each partition is committed only up to its lowest unfinished record, so a
    crash redelivers every unfinished record and the finished ones after it. On a rebalance, handlers
    of partitions that moved to another member are cancelled; on stop, all running handlers are.

    Args:
        broker: the service's broker (from :func:`pfactory.bus.build_broker`).
        topic: the topic to consume.
        group_id: the consumer group; instances of one service share it.
        settings: bus settings (timeouts, retries, dead-letter topic).
        publisher: publishes dead letters.
        name: the handler's name in logs; defaults to the function name.
        transient: exception types worth retrying.
        listener: an aiokafka rebalance listener (e.g. to log or expose the assignment); it runs
            after the subscription's own rebalance handling.
        on_lag: called after each commit with that partition's remaining lag.
        concurrency: handler invocations allowed at once, run as tasks; None handles records inline.
        load: kept current with the in-flight count and capacity, for ``/ready`` or a gauge.
        max_poll_interval_ms: aiokafka's limit between polls before the member leaves its group.
        metrics: emits the catalog's bus metrics (records handled by outcome, handler time, dead
            letters, the group's lag on the topic); None emits nothing.

    Returns:
        A decorator that registers the handler and returns it unchanged.

    Raises:
        ValueError: ``concurrency`` is below 1.
    """
    if concurrency is not None and concurrency < 1:
        raise ValueError(
            f"subscribe({topic!r}): concurrency must be at least 1, got {concurrency}; "
            "use 1 to run one handler at a time, or leave it unset to handle records inline"
        )

    def register(handler: EnvelopeHandler) -> EnvelopeHandler:
        handler_name: str = name or str(getattr(handler, "__name__", "handler"))
        processor = RecordProcessor(
            handler,
            name=handler_name,
            group_id=group_id,
            settings=settings,
            publisher=publisher,
            transient=transient,
            metrics=metrics,
        )
        lag_sink = LagGauge(metrics, on_lag) if metrics is not None else on_lag
        concurrent: ConcurrentDelivery | None = None
        deliver: Callable[[KafkaMessage], Any]
        if concurrency is None:
            deliver = _DeliveryLoop(processor, on_lag=lag_sink, load=load)
        else:
            concurrent = ConcurrentDelivery(
                processor,
                capacity=concurrency,
                load=load if load is not None else ConsumerLoad(),
                on_lag=lag_sink,
                listener=listener,
            )
            deliver = concurrent

        async def consume(message: Annotated[KafkaMessage, Context("message")]) -> None:
            await deliver(message)

        consume.__name__ = handler_name
        subscriber = broker.subscriber(
            topic,
            group_id=group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            listener=concurrent.listener if concurrent is not None else listener,
            decoder=_raw_body,
            title=f"{handler_name}:{topic}",
        )
        subscriber(consume)
        if concurrent is not None:
            concurrent.attach(subscriber)
        return handler

    return register
