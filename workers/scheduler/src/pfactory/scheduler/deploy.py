"""Deployments: when a registered version becomes deployable, when it goes live, what it archives.

Everything here is decided from the registry, the system of record, so a restarted scheduler (or a
second one) reaches the same decisions:

* **Deployable**: a version that is ``approved``, or a ``candidate`` whose config sets
  ``approval.auto_approve`` and whose every gate passed (metric thresholds, fairness, validation) — the
  scheduler approves it, recording why in the version's audit trail.
* **Live from**: the day after its approval, in the time zone of its scoring schedule (the next-day
  rule). The approval's audit entry carries the instant, so the date is the same whoever recomputes it.
* **Going live** (on or after that day): the version moves to ``live``; then, of the pair's live
  versions, the most recently approved one stays live and every other is archived — also the version
  itself, if a later approval won meanwhile. Whatever order concurrent go-lives of one pair interleave
  in, the one that lists the live versions last sees every other's move and archives all but the winner,
  so one live version remains. Approved versions that never went live and were overtaken are archived.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pfactory.registry.errors import IllegalTransitionError, VersionNotFoundError
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus
from pfactory.registry.wiring import RegistryIndex as Registry

log = logging.getLogger("pfactory.scheduler")

ACTOR = "scheduler"
APPROVED = VersionStatus.APPROVED.value


@dataclass(frozen=True)
class Schedule:
    """A version's daily scoring schedule, from its model config."""

    cron: str
    timezone: str
    psi_threshold: float | None = None

    @property
    def zone(self) -> ZoneInfo:
        """The zone the cron is read in."""
        return ZoneInfo(self.timezone)


def scoring_schedule(version: ModelVersion) -> Schedule | None:
    """The version's scoring schedule, or None when it is scored on demand only."""
    scoring = _mapping(_mapping(version.config.get("spec")).get("scoring"))
    cron = scoring.get("schedule")
    if not isinstance(cron, str):
        return None
    timezone = scoring.get("timezone")
    return Schedule(cron=cron, timezone=timezone if isinstance(timezone, str) else "UTC")


def auto_approves(version: ModelVersion) -> bool:
    """Whether the version's config lets it deploy without a human (its gates decide)."""
    approval = _mapping(_mapping(version.config.get("spec")).get("approval"))
    return approval.get("auto_approve") is True


def approved_at(version: ModelVersion) -> datetime | None:
    """When the version last became approved (its latest audit entry moving it there)."""
    for entry in reversed(version.audit):
        if entry.to == APPROVED and entry.action in ("transition", "override", "registered"):
            return entry.at
    return None


def live_from(version: ModelVersion) -> date | None:
    """The day the version goes live: the day after its approval, in its schedule's zone (UTC without)."""
    at = approved_at(version)
    if at is None:
        return None
    schedule = scoring_schedule(version)
    zone = schedule.zone if schedule else ZoneInfo("UTC")
    return at.astimezone(zone).date() + timedelta(days=1)


def local_today(version: ModelVersion, now: datetime) -> date:
    """Today in the version's schedule zone."""
    schedule = scoring_schedule(version)
    return now.astimezone(schedule.zone if schedule else ZoneInfo("UTC")).date()


async def approve_if_allowed(registry: Registry, version: ModelVersion) -> ModelVersion:
    """Approve a candidate whose config auto-approves and whose gates all passed; else return it as is."""
    if version.status is not VersionStatus.CANDIDATE or not auto_approves(version) or version.failed_gates:
        return version
    try:
        return await registry.transition(
            version.pair,
            version.version,
            VersionStatus.APPROVED,
            actor=ACTOR,
            reason="auto-approved: the config allows it and every gate passed",
        )
    except IllegalTransitionError:  # someone else moved it meanwhile: take the registry's word
        return await registry.get(version.pair, version.version)


@dataclass(frozen=True)
class GoLive:
    """What one go-live did."""

    pair: PairKey
    version: int
    live: bool
    """Whether the version is live afterwards (False: a later approval won)."""
    archived: tuple[int, ...]
    """Versions this call archived (the one it replaced, overtaken approvals, or itself)."""
    transitioned: bool = False
    """Whether this call made it live (False: another call had, e.g. a racing event and tick)."""


async def go_live(registry: Registry, version: ModelVersion) -> GoLive:
    """Make an approved version live and archive what it replaces (see the module docstring)."""
    pair = version.pair
    transitioned = True
    try:
        await registry.transition(
            pair, version.version, VersionStatus.LIVE, actor=ACTOR, reason=f"live from {live_from(version)}"
        )
    except IllegalTransitionError as refused:
        transitioned = False
        current = await registry.get(pair, version.version)
        if current.status is not VersionStatus.LIVE:
            log.error("%s cannot go live: %s", version.label, refused)
            return GoLive(pair, version.version, live=False, archived=())
    live = await _all(registry, pair, VersionStatus.LIVE)
    winner = max(live, key=_approval_order)
    archived: list[int] = []
    for other in live:
        if other.version != winner.version and await _archive(registry, other, winner.version):
            archived.append(other.version)
    for waiting in await _all(registry, pair, VersionStatus.APPROVED):  # overtaken before going live
        if _approval_order(waiting) < _approval_order(winner) and await _archive(
            registry, waiting, winner.version
        ):
            archived.append(waiting.version)
    return GoLive(
        pair,
        version.version,
        live=winner.version == version.version,
        archived=tuple(archived),
        transitioned=transitioned,
    )


def due(version: ModelVersion, now: datetime) -> bool:
    """Whether an approved version's day to go live has come."""
    starts = live_from(version)
    return (
        version.status is VersionStatus.APPROVED
        and starts is not None
        and local_today(version, now) >= starts
    )


def _approval_order(version: ModelVersion) -> tuple[datetime, int]:
    at = approved_at(version) or version.created_at
    return at, version.version


async def _archive(registry: Registry, version: ModelVersion, replaced_by: int) -> bool:
    try:
        await registry.transition(
            version.pair,
            version.version,
            VersionStatus.ARCHIVED,
            actor=ACTOR,
            reason=f"replaced by version {replaced_by}",
        )
    except (IllegalTransitionError, VersionNotFoundError):  # archived by a concurrent go-live already
        return False
    return True


async def _all(registry: Registry, pair: PairKey, status: VersionStatus) -> Sequence[ModelVersion]:
    found: list[ModelVersion] = []
    cursor: str | None = None
    while True:
        page = await registry.list_versions(pair, status=status, limit=100, cursor=cursor)
        found.extend(page.items)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
