"""The scorer, as its real process on the real broker: it answers a scoring request honestly."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import JobStatus, JobStatusChanged, ScoringRequested
from pfactory.scorer.service import NOT_IMPLEMENTED_REASON
from tests.workers.support import collect, http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration


async def test_scorer_fails_a_request_honestly_and_answers_health(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    with running_worker("scorer", bus_settings, tmp_path) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "scorer /health", worker.log)
        request = ScoringRequested(
            job_id=str(uuid.uuid4()), model_name="credit_default", version=1, ds=dt.date(2026, 1, 2)
        )
        sent = await publish(bus_settings, request)

        statuses = await collect(
            bus_settings,
            topics.JOB_STATUS,
            lambda e: e.correlation_id == request.job_id,
            count=2,
            timeout_s=45,
        )

        events = [e.open_as(JobStatusChanged) for e in statuses]
        assert [e.status for e in events] == [JobStatus.RUNNING, JobStatus.FAILED]
        assert events[1].reason == NOT_IMPLEMENTED_REASON
        assert "issue #6" in NOT_IMPLEMENTED_REASON
        assert all(e.causation_id == sent.event_id and e.producer == "scorer" for e in statuses)
        assert http_status(f"{worker.url}/ready") == 200
