"""The scheduler's domain: from a changed version to its deployment, and the embedded cron runner.

A version is looked at whenever it changes (``ModelRegistered``, ``ModelVersionChanged``) and by the
poll of the registry's change log (the safety net for missed events, reading only what changed since
the last poll). :meth:`Scheduler.consider` then approves it when its config allows (see
:mod:`pfactory.scheduler.deploy`), writes its Airflow DAG, live from the next day, and publishes
``DeploymentScheduled``. :meth:`Scheduler.tick` runs every few seconds: approved versions whose day has
come go live (archiving what they replace, whose DAG files are removed), and — without Airflow — the
live versions' cron schedules fire here, publishing a ``ScoringRequested`` per firing.

Every publication has a deterministic event id, and every scoring request a deterministic job id
(model, version, day), so a repeated look at the same version, or a restarted scheduler, asks for
nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from pfactory.contracts.cron import CronError, parse_cron
from pfactory.contracts.events import (
    DeploymentScheduled,
    Event,
    FeatureSetRef,
    MaterialisationRequested,
    ScoringRequested,
    VersionArchived,
)
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus
from pfactory.registry.wiring import RegistryIndex as Registry
from pfactory.scheduler import deploy
from pfactory.scheduler.feature_sets import FeatureSetBook, FeatureSetSchedule, schedule_of
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.scheduler")

SERVICE = "scheduler"

Publish = Callable[[Event, str], Awaitable[None]]
"""Publishes an event under a deterministic event id."""


class DagTarget(Protocol):
    """Where the scheduler keeps one Airflow DAG file per deployed version (absent without Airflow)."""

    async def deploy(self, version: ModelVersion, starts: date) -> str:
        """Write (or rewrite, unchanged) the version's scoring DAG; return its dag id."""
        ...

    async def retire(self, version: ModelVersion) -> bool:
        """Remove the version's DAG file; False when there was none."""
        ...

    def dag_id(self, version: ModelVersion) -> str:
        """The version's DAG id."""
        ...

    async def deploy_feature_set(self, schedule: FeatureSetSchedule, starts: date) -> str:
        """Write (or rewrite) a scheduled feature set's materialisation DAG; return its dag id."""
        ...

    async def retire_feature_set(self, name: str, version: str) -> bool:
        """Remove a feature set's materialisation DAG; False when there was none."""
        ...


def event_id(*parts: object) -> str:
    """A deterministic event id from what the event is about."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "pf:scheduler/" + "/".join(str(p) for p in parts)))


def scoring_job_id(version: ModelVersion, ds: object) -> str:
    """The scoring run of one version for one day (the same every time it is asked for)."""
    return f"sched-{version.model_name}-v{version.version}-{ds}"[:128]


@dataclass
class Scheduler:
    """Deployment decisions over a registry; DAG files when Airflow is configured, else the cron runner."""

    registry: Registry
    publish: Publish
    dags: DagTarget | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    runs_schedules: bool = True
    """Fire live versions' schedules here (the embedded default); False when Airflow runs the DAGs."""
    feature_sets: FeatureSetBook = field(default_factory=lambda: FeatureSetBook(None))
    last_tick: datetime | None = None
    metrics: Metrics = field(default_factory=Metrics.disabled)

    async def consider_feature_set(self, request: MaterialisationRequested) -> FeatureSetSchedule | None:
        """Remember (and with Airflow, write the DAG of) a submitted feature set's schedule, or forget it."""
        ref = request.feature_set
        schedule = schedule_of(ref.name, ref.version, request.config)
        if schedule is None:
            if self.feature_sets.forget(ref.name, ref.version) is not None:
                log.info("feature set %s has no schedule any more", ref)
                if self.dags is not None:
                    await self.dags.retire_feature_set(ref.name, ref.version)
            return None
        if self.feature_sets.put(schedule) or self.dags is not None:
            if self.dags is not None:
                today = self.clock().astimezone(ZoneInfo(schedule.timezone)).date()
                await self.dags.deploy_feature_set(schedule, today)
            log.info("feature set %s materialised on '%s' (%s)", ref, schedule.cron, schedule.timezone)
        return schedule

    async def consider(self, version: ModelVersion) -> ModelVersion:
        """Approve (if allowed), schedule and, when due, take live one changed version."""
        version = await deploy.approve_if_allowed(self.registry, version)
        if version.status is VersionStatus.APPROVED:
            await self._schedule(version)
            if deploy.due(version, self.clock()):
                await self._go_live(version)
        elif version.status is VersionStatus.LIVE and self.dags is not None:
            await self._keep_dag(version)  # e.g. live before Airflow was configured: its DAG appears
        elif version.status is VersionStatus.ARCHIVED and self.dags is not None:
            await self.dags.retire(version)
        return version

    async def consider_pair(self, pair: PairKey, version: int) -> ModelVersion | None:
        """:meth:`consider` the registry's current record of a version (None if it is unknown)."""
        try:
            record = await self.registry.get(pair, version)
        except VersionNotFoundError:
            log.warning("%s/version=%s is not in the registry; nothing to schedule", pair, version)
            return None
        return await self.consider(record)

    async def tick(self) -> int:
        """Take due versions live and (embedded) fire the live schedules; returns scoring runs requested."""
        now = self.clock()
        since = self.last_tick or now - timedelta(seconds=1)
        for version in await _every(self.registry, VersionStatus.APPROVED):
            if deploy.due(version, now):
                await self._go_live(version)
        requested = 0
        if self.runs_schedules:
            for feature_set in self.feature_sets.items():
                requested += await self._materialise(feature_set, since, now)
            for version in await _every(self.registry, VersionStatus.LIVE):
                requested += await self._fire(version, since, now)
        self.last_tick = now
        return requested

    async def _schedule(self, version: ModelVersion) -> None:
        schedule = deploy.scoring_schedule(version)
        starts = deploy.live_from(version)
        if schedule is None or starts is None:
            log.info(
                "%s is approved; it has no scoring schedule, so it is scored on demand only", version.label
            )
            return
        dag_id = f"embedded:{version.label}"
        if self.dags is not None:
            dag_id = await self.dags.deploy(version, starts)
        replaces = await self.registry.get_live(version.pair)
        event = DeploymentScheduled(
            model_name=version.model_name,
            feature_set=version.feature_set,
            version=version.version,
            dag_id=dag_id,
            cron=schedule.cron,
            timezone=schedule.timezone,
            live_from=starts,
            replaces_version=replaces.version if replaces and replaces.version != version.version else None,
        )
        await self.publish(event, event_id("scheduled", version.label, starts))
        self._count(version, "scheduled")
        log.info(
            "%s scheduled: live from %s (%s %s), dag %s",
            version.label,
            starts,
            schedule.cron,
            schedule.timezone,
            dag_id,
        )

    async def _keep_dag(self, version: ModelVersion) -> None:
        assert self.dags is not None
        if deploy.scoring_schedule(version) is None:
            return
        starts = deploy.live_from(version) or deploy.local_today(version, self.clock())
        await self.dags.deploy(version, starts)

    async def _go_live(self, version: ModelVersion) -> None:
        result = await deploy.go_live(self.registry, version)
        for number in result.archived:
            archived = await self.registry.get(version.pair, number)
            if self.dags is not None:
                await self.dags.retire(archived)
            winner = await self.registry.get_live(version.pair)
            event = VersionArchived(
                model_name=archived.model_name,
                feature_set=archived.feature_set,
                version=number,
                replaced_by=winner.version if winner else None,
            )
            await self.publish(event, event_id("archived", archived.label, len(archived.audit)))
            self._count(archived, "archived")
            log.info("%s archived; replaced by version %s", archived.label, event.replaced_by)
        if result.live and result.transitioned:
            log.info("%s is live", version.label)
            self._count(version, "live")

    def _count(self, version: ModelVersion, action: str) -> None:
        self.metrics.emit(
            catalog.DEPLOYMENTS,
            model=version.model_name,
            feature_set=str(version.feature_set),
            model_version=version.version,
            action=action,
        )

    async def _fire(self, version: ModelVersion, since: datetime, now: datetime) -> int:
        schedule = deploy.scoring_schedule(version)
        if schedule is None:
            return 0
        try:
            firings = parse_cron(schedule.cron).firings(since, now, schedule.zone)
        except CronError as error:  # validated at submission; a hand-edited record can still be wrong
            log.error("%s: its scoring schedule cannot run: %s", version.label, error)
            return 0
        for fired in firings:
            ds = fired.astimezone(schedule.zone).date()
            job_id = scoring_job_id(version, ds)
            request = ScoringRequested(
                job_id=job_id,
                model_name=version.model_name,
                feature_set=version.feature_set,
                version=version.version,
                ds=ds,
            )
            await self.publish(request, event_id("score", job_id))
            log.info("%s: scoring %s requested (%s %s)", version.label, ds, schedule.cron, schedule.timezone)
        return len(firings)

    async def _materialise(self, feature_set: FeatureSetSchedule, since: datetime, now: datetime) -> int:
        zone = ZoneInfo(feature_set.timezone)
        try:
            firings = parse_cron(feature_set.cron).firings(since, now, zone)
        except CronError as error:
            log.error("feature set %s: its schedule cannot run: %s", feature_set.key, error)
            return 0
        for fired in firings:
            ds = fired.astimezone(zone).date()
            job_id = f"sched-{feature_set.name}-{feature_set.version}-{ds}"[:128]
            request = MaterialisationRequested(
                job_id=job_id,
                feature_set=FeatureSetRef(name=feature_set.name, version=feature_set.version),
                config=feature_set.config,
                start_ds=ds,
                end_ds=ds,
                submitted_by=SERVICE,
            )
            await self.publish(request, event_id("materialise", job_id))
            log.info("feature set %s: materialisation of %s requested", feature_set.key, ds)
        return len(firings)


async def _every(registry: Registry, status: VersionStatus) -> list[ModelVersion]:
    found: list[ModelVersion] = []
    cursor: str | None = None
    while True:
        page = await registry.query(status=status, limit=500, cursor=cursor)
        found.extend(page.items)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def poll_changes(scheduler: Scheduler, cursor: int, *, batch: int = 500) -> tuple[int, int]:
    """Consider every version changed after ``cursor``; returns (the new cursor, versions considered)."""
    seen = 0
    while True:
        changes = await scheduler.registry.changes_since(cursor, limit=batch)
        for version in _latest(changes.items):
            await scheduler.consider(version)
        seen += len(changes.items)
        if changes.cursor == cursor or len(changes.items) < batch:
            return changes.cursor, seen
        cursor = changes.cursor


def _latest(versions: Iterable[ModelVersion]) -> list[ModelVersion]:
    return list({(v.pair, v.version): v for v in versions}.values())
