"""Kafka side of the gateway, built on ``pfactory.bus``: the envelope sink and the job-status feed."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from faststream.kafka import KafkaBroker

from pfactory.bus import TRANSIENT_ERRORS, EventPublisher, build_broker, ensure_topics, subscribe
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope
from pfactory.gateway.sink import EnvelopeHandler

log = logging.getLogger("pfactory.gateway.bus")

PRODUCER = "gateway"
STATUS_GROUP = "pfactory-gateway-job-status"


class KafkaEnvelopeSink:
    """Publishes through a FastStream broker; connects lazily and again after any failure."""

    def __init__(self, settings: BusSettings) -> None:
        self._settings = settings
        self._broker: KafkaBroker | None = None
        self._publisher: EventPublisher | None = None
        self._connecting = asyncio.Lock()  # the outbox relay and the registry feed share the sink

    async def _connect(self) -> EventPublisher:
        async with self._connecting:
            return await self._connect_once()

    async def _connect_once(self) -> EventPublisher:
        if self._publisher is None:
            if self._settings.create_topics:
                await ensure_topics(self._settings)
            broker = build_broker(self._settings, service=PRODUCER)
            try:
                await broker.connect()
            except BaseException:
                await broker.stop()
                raise
            self._broker, self._publisher = broker, EventPublisher(broker, PRODUCER)
        return self._publisher

    async def publish(self, envelope: Envelope, topic: str, key: str | None) -> None:
        """Publish and wait for the acknowledgement; on failure drop the connection for a fresh one."""
        try:
            publisher = await self._connect()
            await publisher.publish_envelope(envelope, topic, key)
        except BaseException:
            # a restarted embedded broker lost its topics: reconnect and re-create them next time
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the broker connection."""
        broker, self._broker, self._publisher = self._broker, None, None
        if broker is not None:
            await _quietly_stop(broker)


class KafkaStatusFeed:
    """Follows ``pf.jobs.status`` via ``pfactory.bus.subscribe`` (commit after handling)."""

    def __init__(
        self, settings: BusSettings, *, topic: str = topics.JOB_STATUS, group_id: str = STATUS_GROUP
    ) -> None:
        self._settings = settings
        self.topic = topic
        self.group_id = group_id

    async def run(self, handle: EnvelopeHandler) -> None:
        """Consume until cancelled; keep trying to connect while the broker is down."""
        backoff = self._settings.retry_backoff_initial_s
        while True:
            broker = build_broker(self._settings, service="gateway-status")
            subscribe(
                broker,
                self.topic,
                group_id=self.group_id,
                settings=self._settings,
                publisher=EventPublisher(broker, PRODUCER),
                name="gateway_job_status",
                transient=(*TRANSIENT_ERRORS, sqlite3.OperationalError),
            )(handle)
            try:
                if self._settings.create_topics:
                    await ensure_topics(self._settings, [topics.TOPICS_BY_NAME[self.topic]])
                await broker.start()
            except Exception as error:
                log.warning("job status feed cannot start (%s); retrying in %.1f s", error, backoff)
                await _quietly_stop(broker)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.retry_backoff_max_s)
                continue
            except BaseException:  # cancelled while joining the group
                await _quietly_stop(broker)
                raise
            try:
                await asyncio.Event().wait()  # the subscriber runs inside the broker until cancelled
            finally:
                await _quietly_stop(broker)


async def _quietly_stop(broker: KafkaBroker) -> None:
    try:
        await broker.stop()
    except Exception:  # closing a broken connection must not mask the original error
        log.debug("stopping the Kafka broker failed", exc_info=True)
