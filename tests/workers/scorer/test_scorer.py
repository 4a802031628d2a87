"""The scorer as its real process on the real broker, scoring a registered credit model's days.

Covered: a day scored with the live version (predictions file, ScoringCompleted figures, the job's
status and result); a redelivered request republishing the same event ids and a new job replacing the
day; a shifted feature raising DriftDetected naming it; a missing day and an unknown model failing
with advice; health. Alerts on ``pf.alerts`` (a failed run and drift raise, a good run resolves) and
the metrics the worker sends, captured as DogStatsD lines.
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
    AlertRaised,
    AlertResolved,
    DriftDetected,
    Envelope,
    JobStatus,
    JobStatusChanged,
    ScoringCompleted,
    ScoringFailed,
    ScoringRequested,
    Severity,
)
from pfactory.scorer.batch import PREDICTIONS_FILE
from pfactory.telemetry import catalog
from tests.libs.features.partitions import PartitionWriter
from tests.utils.statsd import StatsdCapture, capturing_statsd
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


GATEWAY = "http://gateway.test"
SCORING_KEY = f"scoring:{MODEL_NAME}@{FEATURE_SET}@1"
DRIFT_KEY = f"drift:{MODEL_NAME}@{FEATURE_SET}@1"


def _env(store: Path, model: CreditModel, statsd: StatsdCapture) -> dict[str, str]:
    return {
        "PF_REGISTRY_DATA_DIR": str(model.registry_dir),
        "PF_SCORER_STORE_ROOT": str(store),
        "PF_SCORER_BATCH_ROWS": "64",
        "PF_SCORER_GATEWAY_URL": GATEWAY,
        "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
    }


async def _alerts(settings: BusSettings, job_id: str, count: int) -> dict[str, Envelope]:
    """The job's alert events by ``<type>:<check>``, each once (a redelivery republishes the same ids)."""
    found = await collect(
        settings, topics.ALERTS, lambda e: e.correlation_id == job_id, count=count, timeout_s=30
    )
    by_id = {e.event_id: e for e in found}
    by_kind = {f"{e.type}:{e.payload['check']}": e for e in by_id.values()}
    assert len(by_kind) == len(by_id), found
    return by_kind


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
    with (
        capturing_statsd() as statsd,
        running_worker("scorer", bus_settings, tmp_path, extra_env=_env(store, model, statsd)) as worker,
    ):
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

        # a good run resolves the model's scoring alert, and its drift alert as nothing moved
        alerts = await _alerts(
            bus_settings, request.job_id, 4
        )  # the first delivery's two, then the redelivery's
        runs = catalog.SCORING_RUNS.name
        statsd.wait_for(lambda: len(statsd.named(runs, status="succeeded")) >= 3, 10, "three scoring runs")
    assert sorted(alerts) == ["AlertResolved:drift", "AlertResolved:scoring_run"]
    scoring = alerts["AlertResolved:scoring_run"].open_as(AlertResolved)
    assert (scoring.dedup_key, scoring.source) == (SCORING_KEY, "scorer")
    assert alerts["AlertResolved:drift"].open_as(AlertResolved).dedup_key == DRIFT_KEY

    # a new consumer group reads the topic from its start, so the worker may also score earlier tests'
    # requests: the lines asserted are ours, among others
    version = {"model": MODEL_NAME, "model_version": "1", "service": "scorer"}
    assert len(statsd.named(runs, **version, status="succeeded")) >= 3
    rows = statsd.named(catalog.SCORING_ROWS.name, **version, feature_set=f"{FEATURE_SET}@1", mode="batch")
    assert 400 in [line.value for line in rows]
    days = statsd.named(catalog.SCORING_LATENCY.name, **version, mode="batch")
    assert len(days) >= 3 and all(line.kind == "d" and line.value > 0 for line in days)
    psi = statsd.named(catalog.DRIFT_PSI.name, **version)
    for feature, value in completed.drift.items():  # every input and the score, as ScoringCompleted says
        assert any(
            line.value == pytest.approx(value, abs=1e-9) for line in psi if line.tags["feature"] == feature
        )
    drifted = statsd.named(catalog.DRIFTED_FEATURES.name, **version)
    assert (0, "g") in [(line.value, line.kind) for line in drifted]
    stages = [line.tags["stage"] for line in statsd.named(catalog.STAGE_DURATION.name, kind="score")]
    assert stages[:4] == ["load", "score", "write", "drift"] and len(stages) == 4 * len(days)
    handled = statsd.named(catalog.MESSAGES_HANDLED.name, topic=topics.SCORING_REQUESTED, outcome="ok")
    assert len(handled) >= 3  # the bus metrics of the scorer's consumer


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
    with (
        capturing_statsd() as statsd,
        running_worker("scorer", bus_settings, tmp_path, extra_env=_env(store, model, statsd)) as worker,
    ):
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

        drift_alerts = await _alerts(bus_settings, drifted.job_id, 2)
        missing_alert = (await _alerts(bus_settings, missing.job_id, 1))["AlertRaised:scoring_run"]
        unknown_alert = (await _alerts(bus_settings, unknown.job_id, 1))["AlertRaised:scoring_run"]
        runs = catalog.SCORING_RUNS.name
        statsd.wait_for(
            lambda: bool(
                statsd.named(runs, model="nope") and statsd.named(runs, model=MODEL_NAME, status="failed")
            ),
            10,
            "the failed runs",
        )

    assert sorted(drift_alerts) == ["AlertRaised:drift", "AlertResolved:scoring_run"]
    drift = drift_alerts["AlertRaised:drift"].open_as(AlertRaised)
    assert (drift.dedup_key, drift.check, drift.severity) == (DRIFT_KEY, "drift", Severity.WARNING)
    assert drift.details["drifted_features"] == event.feature_psi
    assert drift.details["threshold"] == 0.2 and drift.details["job_id"] == drifted.job_id
    assert f"income {event.feature_psi['income']:.3f}" in drift.summary
    assert drift.links["model_card"] == (
        f"{GATEWAY}/v1/models/{MODEL_NAME}/versions/1/card?feature_set={FEATURE_SET}%401"
    )
    assert drift.links["job"] == f"{GATEWAY}/v1/jobs/{drifted.job_id}"
    assert drift_alerts["AlertResolved:scoring_run"].open_as(AlertResolved).dedup_key == SCORING_KEY
    # a failed run raises the model's scoring alert: the key a good run resolves
    missing_alert, unknown_alert = missing_alert.open_as(AlertRaised), unknown_alert.open_as(AlertRaised)
    assert missing_alert.dedup_key == SCORING_KEY
    assert missing_alert.severity == Severity.ERROR and missing_alert.details["reason"] == reason
    assert "ds=2030-01-01" in missing_alert.summary and missing_alert.model_name == MODEL_NAME
    assert unknown_alert.dedup_key == "scoring:nope@unresolved"  # no version, no feature set resolved
    assert unknown_alert.links == {
        "job": f"{GATEWAY}/v1/jobs/{unknown.job_id}",
        "model": f"{GATEWAY}/v1/models/nope",
    }
    seen = {
        (line.tags["model"], line.tags["model_version"], line.tags["status"]) for line in statsd.named(runs)
    }
    assert {
        ("credit-default", "1", "failed"),
        ("credit-default", "1", "succeeded"),
        ("nope", "none", "failed"),
    } <= seen
    moved = statsd.named(catalog.DRIFTED_FEATURES.name, model=MODEL_NAME)
    assert len(event.feature_psi) in [line.value for line in moved]
