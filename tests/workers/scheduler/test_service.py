"""The scheduler's decisions over a real (SQLite) registry with a controlled clock: scheduling with the
next-day rule, go-live and archiving at the tick, the embedded cron runner, and the change-log poll."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pfactory.contracts.events import (
    DeploymentScheduled,
    Event,
    FeatureSetRef,
    MaterialisationRequested,
    ScoringRequested,
    VersionArchived,
)
from pfactory.registry.model import ModelVersion, VersionStatus
from pfactory.registry.sqlite import SqliteVersionIndex
from pfactory.scheduler.feature_sets import FeatureSetBook
from pfactory.scheduler.service import Scheduler, poll_changes
from pfactory.telemetry.metrics import Metrics
from tests.registry.factories import PAIR, make_version
from tests.utils.statsd import capturing_statsd

ZONE = ZoneInfo("Europe/Berlin")
CONFIG = {
    "kind": "Model",
    "metadata": {"name": PAIR.model_name, "owner": "risk@example.org"},
    "spec": {
        "approval": {"auto_approve": True},
        "scoring": {"schedule": "0 6 * * *", "timezone": "Europe/Berlin"},
    },
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[SqliteVersionIndex]:
    async with SqliteVersionIndex(tmp_path / "registry.db") as index:
        yield index


async def _register(registry: SqliteVersionIndex, **overrides: Any) -> ModelVersion:
    key = str(uuid.uuid4())
    allocation = await registry.allocate(PAIR, key)
    return await registry.commit(
        make_version(PAIR, allocation.version, key, **({"config": CONFIG} | overrides))
    )


def _scheduler(registry: SqliteVersionIndex, clock: Clock, sent: list[tuple[Event, str]]) -> Scheduler:
    async def publish(event: Event, event_id: str) -> None:
        sent.append((event, event_id))

    return Scheduler(registry=registry, publish=publish, clock=clock)


def _of(sent: list[tuple[Event, str]], kind: type[Event]) -> list[Any]:
    return [event for event, _ in sent if isinstance(event, kind)]


async def test_a_registered_version_is_scheduled_from_the_next_day_goes_live_then_and_archives_the_old(
    registry: SqliteVersionIndex,
) -> None:
    sent: list[tuple[Event, str]] = []
    clock = Clock(datetime.now(UTC))
    scheduler = _scheduler(registry, clock, sent)
    first = await scheduler.consider(await _register(registry))
    assert first.status is VersionStatus.APPROVED  # auto-approved: every gate passed
    [scheduled] = _of(sent, DeploymentScheduled)
    today = clock.now.astimezone(ZONE).date()
    assert scheduled.live_from == today + timedelta(days=1)
    assert (scheduled.cron, scheduled.timezone, scheduled.replaces_version) == (
        "0 6 * * *",
        "Europe/Berlin",
        None,
    )

    await scheduler.tick()  # still today: nothing goes live
    assert (await registry.get(PAIR, first.version)).status is VersionStatus.APPROVED
    clock.now = datetime.combine(scheduled.live_from, datetime.min.time(), ZONE) + timedelta(minutes=1)
    await scheduler.tick()
    assert (await registry.get(PAIR, first.version)).status is VersionStatus.LIVE

    second = await scheduler.consider(await _register(registry))
    rescheduled = _of(sent, DeploymentScheduled)[-1]
    assert rescheduled.version == second.version and rescheduled.replaces_version == first.version
    clock.now += timedelta(days=1)
    await scheduler.tick()
    assert (await registry.get(PAIR, first.version)).status is VersionStatus.ARCHIVED
    assert (await registry.get(PAIR, second.version)).status is VersionStatus.LIVE
    [archived] = _of(sent, VersionArchived)
    assert (archived.version, archived.replaced_by) == (first.version, second.version)


async def test_the_embedded_runner_fires_each_schedule_once_for_the_local_day(
    registry: SqliteVersionIndex,
) -> None:
    sent: list[tuple[Event, str]] = []
    clock = Clock(datetime.now(UTC))
    scheduler = _scheduler(registry, clock, sent)
    version = await scheduler.consider(await _register(registry))
    starts = _of(sent, DeploymentScheduled)[0].live_from
    clock.now = datetime.combine(starts, datetime.min.time(), ZONE) + timedelta(minutes=30)
    await scheduler.tick()  # goes live
    assert (await registry.get(PAIR, version.version)).status is VersionStatus.LIVE
    for _ in range(3 * 24 * 4):  # three days in 15-minute ticks
        clock.now += timedelta(minutes=15)
        await scheduler.tick()
    requests = _of(sent, ScoringRequested)
    assert [r.ds for r in requests] == [starts + timedelta(days=i) for i in range(3)]
    assert all(r.version == version.version and r.model_name == PAIR.model_name for r in requests)
    ids = [event_id for event, event_id in sent if isinstance(event, ScoringRequested)]
    assert len({r.job_id for r in requests}) == len(set(ids)) == 3


async def test_a_version_without_auto_approval_waits_for_a_human(registry: SqliteVersionIndex) -> None:
    sent: list[tuple[Event, str]] = []
    scheduler = _scheduler(registry, Clock(datetime.now(UTC)), sent)
    manual = {**CONFIG, "spec": {**CONFIG["spec"], "approval": {"auto_approve": False}}}
    version = await scheduler.consider(await _register(registry, config=manual))
    assert version.status is VersionStatus.CANDIDATE and sent == []
    await registry.transition(PAIR, version.version, VersionStatus.APPROVED, actor="risk-officer")
    await scheduler.consider_pair(PAIR, version.version)
    assert [e.version for e in _of(sent, DeploymentScheduled)] == [version.version]


async def test_the_poll_reads_only_what_changed_since_its_cursor(registry: SqliteVersionIndex) -> None:
    sent: list[tuple[Event, str]] = []
    scheduler = _scheduler(registry, Clock(datetime.now(UTC)), sent)
    for _ in range(5):
        await _register(registry)
    cursor, seen = await poll_changes(scheduler, 0)
    assert seen >= 5  # the first poll reads everything (and approves: more changes follow)
    cursor, _ = await poll_changes(scheduler, cursor)
    cursor, seen = await poll_changes(scheduler, cursor)
    assert seen == 0
    await _register(registry)
    _, seen = await poll_changes(scheduler, cursor)
    assert seen == 1


async def test_a_scheduled_feature_set_is_materialised_daily_and_remembered_across_restarts(
    registry: SqliteVersionIndex, tmp_path: Path
) -> None:
    sent: list[tuple[Event, str]] = []
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    book = tmp_path / "state" / "feature-sets.json"
    scheduler = _scheduler(registry, clock, sent)
    scheduler.feature_sets = FeatureSetBook(book)
    config = {
        "kind": "FeatureSet",
        "metadata": {"name": "credit_features", "owner": "risk@example.org"},
        "spec": {"version": 3, "schedule": {"cron": "0 2 * * *", "timezone": "Europe/London"}},
    }
    submitted = MaterialisationRequested(
        job_id="job-1", feature_set=FeatureSetRef(name="credit_features", version="3"), config=config
    )
    assert await scheduler.consider_feature_set(submitted) is not None

    restarted = _scheduler(registry, clock, sent)  # a new process: the schedule comes from the file
    restarted.feature_sets = FeatureSetBook(book)
    await restarted.tick()
    for _ in range(2 * 24):
        clock.now += timedelta(hours=1)
        await restarted.tick()
    requests = _of(sent, MaterialisationRequested)
    assert [(r.start_ds, r.end_ds) for r in requests] == [
        (datetime(2026, 12, 4).date(), datetime(2026, 12, 4).date()),
        (datetime(2026, 12, 5).date(), datetime(2026, 12, 5).date()),
    ]
    assert all(r.config == config and r.submitted_by == "scheduler" for r in requests)

    unscheduled = submitted.model_copy(update={"config": {**config, "spec": {"version": 3}}})
    assert await restarted.consider_feature_set(unscheduled) is None
    assert FeatureSetBook(book).items() == []


def test_a_damaged_schedule_file_is_refused_with_advice(tmp_path: Path) -> None:
    book = tmp_path / "feature-sets.json"
    book.write_text("{not json")
    with pytest.raises(ValueError, match="submit the scheduled feature sets again"):
        FeatureSetBook(book)


async def test_deployment_steps_are_counted_on_the_wire(registry: SqliteVersionIndex) -> None:
    sent: list[tuple[Event, str]] = []
    clock = Clock(datetime.now(UTC))
    with capturing_statsd() as agent:
        scheduler = _scheduler(registry, clock, sent)
        scheduler.metrics = Metrics(service="scheduler", port=agent.port)
        await scheduler.consider(await _register(registry))
        clock.now += timedelta(days=2)
        await scheduler.tick()
        await scheduler.consider(await _register(registry))
        clock.now += timedelta(days=2)
        await scheduler.tick()
        agent.wait_for(lambda: len(agent.named("pf.scheduler.deployments")) == 5, 5, "five deployment steps")
    steps = [(line.tags["action"], line.tags["model"]) for line in agent.named("pf.scheduler.deployments")]
    assert steps == [
        ("scheduled", PAIR.model_name),
        ("live", PAIR.model_name),
        ("scheduled", PAIR.model_name),
        ("archived", PAIR.model_name),
        ("live", PAIR.model_name),
    ]
