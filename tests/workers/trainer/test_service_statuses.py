"""Progress statuses published in the background leave in the order they were made."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from pfactory.contracts.events import Event
from pfactory.trainer import service


def _job(emit: service.Emit) -> service._Job:
    # the fields emit_soon/flush use; the request, config and deps play no part in them
    return service._Job(request=cast(Any, None), config=cast(Any, None), deps=cast(Any, None), emit=emit)


async def test_statuses_keep_their_order_when_an_earlier_publish_is_slower() -> None:
    sent: list[str] = []

    async def emit(label: str, event: Event) -> None:
        await asyncio.sleep(0.05 if label == "first" else 0)  # the first ack comes back last
        sent.append(label)

    job = _job(emit)
    event = cast(Event, object())
    job.emit_soon("first", event)
    job.emit_soon("second", event)
    job.emit_soon("third", event)
    assert sent == []  # nothing waited for: the caller went on
    await job.flush()
    assert sent == ["first", "second", "third"]


async def test_flush_raises_what_a_publish_raised() -> None:
    async def emit(label: str, event: Event) -> None:
        if label == "broken":
            raise ConnectionError("broker gone")

    job = _job(emit)
    job.emit_soon("broken", cast(Event, object()))
    job.emit_soon("after", cast(Event, object()))
    with pytest.raises(ConnectionError, match="broker gone"):
        await job.flush()
