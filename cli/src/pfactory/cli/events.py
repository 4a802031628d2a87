"""Read events back from the bus (the demo shows each accepted job's request event)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from pfactory.contracts import topics
from pfactory.contracts.events import Envelope

REQUEST_TOPICS = {"materialise": topics.MATERIALISATION_REQUESTED, "train": topics.TRAIN_REQUESTED}


@dataclass(frozen=True)
class SeenEvent:
    """An envelope and where it sits on the bus."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int


async def find_job_events(
    bootstrap_servers: str, topic: str, job_ids: Collection[str], *, timeout_s: float = 15.0
) -> dict[str, SeenEvent]:
    """Read ``topic`` from the beginning until an envelope of each job (by payload ``job_id``) is seen.

    No consumer group is used, so nothing is committed and no service's offsets move.

    Args:
        bootstrap_servers: the broker.
        topic: the topic to read.
        job_ids: the jobs to look for.
        timeout_s: how long to keep reading.

    Returns:
        The first envelope found for each job id (missing ids were not seen in time).
    """
    wanted = set(job_ids)
    found: dict[str, SeenEvent] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        partitions: list[TopicPartition] = []
        while not partitions and time.monotonic() < deadline:
            await consumer.topics()  # refreshes the cluster metadata
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                await asyncio.sleep(0.2)
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while wanted - found.keys() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    try:
                        envelope = Envelope.from_bytes(record.value or b"")
                    except ValueError:
                        continue
                    job_id = envelope.payload.get("job_id")
                    if job_id in wanted and job_id not in found:
                        found[job_id] = SeenEvent(envelope, record.topic, record.partition, record.offset)
    finally:
        await consumer.stop()
    return found


def describe(seen: SeenEvent) -> str:
    """One line that says which event of a job sits where on the bus."""
    envelope = seen.envelope
    return (
        f"{envelope.type} on {seen.topic} partition {seen.partition} offset {seen.offset}, "
        f"event {envelope.event_id} from {envelope.producer}"
    )
