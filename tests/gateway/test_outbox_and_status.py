"""Outbox relay, start-up re-publication and status following, with in-memory sink and feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged, Progress
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import (
    FEATURE_SET_YAML,
    MODEL_YAML,
    YAML,
    QueueStatusFeed,
    RecordingSink,
    eventually,
    serving,
)


def status(job_id: str, state: JobStatus, *, at: datetime, **fields: object) -> Envelope:
    """A JobStatusChanged envelope as a worker would publish it."""
    envelope = Envelope.wrap(JobStatusChanged(job_id=job_id, status=state, **fields), producer="trainer")  # type: ignore[arg-type]
    return envelope.model_copy(update={"occurred_at": at})


async def test_accepted_jobs_wait_in_the_outbox_while_the_broker_is_down(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    sink = RecordingSink(down=True)
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        first = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        second = (await client.post("/v1/jobs", content=FEATURE_SET_YAML, headers=YAML)).json()["job_id"]
        await eventually(lambda: sink.attempts >= 3, what="the relay to retry")
        assert (await client.get(f"/v1/jobs/{first}")).json()["status"] == "accepted"
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["broker"] == "unreachable" and ready.json()["outbox"]["pending"] == 2
        assert "broker unreachable" in ready.json()["outbox"]["last_error"]

        sink.down = False
        await eventually(lambda: len(sink.published) == 2, what="the outbox to drain")
        assert [envelope.correlation_id for envelope, _, _ in sink.published] == [first, second]  # in order
        ready = (await client.get("/ready")).json()
        assert ready["broker"] == "connected" and ready["outbox"]["pending"] == 0


async def test_status_events_move_jobs_forward_only(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    feed = QueueStatusFeed()
    t0 = datetime.now(UTC)
    async with serving(
        create_app(gateway_settings, sink=RecordingSink(), status_feed=feed), admin_key
    ) as client:
        ok = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        bad = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]

        running = status(
            ok,
            JobStatus.RUNNING,
            at=t0 + timedelta(seconds=2),
            stage="fit",
            progress=Progress(done=3, total=10, unit="trials"),
        )
        await feed.deliver(running)
        job = (await client.get(f"/v1/jobs/{ok}")).json()
        assert (job["status"], job["stage"], job["progress"]["done"]) == ("running", "fit", 3)

        # an older progress report and a late "queued" change nothing; a duplicate is harmless
        await feed.deliver(
            status(
                ok,
                JobStatus.RUNNING,
                at=t0 + timedelta(seconds=1),
                stage="load",
                progress=Progress(done=1, total=10),
            ),
            status(ok, JobStatus.QUEUED, at=t0 + timedelta(seconds=3)),
            running,
        )
        job = (await client.get(f"/v1/jobs/{ok}")).json()
        assert (job["status"], job["stage"], job["progress"]["done"]) == ("running", "fit", 3)

        await feed.deliver(
            status(
                ok,
                JobStatus.SUCCEEDED,
                at=t0 + timedelta(seconds=4),
                stage="done",
                result={"model_version": 1},
            )
        )
        await feed.deliver(
            status(ok, JobStatus.FAILED, at=t0 + timedelta(seconds=5), reason="late"),
            status(ok, JobStatus.RUNNING, at=t0 + timedelta(seconds=6)),
        )
        job = (await client.get(f"/v1/jobs/{ok}")).json()
        assert (job["status"], job["terminal"], job["result"], job["reason"]) == (
            "succeeded",
            True,
            {"model_version": 1},
            None,
        )

        await feed.deliver(
            status(
                bad,
                JobStatus.FAILED,
                at=t0,
                stage="evaluate",
                reason="roc_auc 0.61 is below the threshold 0.7",
            )
        )
        job = (await client.get(f"/v1/jobs/{bad}")).json()
        assert (job["status"], job["reason"]) == ("failed", "roc_auc 0.61 is below the threshold 0.7")
        failed = (await client.get("/v1/jobs", params={"status": "failed"})).json()
        assert [item["job_id"] for item in failed["data"]] == [bad]

        await feed.deliver(status("no-such-job", JobStatus.SUCCEEDED, at=t0))  # ignored, not fatal
        assert (await client.get("/health")).status_code == 200


async def test_restart_republishes_unfinished_jobs_with_the_same_event_id(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    first_sink, feed = RecordingSink(), QueueStatusFeed()
    async with serving(create_app(gateway_settings, sink=first_sink, status_feed=feed), admin_key) as client:
        unfinished = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        finished = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        await eventually(lambda: len(first_sink.published) == 2, what="both requests published")
        await feed.deliver(
            status(finished, JobStatus.SUCCEEDED, at=datetime.now(UTC)),
            status(unfinished, JobStatus.RUNNING, at=datetime.now(UTC)),
        )
    original = first_sink.for_job(unfinished)[0]

    second_sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=second_sink), admin_key) as client:
        await eventually(lambda: bool(second_sink.published), what="the re-publication")
        assert [envelope.correlation_id for envelope, _, _ in second_sink.published] == [unfinished]
        again, topic, key = second_sink.published[0]
        assert again == original and (topic, key) == (first_sink.published[0][1], unfinished)
        assert (await client.get(f"/v1/jobs/{unfinished}")).json()["status"] == "running"
