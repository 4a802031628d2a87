"""Bus test fixtures: settings with a per-test dead-letter topic, and the test's topics created."""

from __future__ import annotations

import pytest

from pfactory.bus import BusSettings, ensure_topics
from pfactory.contracts.topics import DAY_MS, TopicSpec


@pytest.fixture
def settings(bus_settings: BusSettings, topic_name: str) -> BusSettings:
    """Session-broker settings whose dead-letter topic is private to the test."""
    return bus_settings.model_copy(update={"dead_letter_topic": f"{topic_name}.dlq", "max_attempts": 3})


@pytest.fixture
async def topic(settings: BusSettings, topic_name: str) -> str:
    """The test's topic (one partition) and its dead-letter topic, created on the broker."""
    await ensure_topics(settings, [TopicSpec(topic_name, 1, DAY_MS, "test topic")])
    return topic_name
