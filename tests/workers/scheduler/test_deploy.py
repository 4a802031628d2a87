"""Deployments decided from the registry: auto-approval, the next-day rule, go-live and archiving, also
when go-lives of one pair race — on SQLite and on DynamoDB (moto_server)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfactory.contracts.cron import local_midnight, parse_cron
from pfactory.registry.dynamodb import DynamoDBVersionIndex
from pfactory.registry.model import AuditEntry, ModelVersion, VersionStatus
from pfactory.registry.settings import DynamoDBVersionIndexSettings
from pfactory.registry.sqlite import SqliteVersionIndex
from pfactory.registry.wiring import RegistryIndex
from pfactory.scheduler import deploy
from tests.registry.factories import PAIR, make_version

SCORING = {"schedule": "0 6 * * *", "timezone": "America/New_York"}


def _config(auto_approve: bool = False, scoring: dict[str, Any] | None = SCORING) -> dict[str, Any]:
    spec: dict[str, Any] = {"approval": {"auto_approve": auto_approve}}
    if scoring is not None:
        spec["scoring"] = scoring
    return {"kind": "Model", "metadata": {"name": PAIR.model_name}, "spec": spec}


async def _register(registry: RegistryIndex, **overrides: Any) -> ModelVersion:
    key = str(uuid.uuid4())
    allocation = await registry.allocate(PAIR, key)
    fields: dict[str, Any] = {"config": _config()} | overrides
    return await registry.commit(make_version(PAIR, allocation.version, key, **fields))


async def _approve(registry: RegistryIndex, version: ModelVersion) -> ModelVersion:
    return await registry.transition(PAIR, version.version, VersionStatus.APPROVED, actor="risk-officer")


async def _statuses(registry: RegistryIndex) -> dict[int, str]:
    page = await registry.list_versions(PAIR, limit=100)
    return {v.version: v.status.value for v in page.items}


class DeploymentContract:
    """Behaviour on any registry backend; subclasses provide ``registry``."""

    isolated_conditional_writes = True
    """Two concurrent writes conditional on one record's revision: exactly one wins."""

    async def test_a_candidate_is_approved_only_when_its_config_allows_and_every_gate_passed(
        self, registry: RegistryIndex
    ) -> None:
        allowed = await _register(registry, config=_config(auto_approve=True))
        failed = await _register(registry, config=_config(auto_approve=True), gates={"fairness": False})
        manual = await _register(registry, config=_config(auto_approve=False))
        assert (await deploy.approve_if_allowed(registry, allowed)).status is VersionStatus.APPROVED
        assert (await deploy.approve_if_allowed(registry, failed)).status is VersionStatus.CANDIDATE
        assert (await deploy.approve_if_allowed(registry, manual)).status is VersionStatus.CANDIDATE
        audit = (await registry.get(PAIR, allowed.version)).audit[-1]
        assert (audit.actor, audit.to) == ("scheduler", "approved") and "every gate passed" in (
            audit.reason or ""
        )

    async def test_live_from_is_the_day_after_approval_in_the_schedule_zone(
        self, registry: RegistryIndex
    ) -> None:
        version = await _approve(registry, await _register(registry))
        approved = deploy.approved_at(version)
        assert approved is not None
        local = approved.astimezone(deploy.scoring_schedule(version).zone).date()  # type: ignore[union-attr]
        assert deploy.live_from(version) == date.fromordinal(local.toordinal() + 1)
        assert not deploy.due(version, approved)
        assert deploy.due(version, datetime(2100, 1, 1, tzinfo=UTC))

    async def test_going_live_archives_the_version_it_replaces(self, registry: RegistryIndex) -> None:
        first = await _approve(registry, await _register(registry))
        assert (await deploy.go_live(registry, first)).live
        second = await _approve(registry, await _register(registry))
        result = await deploy.go_live(registry, second)
        assert result.live and result.archived == (first.version,)
        assert await _statuses(registry) == {first.version: "archived", second.version: "live"}
        assert (await registry.get_live(PAIR)).version == second.version  # type: ignore[union-attr]

    async def test_racing_go_lives_leave_one_live_version_the_latest_approved(
        self, registry: RegistryIndex
    ) -> None:
        live = await _approve(registry, await _register(registry))
        await deploy.go_live(registry, live)
        rng = random.Random(7)
        for _ in range(3):
            contenders = [await _approve(registry, await _register(registry)) for _ in range(3)]
            order = contenders[:]
            rng.shuffle(order)
            # each go-live twice, all at once: redelivered events and two schedulers do this
            results = await asyncio.gather(*(deploy.go_live(registry, v) for v in order + order))
            statuses = await _statuses(registry)
            winner = contenders[-1].version  # approved last
            assert [v for v, s in statuses.items() if s == "live"] == [winner], statuses
            assert all(s == "archived" for v, s in statuses.items() if v != winner)
            assert any(r.live for r in results if r.version == winner)
            made_live = [r.version for r in results if r.transitioned]
            assert winner in made_live
            if self.isolated_conditional_writes:  # one call makes a version live: "went live" counts once
                assert all(made_live.count(v.version) <= 1 for v in contenders), results

    async def test_an_approved_version_overtaken_before_its_day_is_archived(
        self, registry: RegistryIndex
    ) -> None:
        early = await _approve(registry, await _register(registry))
        late = await _approve(registry, await _register(registry))
        result = await deploy.go_live(registry, late)
        assert result.live and early.version in result.archived
        assert (await deploy.go_live(registry, early)).live is False  # its turn comes: nothing to do
        assert (await _statuses(registry))[late.version] == "live"

    async def test_a_rollback_to_an_older_version_goes_live_over_the_newer_one(
        self, registry: RegistryIndex
    ) -> None:
        old = await _approve(registry, await _register(registry))
        await deploy.go_live(registry, old)
        new = await _approve(registry, await _register(registry))
        await deploy.go_live(registry, new)
        again = await _approve(registry, await registry.get(PAIR, old.version))  # archived -> approved
        result = await deploy.go_live(registry, again)
        assert result.live and result.archived == (new.version,)

    async def test_a_version_without_a_schedule_has_none(self, registry: RegistryIndex) -> None:
        version = await _register(registry, config=_config(scoring=None))
        assert deploy.scoring_schedule(version) is None


class TestDeploymentOnSqlite(DeploymentContract):
    @pytest.fixture
    async def registry(self, tmp_path: Path) -> AsyncIterator[RegistryIndex]:
        async with SqliteVersionIndex(tmp_path / "registry.db") as index:
            yield index


@pytest.mark.integration
class TestDeploymentOnDynamoDB(DeploymentContract):
    # DynamoDB serialises conditional writes to an item; moto_server does not isolate concurrent
    # TransactWriteItems (seen here: two approved -> live transitions of one version both passed their
    # rev condition), so only the convergence, not the single transition, is checked against it.
    isolated_conditional_writes = False

    @pytest.fixture
    async def registry(self, moto: str) -> AsyncIterator[RegistryIndex]:
        settings = DynamoDBVersionIndexSettings(table_name="pf-registry-deploy", endpoint_url=moto)
        async with DynamoDBVersionIndex(settings) as index:
            await index.create_table()
            yield index


@settings(max_examples=200, deadline=None)
@given(
    approved=st.datetimes(
        min_value=datetime(2005, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    zone_name=st.sampled_from(
        ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    ),
    cron=st.sampled_from(["0 6 * * *", "30 2 * * *", "0 0 * * *", "45 23 * * 1-5", "@hourly"]),
)
def test_the_next_day_rule_in_any_zone(approved: datetime, zone_name: str, cron: str) -> None:
    """Live from the local day after approval: not a second earlier, and no firing before that day."""
    zone = ZoneInfo(zone_name)
    entry = AuditEntry(
        at=approved, actor="risk-officer", action="transition", from_="candidate", to="approved"
    )
    version = make_version(
        PAIR,
        1,
        "job",
        status=VersionStatus.APPROVED,
        audit=(entry,),
        config=_config(scoring={"schedule": cron, "timezone": zone_name}),
    )
    starts = deploy.live_from(version)
    assert starts == approved.astimezone(zone).date() + timedelta(days=1)
    midnight = local_midnight(starts, zone)
    assert deploy.due(version, midnight) and not deploy.due(version, midnight - timedelta(seconds=1))
    assert not deploy.due(version, approved)
    first = parse_cron(cron).next_after(midnight - timedelta(microseconds=1), zone)
    assert first.astimezone(zone).date() >= starts
