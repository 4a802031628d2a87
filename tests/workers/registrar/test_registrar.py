"""The registrar, as its real process on the real broker: it acknowledges a trained model, claims nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import FeatureSetRef, ModelTrained, StagedArtifact
from tests.workers.support import http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration


async def test_registrar_logs_receipt_publishes_no_status_and_answers_health(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    with running_worker("registrar", bus_settings, tmp_path) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "registrar /health", worker.log)
        job_id = str(uuid.uuid4())
        event = ModelTrained(
            job_id=job_id,
            model_name="credit_default",
            config={},
            feature_set=FeatureSetRef(name="credit_features", version="1"),
            artifact=StagedArtifact(uri="file:///tmp/model.skops", sha256="a" * 64, size_bytes=10),
        )
        sent = await publish(bus_settings, event)

        wait_for(
            lambda: f"event={sent.event_id}" in worker.log(), 45, "the registrar's receipt log", worker.log
        )
        line = next(line for line in worker.log().splitlines() if sent.event_id in line)
        assert f"job={job_id}" in line and "nothing was stored" in line
        assert http_status(f"{worker.url}/ready") == 200
