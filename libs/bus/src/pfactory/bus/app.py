"""A service's FastStream app: the platform's topics exist before its subscribers start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from faststream import FastStream
from faststream.kafka import KafkaBroker

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.topics import ALL_TOPICS, TopicSpec

Hook = Callable[[], Awaitable[None]]


def make_app(
    broker: KafkaBroker,
    settings: BusSettings,
    *,
    topics: Iterable[TopicSpec] = ALL_TOPICS,
    on_startup: Iterable[Hook] = (),
    on_shutdown: Iterable[Hook] = (),
) -> FastStream:
    """The FastStream app of a service; creates ``topics`` first when ``settings.create_topics``.

    Args:
        broker: the service's broker with its subscribers registered.
        settings: bus settings.
        topics: topics to create before the broker starts (the platform's by default).
        on_startup: more hooks run before the broker starts (after topic creation).
        on_shutdown: hooks run before the broker stops.

    Returns:
        The app: ``await app.run()`` in production, ``await app.start()`` / ``app.stop()`` in tests.
    """
    specs = tuple(topics)

    async def create_topics() -> None:
        if settings.create_topics:
            await ensure_topics(settings, specs)

    return FastStream(broker, on_startup=[create_topics, *on_startup], on_shutdown=list(on_shutdown))
