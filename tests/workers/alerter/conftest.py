"""Fixtures of the alert router's tests: the PagerDuty/Datadog receiver, a fake clock, a statsd capture."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.utils.statsd import StatsdCapture, capturing_statsd
from tests.workers.alerter.receiver import EventsReceiver, running_receiver

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
OTHER_KEY = "0THERKEY000123456789abcdefABCDEF"


@pytest.fixture
def receiver() -> Iterator[EventsReceiver]:
    """The receiver; the test fails if any body it got broke the documented schema."""
    with running_receiver() as running:
        yield running
    assert running.problems == [], f"bodies broke the documented schema: {running.problems}"


@pytest.fixture
def statsd() -> Iterator[StatsdCapture]:
    """A DogStatsD capture for the test."""
    with capturing_statsd() as capture:
        yield capture


@dataclass
class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"asked to sleep {seconds} s"
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    """A fresh fake clock."""
    return FakeTime()
