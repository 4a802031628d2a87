"""Reading a topic back without a consumer group: for the CLI, the demo, audits and tests.

Nothing is committed and no service's offsets move.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from pfactory.bus.broker import aiokafka_client_kwargs
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import Envelope


@dataclass(frozen=True)
class SeenEnvelope:
    """An envelope and where it sits on the bus."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int

    def describe(self) -> str:
        """One line: which event sits where."""
        return (
            f"{self.envelope.type} on {self.topic} partition {self.partition} offset {self.offset}, "
            f"event {self.envelope.event_id} from {self.envelope.producer}"
        )


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, *, timeout_s: float
) -> list[TopicPartition]:
    """The partitions the broker has for ``topic`` now, waiting until the topic exists.

    The count comes from fresh metadata, not the contracts: after a restart Tansu may have
    auto-created a topic with its default count before anyone ran ``ensure_topics``.

    Returns:
        The partitions, or an empty list when the topic did not appear within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        # consumer.topics() fetches into a throw-away cluster object; this refreshes the consumer's own
        await consumer._client.force_metadata_update()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if partitions or time.monotonic() > deadline:
            return [TopicPartition(topic, p) for p in partitions]
        await asyncio.sleep(0.1)


async def read_envelopes(
    settings: BusSettings,
    topic: str,
    *,
    keep: Callable[[Envelope], bool] = lambda _: True,
    count: int = 1,
    timeout_s: float = 15.0,
) -> list[SeenEnvelope]:
    """Read ``topic`` from the beginning until ``count`` envelopes pass ``keep``, or the time is up.

    Records that are not envelopes are skipped (the dead-letter topic holds those).

    Args:
        settings: where the broker is.
        topic: the topic to read.
        keep: which envelopes count.
        count: how many to wait for.
        timeout_s: how long to keep reading; fewer than ``count`` are returned when it runs out.

    Returns:
        The matching envelopes in the order read (per partition order).
    """
    deadline = time.monotonic() + timeout_s
    found: list[SeenEnvelope] = []
    consumer = AIOKafkaConsumer(
        **aiokafka_client_kwargs(settings, service="reader"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic, timeout_s=timeout_s)
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        envelope = Envelope.from_bytes(record.value or b"")
                    except ValidationError:
                        continue
                    if keep(envelope):
                        found.append(SeenEnvelope(envelope, record.topic, record.partition, record.offset))
    finally:
        await consumer.stop()
    return found
