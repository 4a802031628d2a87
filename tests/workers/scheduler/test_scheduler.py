"""The scheduler as its real process on the real broker, over an embedded registry: a registered version
is approved, scheduled and (its day reached through the clock offset) goes live, archiving the version it
replaces; a version whose event was missed is found by the registry poll."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import DeploymentScheduled, ModelRegistered, VersionArchived
from pfactory.registry.model import ModelVersion, VersionStatus
from pfactory.registry.sqlite import SqliteVersionIndex
from tests.registry.factories import PAIR, make_version
from tests.utils.statsd import capturing_statsd
from tests.workers.support import collect, http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration

CONFIG = {
    "kind": "Model",
    "metadata": {"name": PAIR.model_name, "owner": "risk@example.org"},
    "spec": {"approval": {"auto_approve": True}, "scoring": {"schedule": "0 6 * * *", "timezone": "UTC"}},
}


async def _register(index: SqliteVersionIndex) -> ModelVersion:
    key = str(uuid.uuid4())
    allocation = await index.allocate(PAIR, key)
    return await index.commit(make_version(PAIR, allocation.version, key, config=CONFIG))


async def _until_status(index: SqliteVersionIndex, version: int, status: VersionStatus, log: Any) -> None:
    deadline = time.monotonic() + 45
    while (await index.get(PAIR, version)).status is not status:
        assert time.monotonic() < deadline, f"version {version} never became {status}:\n{log()[-3000:]}"
        await asyncio.sleep(0.2)


async def test_registered_versions_go_live_and_replace_each_other_without_anyone_touching_them(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    data_dir = tmp_path / "registry"
    data_dir.mkdir()
    env = {
        "PF_REGISTRY_DATA_DIR": str(data_dir),
        "PF_SCHEDULER_TICK_S": "0.5",
        "PF_SCHEDULER_POLL_INTERVAL_S": "1",
        "PF_SCHEDULER_CLOCK_OFFSET_S": str(2 * 86400),  # tomorrow has come: the go-live is due at once
    }
    async with SqliteVersionIndex(data_dir / "registry.db") as index:
        with (
            capturing_statsd() as statsd,
            running_worker(
                "scheduler",
                bus_settings,
                tmp_path,
                extra_env={**env, "PF_TELEMETRY_STATSD_PORT": str(statsd.port)},
            ) as worker,
        ):
            wait_for(lambda: http_status(f"{worker.url}/ready") == 200, 30, "scheduler /ready", worker.log)
            first = await _register(index)
            await publish(
                bus_settings,
                ModelRegistered(
                    job_id=first.allocation_key,
                    model_name=PAIR.model_name,
                    version=first.version,
                    artifact_uri=first.artifact.uri,
                    sha256=first.artifact.sha256,
                    status="candidate",
                    feature_set=PAIR.feature_set,
                ),
            )
            await _until_status(index, first.version, VersionStatus.LIVE, worker.log)

            second = await _register(index)  # no event at all: the poll finds it
            await _until_status(index, second.version, VersionStatus.LIVE, worker.log)
            await _until_status(index, first.version, VersionStatus.ARCHIVED, worker.log)

            scheduled = await collect(
                bus_settings,
                topics.DEPLOYMENT_SCHEDULED,
                lambda e: e.producer == "scheduler",
                count=2,
                timeout_s=20,
            )
            versions = {DeploymentScheduled.model_validate(e.payload).version for e in scheduled}
            assert versions == {first.version, second.version}
            [archived] = await collect(
                bus_settings,
                topics.VERSION_ARCHIVED,
                lambda e: e.producer == "scheduler",
                count=1,
                timeout_s=20,
            )
            event = VersionArchived.model_validate(archived.payload)
            assert (event.version, event.replaced_by) == (first.version, second.version)
            audit = (await index.get(PAIR, first.version)).audit[-1]
            assert (audit.actor, audit.to, audit.reason) == (
                "scheduler",
                "archived",
                f"replaced by version {second.version}",
            )
            statsd.wait_for(
                lambda: (
                    len(statsd.named("pf.scheduler.deployments", service="scheduler", action="live")) == 2
                ),
                10,
                f"two go-lives counted: {[line.raw for line in statsd.named('pf.scheduler.deployments')]}",
            )
            archived_lines = statsd.named("pf.scheduler.deployments", action="archived")
            assert [line.tags["model"] for line in archived_lines] == [PAIR.model_name]
            statsd.wait_for(  # the poll may take the version live before its event is handled
                lambda: bool(statsd.named("pf.bus.handled", topic=topics.MODEL_REGISTERED, outcome="ok")),
                20,
                "the registration event handled",
            )
