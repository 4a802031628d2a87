"""The gateway on the real Tansu broker: publication, the outbox through an outage, status, restarts."""

from __future__ import annotations

import pytest

from pfactory.bus import BusSettings, EmbeddedBroker, EventPublisher, build_broker, read_envelopes
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged, TrainRequested
from pfactory.gateway.adapters.bus import STATUS_GROUP
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from tests.gateway.support import MODEL_YAML, YAML, eventually, serving
from tests.utils.statsd import capturing_statsd

pytestmark = pytest.mark.integration


async def envelopes_for(
    settings: BusSettings, topic: str, job_id: str, *, timeout: float = 30.0
) -> list[Envelope]:
    """Read ``topic`` from the beginning until envelopes of ``job_id`` show up (no consumer group)."""
    seen = await read_envelopes(
        settings, topic, keep=lambda e: e.correlation_id == job_id, count=1, timeout_s=timeout
    )
    if not seen:
        raise AssertionError(f"no envelope of job {job_id} on {topic} within {timeout:.0f} s")
    return [item.envelope for item in seen]


async def test_a_submitted_job_reaches_its_topic(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings
) -> None:
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
        response = await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        [envelope] = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id)
        assert envelope.open_as(TrainRequested).job_id == job_id
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert envelope.event_id == job["request_event_id"]
        await eventually(lambda: _ready(client, "connected"), what="/ready to report the broker connected")


async def _ready(client: object, broker: str) -> bool:
    answer = await client.get("/ready")  # type: ignore[attr-defined]
    return bool(answer.json()["broker"] == broker)


async def test_a_job_accepted_during_a_broker_outage_is_published_when_it_returns(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings, tansu: EmbeddedBroker
) -> None:
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
        tansu.stop()
        try:
            response = await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)
            assert response.status_code == 202
            job_id = response.json()["job_id"]
            assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "accepted"
            await eventually(
                lambda: _ready(client, "unreachable"),
                timeout=30,
                what="/ready to report the broker unreachable",
            )
            ready = (await client.get("/ready")).json()
            assert ready["status"] == "ready" and ready["outbox"]["pending"] == 1
        finally:
            tansu.start()
        [envelope] = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id, timeout=60)
        assert envelope.open_as(TrainRequested).job_id == job_id
        await eventually(lambda: _ready(client, "connected"), timeout=30, what="the outbox to drain")


async def test_status_events_on_the_bus_finish_jobs_with_their_reason(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings
) -> None:
    worker = build_broker(bus_settings, service="test-worker")
    await worker.connect()
    publisher = EventPublisher(worker, "trainer")
    try:
        with capturing_statsd() as statsd:
            metrics = Metrics(service="gateway", port=statsd.port)
            async with serving(
                create_app(gateway_settings, bus=bus_settings, metrics=metrics), admin_key
            ) as client:
                ok = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
                bad = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
                await publisher.publish(
                    JobStatusChanged(
                        job_id=ok, status=JobStatus.SUCCEEDED, stage="registered", result={"version": 1}
                    )
                )
                await publisher.publish(
                    JobStatusChanged(
                        job_id=bad,
                        status=JobStatus.FAILED,
                        stage="fit",
                        reason="estimator raised ValueError: bad input",
                    )
                )

                async def finished() -> bool:
                    states = [(await client.get(f"/v1/jobs/{job}")).json() for job in (ok, bad)]
                    return all(state["terminal"] for state in states)

                await eventually(finished, timeout=60, what="both jobs to finish")
                done, failed = [(await client.get(f"/v1/jobs/{job}")).json() for job in (ok, bad)]
                assert (done["status"], done["result"]) == ("succeeded", {"version": 1})
                assert (failed["status"], failed["stage"], failed["reason"]) == (
                    "failed",
                    "fit",
                    "estimator raised ValueError: bad input",
                )
                # the status feed's consumer reports its bus metrics; each job's end is counted once
                handled = {"group": STATUS_GROUP, "topic": topics.JOB_STATUS, "outcome": "ok"}
                await eventually(
                    lambda: (
                        len(statsd.named(catalog.MESSAGES_HANDLED.name, **handled)) >= 2
                        and bool(statsd.named(catalog.JOBS_SUCCEEDED.name))
                        and bool(statsd.named(catalog.JOBS_FAILED.name))
                    ),
                    what="both status events handled and counted",
                )
            assert len(statsd.named(catalog.JOBS_SUCCEEDED.name, kind="train")) == 1
            assert len(statsd.named(catalog.JOBS_FAILED.name, kind="train")) == 1
    finally:
        await worker.stop()


async def test_a_restarted_gateway_republishes_unfinished_jobs_to_an_emptied_broker(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings, tansu: EmbeddedBroker
) -> None:
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
        job_id = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        [first] = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id)
    tansu.restart()  # memory storage: every topic and record is gone
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
        [again] = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id, timeout=60)
        assert again.event_id == first.event_id
        assert again == first
        assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "accepted"


async def test_a_running_gateway_republishes_idle_jobs_after_the_broker_lost_them(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings, tansu: EmbeddedBroker
) -> None:
    settings = gateway_settings.model_copy(update={"stale_job_republish_age_s": 1.0})
    async with serving(create_app(settings, bus=bus_settings), admin_key) as client:
        job_id = (await client.post("/v1/jobs", content=MODEL_YAML, headers=YAML)).json()["job_id"]
        [first] = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id)
        tansu.restart()  # the gateway keeps running; the broker forgot everything
        again = await envelopes_for(bus_settings, topics.TRAIN_REQUESTED, job_id, timeout=60)
        assert {e.event_id for e in again} == {first.event_id}
        assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "accepted"
