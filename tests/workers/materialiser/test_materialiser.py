"""The materialiser as its real process on the real broker: requests become partitions and events."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import (
    FeatureSetRef,
    FeaturesMaterialised,
    JobStatus,
    JobStatusChanged,
    MaterialisationFailed,
    MaterialisationRequested,
)
from pfactory.materialiser import answers
from pfactory.materialiser.adapters.partitions import LocalPartitionStore
from pfactory.materialiser.service import DayResult, partition_key
from tests.workers.materialiser.conftest import BAD_DAY, CONFIG, DAYS, feature_set, write_raw
from tests.workers.support import collect, http_status, publish, running_worker, wait_for

REF = FeatureSetRef(name="tiny-credit", version="1")


def request(
    start: date | None, end: date | None, config: dict[str, object] | None = None
) -> MaterialisationRequested:
    return MaterialisationRequested(
        job_id=str(uuid.uuid4()), feature_set=REF, config=config or CONFIG, start_ds=start, end_ds=end
    )


def test_a_request_window_defaults_to_today_and_a_single_bound_means_one_day() -> None:
    today = date(2024, 5, 1)
    assert answers.window(request(None, None), today) == (today, today)
    assert answers.window(request(DAYS[0], None), today) == (DAYS[0], DAYS[0])
    assert answers.window(request(DAYS[0], DAYS[2]), today) == (DAYS[0], DAYS[2])


def test_the_final_status_names_the_failed_days_and_the_first_failure() -> None:
    good = DayResult(ds=DAYS[0], status="good", feature_set="f", version="1", rows=3, uri="file:///x")
    bad = DayResult(
        ds=DAYS[1], status="quarantined", feature_set="f", version="1", reason="validation failed: age"
    )
    _, succeeded = answers.finished(request(DAYS[0], DAYS[0]), [good])
    _, failed = answers.finished(request(DAYS[0], DAYS[1]), [good, bad])
    assert isinstance(succeeded, JobStatusChanged) and succeeded.status == JobStatus.SUCCEEDED
    assert succeeded.result["rows"] == 3
    assert isinstance(failed, JobStatusChanged) and failed.status == JobStatus.FAILED
    assert failed.reason == f"1 of 2 days failed: {DAYS[1]}; first: {DAYS[1]}: validation failed: age"


@pytest.mark.integration
async def test_the_worker_materialises_a_range_and_reports_a_bad_day(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    data, store = write_raw(tmp_path / "data"), tmp_path / "store"
    env = {"PF_MATERIALISER_DATA_ROOT": str(data), "PF_MATERIALISER_STORE_ROOT": str(store)}
    with running_worker("materialiser", bus_settings, tmp_path, extra_env=env) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 60, "materialiser /health", worker.log)
        good, bad = request(DAYS[0], DAYS[1]), request(BAD_DAY, BAD_DAY)
        sent = await publish(bus_settings, good)
        await publish(bus_settings, bad)

        materialised = await collect(
            bus_settings,
            topics.FEATURES_MATERIALISED,
            lambda e: e.correlation_id == good.job_id,
            count=2,
            timeout_s=120,
        )
        statuses = await collect(
            bus_settings, topics.JOB_STATUS, lambda e: e.correlation_id == good.job_id, count=4, timeout_s=30
        )
        failures = await collect(
            bus_settings,
            topics.MATERIALISATION_FAILED,
            lambda e: e.correlation_id == bad.job_id,
            count=1,
            timeout_s=60,
        )
        bad_statuses = await collect(
            bus_settings, topics.JOB_STATUS, lambda e: e.correlation_id == bad.job_id, count=3, timeout_s=30
        )

    days = [e.open_as(FeaturesMaterialised) for e in materialised]
    assert [(d.ds, d.rows) for d in days] == [(DAYS[0], 3), (DAYS[1], 2)]
    assert days[0].columns == ["applicant_id", "event_ts", "age", "income", "score", "grade"]
    assert days[0].validation["success"] is True
    assert {"feature": "income", "sources": ["applicants.annual_income"]} in days[0].lineage
    assert all(e.causation_id == sent.event_id and e.producer == "materialiser" for e in materialised)
    reader = LocalPartitionStore(store)
    assert [reader.read_table(partition_key(feature_set(), d)).num_rows for d in DAYS[:2]] == [3, 2]
    assert days[1].uri == reader.partition_uri(partition_key(feature_set(), DAYS[1]))

    events = [e.open_as(JobStatusChanged) for e in statuses]
    assert [e.status for e in events] == [JobStatus.RUNNING] * 3 + [JobStatus.SUCCEEDED]
    assert [(e.progress.done, e.progress.total, e.progress.unit) for e in events[:3] if e.progress] == [
        (0, 2, "days"),
        (1, 2, "days"),
        (2, 2, "days"),
    ]
    assert events[-1].result["good"] == 2

    failure = failures[0].open_as(MaterialisationFailed)
    assert failure.ds == BAD_DAY and failure.quarantine_uri is not None
    assert "feature 'age': between" in failure.reason
    assert {f["column"] for f in failure.failing_expectations} == {"age", "grade"}
    age = next(f for f in failure.failing_expectations if f["column"] == "age")
    assert sorted(age["unexpected_examples"]) == [7, 150]
    final = bad_statuses[-1].open_as(JobStatusChanged)
    assert final.status == JobStatus.FAILED
    assert final.reason is not None and final.reason.startswith(f"1 of 1 days failed: {BAD_DAY}; first:")
    assert reader.good_marker(partition_key(feature_set(), BAD_DAY)) is None
