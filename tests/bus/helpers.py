"""Shared helpers for the bus tests: polls with deadlines, topic readers, started brokers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from pfactory.bus import BusSettings


async def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def read_topic(
    settings: BusSettings, topic: str, *, count: int, partitions: int = 1, timeout: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records from the start of ``topic`` without a consumer group (no join delay)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} of {count} records from {topic} in {timeout:.0f}s")
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def end_offset(settings: BusSettings, topic: str, partition: int = 0) -> int:
    """The partition's highwater mark: how many records were ever appended to it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partition_ = TopicPartition(topic, partition)
        offsets = await consumer.end_offsets([partition_])
        return int(offsets[partition_])
    finally:
        await consumer.stop()


async def produce_raw(
    settings: BusSettings, topic: str, values: list[bytes], *, key: bytes | None = None
) -> None:
    """Produce raw bytes with a bare aiokafka producer (no envelope, no FastStream)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@asynccontextmanager
async def started(broker: KafkaBroker) -> AsyncIterator[KafkaBroker]:
    """The broker with its subscribers running, stopped afterwards."""
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
