"""The scorer as its real process on the real broker, scoring a registered credit model's days.

Covered: a day scored with the live version (predictions file, ScoringCompleted figures, the job's
status and result); a redelivered request republishing the same event ids and a new job replacing the
day; a shifted feature raising DriftDetected naming it; a missing day and an unknown model failing
with advice; health.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaProducer
from pyarrow import fs

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import (
    DriftDetected,
    Envelope,
    JobStatus,
    JobStatusChanged,
    ScoringCompleted,
    ScoringFailed,
    ScoringRequested,
)
from pfactory.scorer.batch import PREDICTIONS_FILE
from tests.libs.features.partitions import PartitionWriter
from tests.workers.scorer.credit_model import MODEL_NAME, PAIR, CreditModel, day_labels, fit_and_register
from tests.workers.support import collect, http_status, publish, running_worker, wait_for
from tests.workers.trainer.credit_data import FEATURE_SET, write_credit_store

pytestmark = pytest.mark.integration

START = dt.date(2024, 1, 1)
DAYS = 3
DRIFTED_DAY = dt.date(2024, 3, 1)


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CreditModel]:
    root = tmp_path_factory.mktemp("credit")
    raw, store = write_credit_store(root, start=START, days=DAYS, applicants_per_day=400)
    return raw, store, fit_and_register(raw, store, root / "registry", START, DAYS)


def _env(store: Path, model: CreditModel) -> dict[str, str]:
    return {
        "PF_REGISTRY_DATA_DIR": str(model.registry_dir),
        "PF_SCORER_STORE_ROOT": str(store),
        "PF_SCORER_BATCH_ROWS": "64",
    }


def _request(ds: dt.date, **fields: object) -> ScoringRequested:
    return ScoringRequested(job_id=str(uuid.uuid4()), **{"model_name": MODEL_NAME, "ds": ds, **fields})  # type: ignore[arg-type]


async def _answers(settings: BusSettings, topic: str, job_id: str, count: int) -> list[Envelope]:
    return await collect(settings, topic, lambda e: e.correlation_id == job_id, count=count, timeout_s=60)


async def _publish_again(settings: BusSettings, envelope: Envelope, key: str | None) -> None:
    """The very same envelope (same event id) once more, as a redelivery sends it."""
    client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await client.start()
    try:
        await client.send_and_wait(
            topics.SCORING_REQUESTED, envelope.to_bytes(), key=key.encode() if key else None
        )
    finally:
        await client.stop()


async def test_a_day_is_scored_and_a_rerun_replaces_it(
    bus_settings: BusSettings, tmp_path: Path, credit: tuple[Path, Path, CreditModel]
) -> None:
    raw, store, model = credit
    ds = START + dt.timedelta(days=1)
    await ensure_topics(bus_settings)
    with running_worker("scorer", bus_settings, tmp_path, extra_env=_env(store, model)) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "scorer /health", worker.log)
        request = _request(ds)  # no version, no alias: the live version
        sent = await publish(bus_settings, request)

        statuses = [
            e.open_as(JobStatusChanged)
            for e in await _answers(bus_settings, topics.JOB_STATUS, request.job_id, 3)
        ]
        assert [s.status for s in statuses] == [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED], (
            worker.log()
        )
        [completed_envelope] = await _answers(bus_settings, topics.SCORING_COMPLETED, request.job_id, 1)
        completed = completed_envelope.open_as(ScoringCompleted)
        assert completed.version == model.record.version and completed.rows == 400
        assert (
            completed.predictions_uri == f"{store.as_uri()}/predictions/model={MODEL_NAME}/version=1/ds={ds}"
        )
        assert "income" in completed.drift and "score" in completed.drift
        assert max(completed.drift.values()) < 0.2  # the same population as training: nothing moved
        assert statuses[-1].result == {
            "predictions_uri": completed.predictions_uri,
            "rows": 400,
            "drift": completed.drift,
            "drift_threshold": 0.2,
            "drifted": [],
            "version": 1,
        }
        folder = store / f"predictions/model={MODEL_NAME}/version=1/ds={ds}"
        written = pq.read_table(folder / PREDICTIONS_FILE)
        assert written.column_names == ["applicant_id", "score", "label", "version", "ds"]
        assert written.num_rows == 400 and written.column("label").null_count == 0
        scores = pc.min_max(written.column("score")).as_py()
        assert 0 <= scores["min"] < scores["max"] <= 1
        labels = dict(day_labels(raw, ds).itertuples(index=False))
        assert all(
            labels[a] == b
            for a, b in zip(
                written.column("applicant_id").to_pylist(), written.column("label").to_pylist(), strict=True
            )
        )

        # the same request redelivered: same event ids, the day rewritten, not duplicated
        await _publish_again(bus_settings, sent, request.partition_key())
        repeated = await _answers(bus_settings, topics.SCORING_COMPLETED, request.job_id, 2)
        assert {e.event_id for e in repeated} == {completed_envelope.event_id}
        # a new job for the same day replaces it
        rerun = _request(ds, version=1, feature_set=PAIR.feature_set)
        await publish(bus_settings, rerun)
        [again] = await _answers(bus_settings, topics.SCORING_COMPLETED, rerun.job_id, 1)
        assert again.open_as(ScoringCompleted).rows == 400
        assert sorted(p.name for p in folder.iterdir()) == [PREDICTIONS_FILE]
        assert pq.read_table(folder / PREDICTIONS_FILE).num_rows == 400
        assert http_status(f"{worker.url}/ready") == 200


async def test_drift_is_raised_and_bad_requests_fail_with_advice(
    bus_settings: BusSettings, tmp_path: Path, credit: tuple[Path, Path, CreditModel]
) -> None:
    _, store, model = credit
    day = pq.read_table(store / f"features/feature_set={FEATURE_SET}/version=1/ds={START}/part-0.parquet")
    shifted = day.set_column(
        day.column_names.index("income"), "income", pc.multiply(day.column("income"), 4.0)
    )
    PartitionWriter(fs.LocalFileSystem(), str(store), feature_set=FEATURE_SET, version="1").good(
        DRIFTED_DAY, shifted
    )
    await ensure_topics(bus_settings)
    with running_worker("scorer", bus_settings, tmp_path, extra_env=_env(store, model)) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 30, "scorer /health", worker.log)
        drifted, missing, unknown = (
            _request(DRIFTED_DAY, alias=None, version=1),
            _request(dt.date(2030, 1, 1)),
            _request(START, model_name="nope"),
        )
        for request in (drifted, missing, unknown):
            await publish(bus_settings, request)

        [alert] = await collect(
            bus_settings,
            topics.DRIFT_DETECTED,
            lambda e: e.correlation_id == drifted.job_id,
            count=1,
            timeout_s=60,
        )
        event = alert.open_as(DriftDetected)
        assert event.ds == DRIFTED_DAY and event.threshold == 0.2 and event.version == 1
        assert "income" in event.feature_psi and event.feature_psi["income"] > 0.2, worker.log()
        assert "age" not in event.feature_psi  # only what moved is named
        [done] = await _answers(bus_settings, topics.SCORING_COMPLETED, drifted.job_id, 1)
        assert done.open_as(ScoringCompleted).drift["income"] == event.feature_psi["income"]
        assert (
            pq.read_table(
                store / f"predictions/model={MODEL_NAME}/version=1/ds={DRIFTED_DAY}/{PREDICTIONS_FILE}"
            )
            .column("label")
            .null_count
            == day.num_rows
        )

        [failed] = await _answers(bus_settings, topics.SCORING_FAILED, missing.job_id, 1)
        reason = failed.open_as(ScoringFailed).reason
        assert "ds=2030-01-01" in reason and "missing" in reason and "pfactory submit" in reason
        statuses = [
            e.open_as(JobStatusChanged)
            for e in await _answers(bus_settings, topics.JOB_STATUS, missing.job_id, 2)
        ]
        assert statuses[-1].status == JobStatus.FAILED and statuses[-1].reason == reason
        [refused] = await _answers(bus_settings, topics.SCORING_FAILED, unknown.job_id, 1)
        assert (
            "no model 'nope' is registered; registered models: credit-default"
            in refused.open_as(ScoringFailed).reason
        )
