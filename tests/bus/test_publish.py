"""Publishing, topic creation and interoperability against the real Tansu broker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import Producer

from pfactory.bus import BusSettings, EventPublisher, build_broker, ensure_topics, make_app, subscribe
from pfactory.bus.broker import HEADER_EVENT_ID, HEADER_EVENT_TYPE
from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged, Progress
from pfactory.contracts.topics import DAY_MS, TopicSpec
from tests.bus.helpers import read_topic, started, wait_until

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_requested_partition_counts_once(settings: BusSettings) -> None:
    specs = [TopicSpec(f"pf.test.{uuid.uuid4().hex[:10]}", n, DAY_MS, "t") for n in (1, 3, 6)]

    created = await ensure_topics(settings, specs)
    again = await ensure_topics(settings, specs)

    assert sorted(created) == sorted([s.name for s in specs] + [settings.dead_letter_topic])
    assert again == []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in specs])
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    assert counts == {s.name: s.partitions for s in specs}


async def test_published_envelope_round_trips_to_a_subscriber(settings: BusSettings, topic: str) -> None:
    broker = build_broker(settings, service="roundtrip")
    publisher = EventPublisher(broker, "roundtrip-test")
    received: list[Envelope] = []

    @subscribe(broker, topic, group_id=f"g-{topic}", settings=settings, publisher=publisher)
    async def handle(envelope: Envelope) -> None:
        received.append(envelope)

    event = JobStatusChanged(
        job_id="job-1", status=JobStatus.RUNNING, stage="fit", progress=Progress(done=3, total=10)
    )
    async with started(broker):
        sent = await publisher.publish(event, topic=topic)
        await wait_until(lambda: bool(received), timeout=20, what="the envelope to arrive")

    assert received == [sent]
    assert received[0].open() == event
    assert sent.correlation_id == "job-1" and sent.producer == "roundtrip-test"
    [record] = await read_topic(settings, topic, count=1)
    assert record.key == b"job-1"
    headers = {k: v.decode() for k, v in record.headers}
    assert headers[HEADER_EVENT_TYPE] == "JobStatusChanged"
    assert headers[HEADER_EVENT_ID] == sent.event_id


async def test_envelope_from_an_independent_client_is_consumed(settings: BusSettings, topic: str) -> None:
    # Built by hand, not via pydantic: the wire format is plain JSON any Kafka client can write.
    wire = {
        "event_id": str(uuid.uuid4()),
        "type": "JobStatusChanged",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": "job-42",
        "causation_id": None,
        "producer": "upstream-system",
        "payload": {"job_id": "job-42", "status": "queued"},
    }
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"job-42", value=json.dumps(wire).encode())
    assert producer.flush(10) == 0

    broker = build_broker(settings, service="interop")
    received: list[Envelope] = []

    @subscribe(
        broker,
        topic,
        group_id=f"g-{topic}",
        settings=settings,
        publisher=EventPublisher(broker, "interop-test"),
    )
    async def handle(envelope: Envelope) -> None:
        received.append(envelope)

    async with started(broker):
        await wait_until(lambda: bool(received), timeout=20, what="the upstream envelope")

    assert received[0].event_id == wire["event_id"]
    assert received[0].open() == JobStatusChanged(job_id="job-42", status=JobStatus.QUEUED)


async def test_app_creates_its_topics_before_its_subscribers_start(
    settings: BusSettings, topic_name: str
) -> None:
    spec = TopicSpec(topic_name, 3, DAY_MS, "app topic")
    broker = build_broker(settings, service="app")
    publisher = EventPublisher(broker, "app-test")
    received: list[Envelope] = []

    @subscribe(broker, topic_name, group_id=f"g-{topic_name}", settings=settings, publisher=publisher)
    async def handle(envelope: Envelope) -> None:
        received.append(envelope)

    app = make_app(broker, settings, topics=[spec])
    await app.start()
    try:
        await publisher.publish(JobStatusChanged(job_id="via-app", status=JobStatus.QUEUED), topic=topic_name)
        await wait_until(lambda: bool(received), timeout=20, what="the app's subscriber")
    finally:
        await app.stop()
    assert await ensure_topics(settings, [spec]) == []  # the app created it (and its dead-letter topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic_name])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3
