"""The embedded Tansu broker: start, stop, restart (memory storage: a restart forgets topics)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pfactory.bus import BusSettings, EmbeddedBroker, ensure_topics
from pfactory.bus.embedded import _port_open
from pfactory.contracts.topics import DAY_MS, TopicSpec

pytestmark = pytest.mark.integration


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_embedded_broker_starts_stops_and_forgets_topics_on_restart(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    settings = BusSettings(bootstrap_servers=broker.start())
    try:
        assert broker.running and _port_open(broker.port)
        topic = f"pf.test.{uuid.uuid4().hex[:8]}"
        await ensure_topics(settings, [TopicSpec(topic, 2, DAY_MS, "t")])
        assert topic in await topic_names(settings.bootstrap_servers)

        assert broker.restart() == settings.bootstrap_servers
        assert topic not in await topic_names(settings.bootstrap_servers)
    finally:
        broker.stop()
    assert not broker.running and not _port_open(broker.port)
