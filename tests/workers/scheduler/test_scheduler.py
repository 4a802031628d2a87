"""The scheduler, as its real process on the real broker: it acknowledges a registered version."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import FeatureSetRef, ModelRegistered
from tests.workers.support import http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration


async def test_scheduler_logs_receipt_and_answers_health(bus_settings: BusSettings, tmp_path: Path) -> None:
    await ensure_topics(bus_settings)
    with running_worker("scheduler", bus_settings, tmp_path) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "scheduler /health", worker.log)
        job_id = str(uuid.uuid4())
        event = ModelRegistered(
            job_id=job_id,
            model_name="credit_default",
            version=3,
            artifact_uri="file:///tmp/m.skops",
            sha256="b" * 64,
            status="staged",
            feature_set=FeatureSetRef(name="credit_features", version="1"),
        )
        sent = await publish(bus_settings, event)

        wait_for(
            lambda: f"event={sent.event_id}" in worker.log(), 45, "the scheduler's receipt log", worker.log
        )
        line = next(line for line in worker.log().splitlines() if sent.event_id in line)
        assert "version=3" in line and "no DAG was written" in line
        assert http_status(f"{worker.url}/ready") == 200
