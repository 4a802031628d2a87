"""Delivery guarantees of subscribe(): dead letters, retries, idempotency, against real Tansu."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from pfactory.bus import (
    BusSettings,
    EventPublisher,
    InMemoryProcessedEvents,
    LagSample,
    TransientError,
    build_broker,
    idempotent,
    subscribe,
)
from pfactory.contracts.events import DeadLettered, Envelope, Event, JobStatus, JobStatusChanged
from tests.bus.helpers import end_offset, produce_raw, read_topic, started, wait_until

pytestmark = pytest.mark.integration


def status(job_id: str) -> JobStatusChanged:
    return JobStatusChanged(job_id=job_id, status=JobStatus.RUNNING)


async def dead_letters(settings: BusSettings, count: int) -> list[tuple[Envelope, DeadLettered]]:
    records = await read_topic(settings, settings.dead_letter_topic, count=count)
    envelopes = [Envelope.from_bytes(r.value) for r in records]
    return [(e, e.open_as(DeadLettered)) for e in envelopes]


async def test_poison_messages_are_dead_lettered_and_the_next_message_is_processed(
    settings: BusSettings, topic: str
) -> None:
    garbage = b"\x00not json at all\xff"
    unknown_type = json.dumps(
        {
            "type": "NoSuchEvent",
            "schema_version": 1,
            "correlation_id": "c",
            "producer": "p",
            "payload": {},
        }
    ).encode()
    await produce_raw(settings, topic, [garbage, unknown_type], key=b"k")
    broker = build_broker(settings, service="poison")
    publisher = EventPublisher(broker, "poison-test")
    handled: list[str] = []

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def handle(envelope: Envelope) -> None:
        handled.append(envelope.open_as(JobStatusChanged).job_id)

    async with started(broker):
        await publisher.publish(status("good-after-poison"), topic=topic)
        await wait_until(lambda: bool(handled), timeout=20, what="the good message after the poison")

    assert handled == ["good-after-poison"]
    (_, first), (_, second) = await dead_letters(settings, 2)
    assert first.original_topic == topic and first.partition == 0 and first.offset == 0
    assert first.group_id == f"g-{topic}"
    assert first.error_type == "pydantic_core._pydantic_core.ValidationError"
    assert "Invalid JSON" in first.error
    assert base64.b64decode(first.original_value_b64) == garbage
    assert base64.b64decode(first.original_key_b64 or "") == b"k"
    assert first.attempts == 0
    assert second.offset == 1 and second.error_type == "pfactory.contracts.events.UnknownEventError"
    assert "NoSuchEvent" in second.error


async def test_transient_error_is_retried_until_the_handler_succeeds(
    settings: BusSettings, topic: str
) -> None:
    broker = build_broker(settings, service="transient")
    publisher = EventPublisher(broker, "transient-test")
    attempts: Counter[str] = Counter()
    done: list[str] = []

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def flaky(envelope: Envelope) -> None:
        attempts[envelope.event_id] += 1
        if attempts[envelope.event_id] < 2:
            raise ConnectionError("registry briefly unreachable")
        done.append(envelope.event_id)

    async with started(broker):
        sent = await publisher.publish(status("flaky"), topic=topic)
        await wait_until(lambda: bool(done), timeout=20, what="the retried handler to succeed")

    assert done == [sent.event_id]
    assert attempts[sent.event_id] == 2
    assert await end_offset(settings, settings.dead_letter_topic) == 0


async def test_permanent_and_exhausted_failures_are_dead_lettered_with_their_attempts(
    settings: BusSettings, topic: str
) -> None:
    broker = build_broker(settings, service="failing")
    publisher = EventPublisher(broker, "failing-test")
    attempts: Counter[str] = Counter()
    processed: list[str] = []

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def failing(envelope: Envelope) -> None:
        job_id = envelope.open_as(JobStatusChanged).job_id
        attempts[job_id] += 1
        if job_id == "permanent":
            raise ValueError("feature set 'credit' has no column 'income'")
        if job_id == "always-transient":
            raise TransientError("S3 throttled")
        processed.append(job_id)

    async with started(broker):
        permanent = await publisher.publish(status("permanent"), topic=topic)
        exhausted = await publisher.publish(status("always-transient"), topic=topic)
        await publisher.publish(status("fine"), topic=topic)
        await wait_until(lambda: processed == ["fine"], timeout=20, what="the message after the failures")

    assert attempts == {"permanent": 1, "always-transient": settings.max_attempts, "fine": 1}
    (env1, first), (env2, second) = await dead_letters(settings, 2)
    assert (first.error_type, first.attempts) == ("builtins.ValueError", 1)
    assert "no column 'income'" in first.error
    assert Envelope.from_bytes(base64.b64decode(first.original_value_b64)) == permanent
    assert env1.causation_id == permanent.event_id and env1.correlation_id == "permanent"
    assert second.error_type == "pfactory.bus.consumer.TransientError"
    assert second.attempts == settings.max_attempts
    assert env2.causation_id == exhausted.event_id


async def test_a_redelivered_envelope_is_handled_once(settings: BusSettings, topic: str) -> None:
    broker = build_broker(settings, service="idem")
    publisher = EventPublisher(broker, "idem-test")
    store = InMemoryProcessedEvents()
    deliveries: list[str] = []
    effects: list[str] = []

    @idempotent(store, "test.register")
    async def register(envelope: Envelope) -> None:
        effects.append(envelope.event_id)

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def deliver(envelope: Envelope) -> None:
        deliveries.append(envelope.event_id)
        await register(envelope)

    envelope = Envelope.wrap(status("idem"), producer="outbox", event_id=str(uuid.uuid4()))
    async with started(broker):
        await publisher.publish_envelope(envelope, topic, "idem")
        await publisher.publish_envelope(envelope, topic, "idem")  # the outbox relay re-sent it
        await wait_until(lambda: len(deliveries) == 2, timeout=20, what="both deliveries")

    assert deliveries == [envelope.event_id] * 2
    assert effects == [envelope.event_id]


async def test_a_record_is_not_committed_until_its_dead_letter_is_published(
    settings: BusSettings, topic: str
) -> None:
    class FlakyDeadLetterPublisher(EventPublisher):
        failures = 1

        async def publish(self, event: Event, **kwargs: Any) -> Envelope:
            if isinstance(event, DeadLettered) and self.failures:
                self.failures -= 1
                raise KafkaTimeoutError("dead-letter topic unavailable")
            return await super().publish(event, **kwargs)

    broker = build_broker(settings, service="dlq-outage")
    publisher = FlakyDeadLetterPublisher(broker, "dlq-outage-test")
    attempts: list[str] = []

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def broken(envelope: Envelope) -> None:
        attempts.append(envelope.event_id)
        raise ValueError("always fails")

    async with started(broker):
        sent = await EventPublisher(broker, "t").publish(status("dlq-outage"), topic=topic)
        [(_, letter)] = await dead_letters(settings, 1)

    # The first dead letter was lost, so the record was rewound and handled again, not skipped.
    assert attempts == [sent.event_id, sent.event_id]
    assert letter.offset == 0 and letter.attempts == 1


async def test_lag_is_reported_after_each_committed_record(settings: BusSettings, topic: str) -> None:
    broker = build_broker(settings, service="lag")
    publisher = EventPublisher(broker, "lag-test")
    samples: list[LagSample] = []

    @subscribe(
        broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher, on_lag=samples.append
    )
    async def handle(envelope: Envelope) -> None:
        pass

    async with broker:
        for i in range(5):
            await publisher.publish(status(f"lag-{i}"), topic=topic)
    async with started(broker):
        await wait_until(lambda: len(samples) == 5, timeout=20, what="five lag samples")

    assert [s.lag for s in samples] == [4, 3, 2, 1, 0]
    assert {(s.topic, s.partition, s.group_id) for s in samples} == {(topic, 0, f"g-{topic}")}
