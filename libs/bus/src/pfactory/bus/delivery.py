"""Handling one record with the delivery guarantees: parse, call with retries, or dead-letter.

Shared by the one-at-a-time loop in :mod:`pfactory.bus.consumer` and the concurrent one in
:mod:`pfactory.bus.concurrency`; committing the offset afterwards is their business.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from pfactory.bus.broker import EventPublisher
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import DeadLettered, Envelope
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.bus")

EnvelopeHandler = Callable[[Envelope], Awaitable[None]]
"""What ``subscribe`` decorates: ``async def handle(envelope: Envelope) -> None``."""

_DEAD_LETTER_NAMESPACE = uuid.UUID("6d1f4b8e-3c55-4c1e-9a7e-0f1b2c3d4e5f")


def is_transient(error: BaseException, transient: tuple[type[BaseException], ...]) -> bool:
    """True when ``error`` (or the exception it was raised from) is one of the ``transient`` types."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, transient):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


class LagGauge:
    """Emits each lag sample as the partition's lag gauge, then passes it on."""

    def __init__(self, metrics: Metrics, then: Callable[[LagSample], None] | None = None) -> None:
        self.metrics = metrics
        self.then = then

    def __call__(self, sample: LagSample) -> None:
        self.metrics.emit(
            catalog.CONSUMER_LAG,
            sample.lag,
            group=sample.group_id,
            topic=sample.topic,
            partition=sample.partition,
        )
        if self.then is not None:
            self.then(sample)


@dataclass(frozen=True)
class LagSample:
    """Records still waiting on one partition after a record was handled (highwater - position)."""

    topic: str
    partition: int
    group_id: str
    lag: int


class RecordProcessor:
    """Runs one handler on one record: poison and permanent failures are dead-lettered, transient ones retried."""

    def __init__(
        self,
        handler: EnvelopeHandler,
        *,
        name: str,
        group_id: str,
        settings: BusSettings,
        publisher: EventPublisher,
        transient: tuple[type[BaseException], ...],
        metrics: Metrics | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.group_id = group_id
        self.settings = settings
        self.publisher = publisher
        self.transient = transient
        self.metrics = metrics

    def _count(self, record: ConsumerRecord[bytes, bytes], outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.emit(
                catalog.MESSAGES_HANDLED, group=self.group_id, topic=record.topic, outcome=outcome
            )

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> bool:
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
            started = time.perf_counter()
            try:
                await self.handler(envelope)
                self._count(record, "ok")
                return True
            except Exception as error:
                if not is_transient(error, self.transient) or attempt >= self.settings.max_attempts:
                    return await self._dead_letter(record, error, attempts=attempt, envelope=envelope)
                self._count(record, "retried")
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
            finally:
                if self.metrics is not None:
                    elapsed = (time.perf_counter() - started) * 1000
                    self.metrics.emit(
                        catalog.HANDLER_DURATION, elapsed, group=self.group_id, topic=record.topic
                    )

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: BaseException,
        *,
        attempts: int,
        envelope: Envelope | None,
    ) -> bool:
        where = f"{record.topic}@{record.partition}/{record.offset}"
        if record.topic == self.settings.dead_letter_topic:
            log.error("%s: dropping unhandleable dead letter %s: %r", self.name, where, error)
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
            log.error("%s: could not dead-letter %s: %r", self.name, where, publish_error)
            return False
        log.error("%s: dead-lettered %s after %d attempt(s): %r", self.name, where, attempts, error)
        self._count(record, "dead_lettered")
        if self.metrics is not None:
            self.metrics.emit(catalog.DEAD_LETTERED, group=self.group_id, topic=record.topic)
        return True
