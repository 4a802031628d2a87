"""The registrar's metrics as DogStatsD lines: one count per committed version, the registry by status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pfactory.contracts.events import ModelRegistered
from pfactory.registrar.service import register
from pfactory.registrar.telemetry import RegistryMetrics
from pfactory.registry.model import PairKey, VersionStatus
from pfactory.registry.wiring import Registry, RegistrySettings, build_registry
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from tests.utils.statsd import StatsdCapture, capturing_statsd
from tests.workers.registrar.factories import FEATURE_SET, MODEL_NAME, trained_event

PAIR = PairKey(model_name=MODEL_NAME, feature_set=FEATURE_SET)
REGISTERED = catalog.MODELS_REGISTERED.name
VERSIONS = catalog.REGISTRY_VERSIONS.name


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    stores = await build_registry(RegistrySettings(backend="embedded", data_dir=tmp_path / "registry"))
    yield stores
    await stores.close()


@pytest.fixture
def statsd() -> Iterator[StatsdCapture]:
    with capturing_statsd() as capture:
        yield capture


async def _until(statsd: StatsdCapture, condition: Callable[[], bool], what: str) -> None:
    """``StatsdCapture.wait_for`` without blocking the loop the gauge runs on."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.05)
    statsd.wait_for(condition, 0, what)  # fails naming what was seen


def _gauge_seen(statsd: StatsdCapture, **counts: int) -> bool:
    """The latest gauge value of each named status is the given count."""
    latest = {line.tags["status"]: line.value for line in statsd.named(VERSIONS)}
    return all(latest.get(status) == count for status, count in counts.items())


async def test_a_version_is_counted_once_when_committed_and_the_gauge_recounts_after_it(
    registry: Registry, statsd: StatsdCapture
) -> None:
    metrics = Metrics(service="registrar", env="test", port=statsd.port)
    telemetry = RegistryMetrics(registry.index, metrics, interval_s=60, min_gap_s=0)
    gauge = asyncio.create_task(telemetry.run())
    try:
        await _until(statsd, lambda: len(statsd.named(VERSIONS)) == 5, "the first count")
        assert {(line.tags["status"], line.value, line.kind) for line in statsd.named(VERSIONS)} == {
            (status.value, 0.0, "g") for status in VersionStatus
        }

        event = await trained_event(registry.artifacts)
        first = await register(event, registry, on_committed=telemetry.committed)
        again = await register(event, registry, on_committed=telemetry.committed)  # a redelivery
        assert first == again and isinstance(first, ModelRegistered)
        # the next job's version: once its line is in, the redelivery's would be too (one socket)
        other = await register(
            await trained_event(registry.artifacts), registry, on_committed=telemetry.committed
        )
        assert isinstance(other, ModelRegistered) and other.version == 2
        await _until(statsd, lambda: len(statsd.named(REGISTERED)) >= 2, "two registrations")
        lines = statsd.named(REGISTERED)
        assert len(lines) == 2
        assert {(line.tags["model"], line.tags["feature_set"], line.value, line.kind) for line in lines} == {
            (MODEL_NAME, "credit-features@1", 1.0, "c")
        }
        assert (lines[0].tags["service"], lines[0].tags["env"]) == ("registrar", "test")

        # not the 60 s interval: each registration asked for a recount
        await _until(statsd, lambda: _gauge_seen(statsd, candidate=2, live=0), "the gauge at 2 candidates")
    finally:
        gauge.cancel()
        await asyncio.gather(gauge, return_exceptions=True)


async def test_the_gauge_follows_status_changes_made_elsewhere_on_its_interval(
    registry: Registry, statsd: StatsdCapture
) -> None:
    await register(await trained_event(registry.artifacts), registry)  # before the registrar counts
    metrics = Metrics(service="registrar", port=statsd.port)
    telemetry = RegistryMetrics(registry.index, metrics, interval_s=0.2, min_gap_s=0)
    gauge = asyncio.create_task(telemetry.run())
    try:
        await _until(statsd, lambda: _gauge_seen(statsd, candidate=1, approved=0), "the candidate counted")
        # an admin approves it through the gateway: no registration, the next periodic count shows it
        await registry.index.transition(PAIR, 1, VersionStatus.APPROVED, actor="admin")
        await _until(statsd, lambda: _gauge_seen(statsd, candidate=0, approved=1), "the approval counted")
    finally:
        gauge.cancel()
        await asyncio.gather(gauge, return_exceptions=True)
    assert not statsd.named(REGISTERED)  # counting the registry is not registering


def test_intervals_that_would_spin_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s must be above 0"):
        RegistryMetrics(object(), Metrics.disabled(), interval_s=0)  # type: ignore[arg-type]
