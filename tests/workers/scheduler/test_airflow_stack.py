"""Issue #7's "done when", end to end with a real Airflow, a real gateway and a real scorer.

A credit model is live (version 1). A person approves version 2. The scheduler writes both DAG files;
Airflow loads them; the next day (the scheduler's clock moved to it) version 2 goes live, version 1 is
archived and its DAG file removed — nobody touching either. Then ``airflow dags test`` runs version 2's
DAG for that day against the running gateway (uvicorn, Tansu) and scorer worker: the DAG's sensor sees
the day's feature partition, its run is scored, and the predictions file is on disk.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import DeploymentScheduled, Event, VersionArchived
from pfactory.gateway.app import create_app
from pfactory.gateway.auth import new_api_key
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.model import VersionStatus
from pfactory.registry.wiring import RegistrySettings, build_registry
from pfactory.scheduler.adapters.dag_writer import LocalDagWriter
from pfactory.scheduler.airflow import AirflowDags
from pfactory.scheduler.service import Scheduler
from pfactory.scorer.batch import PREDICTIONS_FILE
from tests.utils.servers import running_asgi
from tests.workers.scheduler.airflow_env import AirflowEnv
from tests.workers.scorer.credit_model import MODEL_NAME, PAIR, fit_and_register
from tests.workers.support import http_status, running_worker, wait_for
from tests.workers.trainer.credit_data import EXAMPLES, write_credit_store

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LONDON = ZoneInfo("Europe/London")  # the example model's scoring zone: 06:00 London


async def _second_version(registry_dir: Path) -> int:
    """Version 2: version 1's artifact committed again (as a retrain would), then approved by a person."""
    registry = await build_registry(RegistrySettings(data_dir=registry_dir))
    try:
        first = await registry.index.get(PAIR, 1)
        key = str(uuid.uuid4())
        allocation = await registry.index.allocate(PAIR, key)
        second = first.model_copy(
            update={
                "version": allocation.version,
                "allocation_key": key,
                "status": VersionStatus.CANDIDATE,
                "aliases": frozenset(),
                "audit": (),
            }
        )
        await registry.index.commit(second)
        await registry.index.transition(
            PAIR, allocation.version, VersionStatus.APPROVED, actor="risk-officer"
        )
        return allocation.version
    finally:
        await registry.close()


def test_a_new_version_gets_a_dag_goes_live_the_next_day_and_airflow_scores_with_it(
    airflow: AirflowEnv, bus_settings: BusSettings, tmp_path: Path
) -> None:
    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    raw, store = write_credit_store(
        tmp_path, start=tomorrow - timedelta(days=1), days=2, applicants_per_day=150
    )
    registry_dir = tmp_path / "registry"
    fit_and_register(raw, store, registry_dir, tomorrow - timedelta(days=1), 2)  # version 1, live
    second = asyncio.run(_second_version(registry_dir))
    asyncio.run(ensure_topics(bus_settings))

    admin_key = new_api_key()[0]
    settings = GatewaySettings(
        data_dir=tmp_path / "gateway",
        bootstrap_admin_key=admin_key,
        registry=RegistrySettings(data_dir=registry_dir),
        feature_store_root=str(store),
        outbox_poll_interval_s=0.05,
    )
    dags_folder = tmp_path / "dags"
    scorer_env = {"PF_REGISTRY_DATA_DIR": str(registry_dir), "PF_SCORER_STORE_ROOT": str(store)}
    with running_asgi(create_app(settings, bus=bus_settings), what="gateway") as url:
        submitted = httpx.post(
            f"{url}/v1/jobs",
            content=(EXAMPLES / "credit_features.yaml").read_bytes(),
            headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {admin_key}"},
        )
        assert submitted.status_code == 202, submitted.text  # the gateway now knows the feature set

        sent: list[Event] = []

        async def publish(event: Event, event_id: str) -> None:
            sent.append(event)

        async def schedule(now: datetime) -> None:
            registry = await build_registry(RegistrySettings(data_dir=registry_dir))
            try:
                scheduler = Scheduler(
                    registry=registry.index,
                    publish=publish,
                    dags=AirflowDags(LocalDagWriter(dags_folder), api_url=url, retries=0, poke_s=2),
                    clock=lambda: now,
                    runs_schedules=False,
                )
                for number in (1, second):
                    await scheduler.consider_pair(PAIR, number)
                await scheduler.tick()
            finally:
                await registry.close()

        asyncio.run(schedule(datetime.now(LONDON)))  # today: both DAGs written, nothing goes live yet
        files = sorted(path.name for path in dags_folder.glob("*.py"))
        assert len(files) == 2, files
        [scheduled] = [e for e in sent if isinstance(e, DeploymentScheduled)]
        assert (scheduled.version, scheduled.live_from, scheduled.replaces_version) == (second, tomorrow, 1)
        report = airflow.load_dags(dags_folder)
        assert report.import_errors == {} and set(report.dags) == {f.removesuffix(".py") for f in files}

        asyncio.run(schedule(datetime.combine(tomorrow, datetime.min.time(), LONDON) + timedelta(minutes=5)))
        [archived] = [e for e in sent if isinstance(e, VersionArchived)]
        assert (archived.version, archived.replaced_by) == (1, second)
        [left] = list(dags_folder.glob("*.py"))
        assert left.stem == scheduled.dag_id  # version 1's DAG file is gone

        with running_worker("scorer", bus_settings, tmp_path, extra_env=scorer_env) as scorer:
            wait_for(lambda: http_status(f"{scorer.url}/health") == 200, 30, "scorer /health", scorer.log)
            logical = datetime.combine(tomorrow, datetime.min.time(), LONDON).replace(hour=6)
            run = airflow.airflow(
                "dags",
                "test",
                scheduled.dag_id,
                logical.isoformat(),
                timeout=240,
                env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder), "AIRFLOW_VAR_PF_API_KEY": admin_key},
            )
            run.check(f"airflow dags test {scheduled.dag_id}\nscorer log:\n{scorer.log()[-3000:]}")
            predictions = (
                store / "predictions" / f"model={MODEL_NAME}" / f"version={second}" / f"ds={tomorrow}"
            )
            assert (predictions / PREDICTIONS_FILE).exists(), (
                f"no predictions under {predictions}; dags test said:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        runs: dict[str, Any] = httpx.get(
            f"{url}/v1/scoring-runs", headers={"Authorization": f"Bearer {admin_key}"}
        ).json()
        [ours] = [r for r in runs["data"] if r["model"] == MODEL_NAME]
        assert ours["status"] == "succeeded" and ours["ds"] == str(tomorrow), ours
