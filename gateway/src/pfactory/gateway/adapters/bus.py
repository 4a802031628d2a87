"""Kafka side of the gateway, built on ``pfactory.bus``: the envelope sink, the job-status feed and the
feed of materialisation outcomes."""

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
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.gateway.bus")

PRODUCER = "gateway"
STATUS_GROUP = "pfactory-gateway-job-status"
FEATURE_GROUP = "pfactory-gateway-feature-catalog"


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
        self,
        settings: BusSettings,
        *,
        topic: str = topics.JOB_STATUS,
        group_id: str = STATUS_GROUP,
        name: str = "gateway_job_status",
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self.group_id = group_id
        self.name = name
        self._metrics = metrics

    async def run(self, handle: EnvelopeHandler) -> None:
        """Consume until cancelled; keep trying to connect while the broker is down."""
        backoff = self._settings.retry_backoff_initial_s
        while True:
            broker = build_broker(self._settings, service=self.name.replace("_", "-"))
            subscribe(
                broker,
                self.topic,
                group_id=self.group_id,
                settings=self._settings,
                publisher=EventPublisher(broker, PRODUCER),
                name=self.name,
                transient=(*TRANSIENT_ERRORS, sqlite3.OperationalError),
                metrics=self._metrics,
            )(handle)
            try:
                if self._settings.create_topics:
                    await ensure_topics(self._settings, [topics.TOPICS_BY_NAME[self.topic]])
                await broker.start()
            except Exception as error:
                log.warning("%s feed cannot start (%s); retrying in %.1f s", self.topic, error, backoff)
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


class CombinedFeed:
    """Runs several feeds into one handler; stops them all when cancelled or when one fails."""

    def __init__(self, *feeds: KafkaStatusFeed) -> None:
        self.feeds = feeds

    async def run(self, handle: EnvelopeHandler) -> None:
        """Consume every feed until cancelled."""
        async with asyncio.TaskGroup() as group:
            for feed in self.feeds:
                group.create_task(feed.run(handle), name=f"gateway-feed-{feed.topic}")


def feature_outcome_feed(settings: BusSettings, *, metrics: Metrics | None = None) -> CombinedFeed:
    """``pf.features.materialised`` and ``pf.materialisation.failed``, each in its own consumer group."""
    return CombinedFeed(
        KafkaStatusFeed(
            settings,
            topic=topics.FEATURES_MATERIALISED,
            group_id=f"{FEATURE_GROUP}-materialised",
            name="gateway_features_materialised",
            metrics=metrics,
        ),
        KafkaStatusFeed(
            settings,
            topic=topics.MATERIALISATION_FAILED,
            group_id=f"{FEATURE_GROUP}-failed",
            name="gateway_materialisation_failed",
            metrics=metrics,
        ),
    )


async def _quietly_stop(broker: KafkaBroker) -> None:
    try:
        await broker.stop()
    except Exception:  # closing a broken connection must not mask the original error
        log.debug("stopping the Kafka broker failed", exc_info=True)
