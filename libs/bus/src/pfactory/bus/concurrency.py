"""Concurrent at-least-once delivery: up to N handlers at once, back-pressure by pausing partitions.

FastStream's consume loop hands each record to :class:`ConcurrentDelivery`, which starts the handler
as an asyncio task and returns at once, so the loop keeps polling (aiokafka's
``max_poll_interval_ms`` would otherwise throw the member out of its group during an hour-long
job). When N handlers run, the consumer's partitions are paused: new records wait on the broker,
not in memory. Offsets are committed per partition only up to the lowest record still running
(:class:`~pfactory.bus.inflight.OffsetTracker`), so a crash redelivers every unfinished record.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Protocol, TypeAlias, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from faststream.kafka.message import KafkaMessage

from pfactory.bus.delivery import LagSample, RecordProcessor
from pfactory.bus.inflight import ConsumerLoad, OffsetTracker

log = logging.getLogger("pfactory.bus")

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class _Subscriber(Protocol):
    """The part of FastStream's Kafka subscriber the delivery needs."""

    consumer: AIOKafkaConsumer | None

    async def stop(self) -> None: ...


def _partition(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class ConcurrentDelivery:
    """Runs up to ``capacity`` handler invocations of one subscription at once."""

    def __init__(
        self,
        processor: RecordProcessor,
        *,
        capacity: int,
        load: ConsumerLoad,
        on_lag: Callable[[LagSample], None] | None,
        listener: ConsumerRebalanceListener | None,
    ) -> None:
        self.processor = processor
        self.capacity = capacity
        self.load = load
        self.load.capacity = capacity
        self.on_lag = on_lag
        self.listener = _RebalanceListener(self, listener)
        self.offsets = OffsetTracker()
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Records fetched before a pause took effect; at most ``capacity``, started first, in order.
        self._overflow: deque[Record] = deque()
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._closing = False
        self._subscriber: _Subscriber | None = None

    def attach(self, subscriber: _Subscriber) -> None:
        """Cancel running handlers when the subscriber stops (broker close, app stop).

        FastStream has no per-subscriber stop hook and aiokafka calls no rebalance listener when a
        consumer closes, so the subscriber's own ``stop`` is wrapped.
        """
        self._subscriber = subscriber
        stop_subscriber = subscriber.stop

        async def stop() -> None:
            try:
                await self.shutdown()
            finally:
                try:
                    await stop_subscriber()
                finally:
                    self._reset()  # a restarted subscriber gets a new consumer and offsets

        subscriber.stop = stop  # type: ignore[method-assign]

    async def __call__(self, message: KafkaMessage) -> None:
        """Start the record's handler, or hold it when every slot is taken; returns at once."""
        record = cast(Record, message.raw_message)
        if self._closing:
            return  # neither started nor committed: redelivered after the restart
        # A rebalance that kept the partition rewinds it to the committed offset, so records still
        # running (or done after an unfinished one) come again. FastStream's in-memory TestKafkaBroker
        # has no consumer and numbers every record 0: nothing to recognise there.
        if self._consumer() is not None and self.offsets.already_started(_partition(record), record.offset):
            return
        if self._overflow or len(self._tasks) >= self.capacity:
            self._hold(record)
        else:
            self._start(record)
        self._apply_back_pressure()

    def _consumer(self) -> AIOKafkaConsumer | None:
        return self._subscriber.consumer if self._subscriber is not None else None

    def _hold(self, record: Record) -> None:
        name, consumer = self.processor.name, self._consumer()
        # Without a consumer (FastStream's TestKafkaBroker) nothing can be paused or rewound.
        if consumer is not None and len(self._overflow) >= self.capacity:
            # Give it back rather than grow: rewinding the paused partition fetches it again on resume.
            # IllegalStateError: the partition was revoked, and its next owner fetches the record.
            with contextlib.suppress(IllegalStateError):
                consumer.seek(_partition(record), record.offset)
            self.load.rewound += 1
            log.info(
                "%s: buffer full; rewound %s[%d] to %d", name, record.topic, record.partition, record.offset
            )
            return
        self._overflow.append(record)
        self.load.buffered = len(self._overflow)
        self.load.peak_buffered = max(self.load.peak_buffered, self.load.buffered)
        log.info(
            "%s: all %d slots busy; holding %s[%d]@%d (%d buffered) until one frees",
            name,
            self.capacity,
            record.topic,
            record.partition,
            record.offset,
            len(self._overflow),
        )

    def _start(self, record: Record) -> None:
        tp = _partition(record)
        self.offsets.start(tp, record.offset)
        task = asyncio.create_task(
            self._run(tp, record), name=f"{self.processor.name}:{tp.topic}[{tp.partition}]@{record.offset}"
        )
        self._tasks[task] = tp
        task.add_done_callback(self._finished)
        self.load.in_flight = len(self._tasks)

    async def _run(self, tp: TopicPartition, record: Record) -> None:
        while not await self.processor.process(record):
            # The dead letter could not be published: the record stays uncommitted and runs again.
            await asyncio.sleep(self.processor.settings.retry_backoff_max_s)
        self.offsets.finish(tp, record.offset)
        await self._commit()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self.load.in_flight = len(self._tasks)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Its offset stays unfinished, so the partition commits no further until it is redelivered.
            log.error("%s: delivery task %s failed: %r", self.processor.name, task.get_name(), error)
        if self._closing:
            return
        while self._overflow and len(self._tasks) < self.capacity:
            self._start(self._overflow.popleft())
        self.load.buffered = len(self._overflow)
        self._apply_back_pressure()

    def _apply_back_pressure(self) -> None:
        consumer = self._consumer()
        if consumer is None or self._closing:
            return
        if len(self._tasks) >= self.capacity:
            if not self.load.paused:
                log.info("%s: %d handlers running; pausing fetches", self.processor.name, len(self._tasks))
            consumer.pause(*consumer.assignment())
            self.load.paused = True
        elif self.load.paused:
            consumer.resume(*consumer.assignment())
            self.load.paused = False

    async def _commit(self, only: Collection[TopicPartition] | None = None) -> None:
        """Commit each partition up to its lowest unfinished record; the lock keeps commits monotonic."""
        consumer = self._consumer()
        if consumer is None:
            return
        async with self._commit_lock:
            assigned = consumer.assignment()
            offsets: dict[TopicPartition, int] = {}
            for tp in self.offsets.partitions():
                target = self.offsets.committable(tp)
                if only is not None and tp not in only:
                    continue
                if target is not None and tp in assigned and target > self._committed.get(tp, -1):
                    offsets[tp] = target
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except KafkaError as error:  # e.g. a rebalance: retried with the next commit
                log.warning(
                    "%s: commit of %s failed (%r); retried later", self.processor.name, offsets, error
                )
                return
            self._committed.update(offsets)
        if self.on_lag is not None:
            for tp, offset in offsets.items():
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    self.on_lag(
                        LagSample(tp.topic, tp.partition, self.processor.group_id, max(0, highwater - offset))
                    )

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop buffered records of ``revoked`` and commit what finished while the generation is valid.

        Running handlers are left alone until the new assignment is known: aiokafka's eager protocol
        revokes every partition on each rebalance, and most come straight back.
        """
        kept = deque(record for record in self._overflow if _partition(record) not in revoked)
        if dropped := len(self._overflow) - len(kept):
            log.info("%s: dropped %d buffered records of revoked partitions", self.processor.name, dropped)
        self._overflow = kept
        self.load.buffered = len(kept)
        await self._commit(revoked)

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Cancel handlers of partitions now owned by another member; keep the others running."""
        lost = (self.offsets.partitions() | set(self._tasks.values())) - assigned
        cancelled = [task for task, tp in self._tasks.items() if tp in lost]
        for task in cancelled:
            task.cancel()
        for tp in lost:
            self.offsets.forget(tp)
            self._committed.pop(tp, None)
        if cancelled:
            log.warning(
                "%s: cancelled %d running handler(s) of partitions %s, now owned by another member "
                "which redelivers their records",
                self.processor.name,
                len(cancelled),
                sorted(lost),
            )
        self.load.paused = False  # a new assignment starts unpaused
        self._apply_back_pressure()
        # Records that finished during the rebalance could not be committed then.
        flush = asyncio.create_task(self._commit())
        self._background.add(flush)
        flush.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Cancel running handlers (nothing is committed for them) and commit what finished."""
        self._closing = True
        self._overflow.clear()
        self.load.buffered = 0
        running = list(self._tasks)
        for task in running:
            task.cancel()
        if running:
            log.info(
                "%s: stopping; cancelled %d running handler(s), redelivered later",
                self.processor.name,
                len(running),
            )
        await asyncio.gather(*running, *self._background, return_exceptions=True)
        await self._commit()

    def _reset(self) -> None:
        self.offsets.clear()
        self._committed.clear()
        self.load.in_flight = len(self._tasks)
        self.load.paused = False
        self._closing = False


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The delivery's rebalance handling, then the user's listener (both always run)."""

    def __init__(self, delivery: ConcurrentDelivery, user: ConsumerRebalanceListener | None) -> None:
        self.delivery = delivery
        self.user = user

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.delivery.partitions_revoked(revoked)
        finally:
            if self.user is not None:
                await _maybe_await(self.user.on_partitions_revoked(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            self.delivery.partitions_assigned(assigned)
        finally:
            if self.user is not None:
                await _maybe_await(self.user.on_partitions_assigned(assigned))


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
