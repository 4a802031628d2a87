"""Job lifecycle metrics as DogStatsD lines: accepted jobs by kind, and each job's end counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.wiring import Registry
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from tests.gateway.registry_support import PAIR, make_live, seed
from tests.gateway.support import (
    FEATURE_SET_YAML,
    MODEL_YAML,
    YAML,
    QueueStatusFeed,
    RecordingSink,
    serving,
)
from tests.utils.statsd import StatsdCapture, capturing_statsd


def status(job_id: str, state: JobStatus, at: datetime, **fields: object) -> Envelope:
    """A JobStatusChanged envelope as a worker would publish it, stamped ``at``."""
    event = JobStatusChanged(job_id=job_id, status=state, **fields)
    return Envelope.wrap(event, producer="trainer").model_copy(update={"occurred_at": at})


def values(capture: StatsdCapture, name: str, **tags: str) -> list[float]:
    return [line.value for line in capture.named(name, **tags)]


async def test_jobs_are_counted_when_accepted_and_once_when_they_end(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await seed(registry, PAIR, "job-1")
    await make_live(registry, PAIR, 1)
    feed = QueueStatusFeed()
    with capturing_statsd() as capture:
        metrics = Metrics(service="gateway", env="test", port=capture.port)
        app = create_app(gateway_settings, sink=RecordingSink(), status_feed=feed, metrics=metrics)
        async with serving(app, admin_key) as client:
            t0 = datetime.now(UTC)
            ok = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
            bad = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
            assert (await client.post("/v1/jobs", content=FEATURE_SET_YAML, headers=YAML)).status_code == 202
            # a retried materialisation (same Idempotency-Key) is a replay, not a second job
            url, key = (
                "/v1/feature-sets/credit-features/versions/3/materialisations",
                {"Idempotency-Key": "m-1"},
            )
            codes = [
                (await client.post(url, json={"start_ds": "2024-01-02"}, headers=key)).status_code
                for _ in range(2)
            ]
            assert codes == [202, 200]
            run = await client.post(
                "/v1/scoring-runs",
                json={"model": "credit_default", "feature_set": "credit_features@3", "ds": "2024-07-01"},
            )
            assert run.status_code == 202, run.text
            capture.wait_for(
                lambda: len(capture.named(catalog.JOBS_SUBMITTED.name)) == 5, 5, "five accepted jobs"
            )
            assert sorted(line.tags["kind"] for line in capture.named(catalog.JOBS_SUBMITTED.name)) == [
                "materialise",
                "materialise",
                "score",
                "train",
                "train",
            ]
            [line] = capture.named(catalog.JOBS_SUBMITTED.name, kind="score")
            assert (line.kind, line.value) == ("c", 1.0)
            assert (line.tags["service"], line.tags["env"], line.tags["version"]) == (
                "gateway",
                "test",
                "0.1.0",
            )

            await feed.deliver(
                status(ok, JobStatus.RUNNING, t0 + timedelta(seconds=1), stage="fit"),
                status(ok, JobStatus.SUCCEEDED, t0 + timedelta(seconds=4), stage="done"),
                status(bad, JobStatus.FAILED, t0 + timedelta(seconds=2), reason="roc_auc below 0.7"),
                # redelivered final events and a late contradicting one change nothing, count nothing
                status(ok, JobStatus.SUCCEEDED, t0 + timedelta(seconds=4), stage="done"),
                status(ok, JobStatus.FAILED, t0 + timedelta(seconds=5), reason="late"),
                status(bad, JobStatus.FAILED, t0 + timedelta(seconds=2), reason="roc_auc below 0.7"),
                status("no-such-job", JobStatus.SUCCEEDED, t0),
                # the last end: once its line is in, every earlier line is too (one socket, in order)
                status(run.json()["run_id"], JobStatus.SUCCEEDED, t0 + timedelta(seconds=3)),
            )
            capture.wait_for(
                lambda: bool(capture.named(catalog.JOB_DURATION.name, kind="score")), 5, "the run's end"
            )

    assert values(capture, catalog.JOBS_SUCCEEDED.name, kind="train") == [1.0]
    assert values(capture, catalog.JOBS_FAILED.name, kind="train") == [1.0]
    assert values(capture, catalog.JOBS_SUCCEEDED.name, kind="score") == [1.0]
    assert not capture.named(catalog.JOBS_FAILED.name, kind="score")
    [succeeded] = capture.named(catalog.JOB_DURATION.name, kind="train", status="succeeded")
    [failed] = capture.named(catalog.JOB_DURATION.name, kind="train", status="failed")
    assert succeeded.kind == failed.kind == "d"
    # acceptance came just after t0; the end was stamped t0 + 4 s (success) and t0 + 2 s (failure)
    assert 3000 < succeeded.value <= 4000 and 1000 < failed.value <= 2000
    assert len(capture.named(catalog.JOB_DURATION.name)) == 3
