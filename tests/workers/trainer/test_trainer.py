"""The trainer, as its real process on the real broker: it answers a training request honestly."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import FeatureSetRef, JobStatus, JobStatusChanged, TrainRequested
from pfactory.trainer.service import NOT_IMPLEMENTED_REASON, answer_train_request
from tests.workers.support import collect, http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration


def _request() -> TrainRequested:
    return TrainRequested(
        job_id=str(uuid.uuid4()),
        model_name="credit_default",
        config={"kind": "Model"},
        feature_set=FeatureSetRef(name="credit_features", version="1"),
    )


def test_answers_are_running_then_failed_with_the_issue_named() -> None:
    request = _request()
    running, failed = answer_train_request(request)
    assert isinstance(running, JobStatusChanged) and running.status is JobStatus.RUNNING
    assert running.stage == "received"
    assert isinstance(failed, JobStatusChanged) and failed.status is JobStatus.FAILED
    assert failed.reason == "training is not implemented in this build yet (issue #5: Trainer)"
    assert {running.job_id, failed.job_id} == {request.job_id}


async def test_trainer_fails_a_train_request_honestly_and_answers_health(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    with running_worker("trainer", bus_settings, tmp_path) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "trainer /health", worker.log)
        request = _request()
        sent = await publish(bus_settings, request)

        statuses = await collect(
            bus_settings,
            topics.JOB_STATUS,
            lambda e: e.correlation_id == request.job_id,
            count=2,
            timeout_s=45,
        )

        events = [e.open_as(JobStatusChanged) for e in statuses]
        assert [(e.status, e.stage) for e in events] == [
            (JobStatus.RUNNING, "received"),
            (JobStatus.FAILED, "received"),
        ]
        assert events[1].reason == NOT_IMPLEMENTED_REASON
        assert all(e.job_id == request.job_id for e in events)
        assert all(e.causation_id == sent.event_id and e.producer == "trainer" for e in statuses)
        assert http_status(f"{worker.url}/ready") == 200
        assert worker.process.poll() is None, worker.log()

        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(15) in (0, -signal.SIGTERM), worker.log()
        assert "FastStream app shut down gracefully" in worker.log()
