"""The materialiser as its real process on the real broker: requests become partitions and events."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import (
    AlertRaised,
    AlertResolved,
    Envelope,
    FeatureSetRef,
    FeaturesMaterialised,
    JobStatus,
    JobStatusChanged,
    MaterialisationFailed,
    MaterialisationRequested,
    Severity,
)
from pfactory.materialiser import answers
from pfactory.materialiser.adapters.partitions import LocalPartitionStore
from pfactory.materialiser.service import DayResult, partition_key
from pfactory.telemetry import catalog
from tests.utils.statsd import capturing_statsd
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


def _day(ds: date, status: str, *, skipped: bool = False) -> DayResult:
    failures = [
        {"origin": "feature 'age': between", "expectation": "between", "unexpected_count": 2},
        {"origin": "feature 'grade': in_set", "expectation": "in_set", "unexpected_count": 1},
    ]
    return DayResult(
        ds=ds,
        status=status,  # type: ignore[arg-type]
        feature_set="tiny-credit",
        version="1",
        validation={"evaluated": 11} if status != "failed" else {},
        failures=failures if status == "quarantined" else [],
        quarantine_uri="file:///q" if status == "quarantined" else None,
        skipped=skipped,
    )


def test_a_failed_validation_raises_and_the_next_fresh_good_day_resolves_once() -> None:
    job = request(DAYS[0], BAD_DAY)
    alerts = answers.ValidationAlerts(job, "https://pf.example.com/")
    days = [
        _day(DAYS[0], "good", skipped=True),  # not validated by this run: says nothing
        _day(DAYS[1], "good"),  # the job's first validated day: resolves whatever is open
        _day(DAYS[2], "good"),  # nothing failed since: no second resolve
        _day(BAD_DAY, "quarantined"),
        _day(date(2024, 3, 5), "failed"),  # computed nothing, validated nothing
        _day(date(2024, 3, 6), "good"),
    ]

    answered = [alerts.after(day) for day in days]

    assert [[label for label, _ in events] for events in answered] == [
        [],
        [f"{DAYS[1]}/alert-resolved"],
        [],
        [f"{BAD_DAY}/alert-raised"],
        [],
        ["2024-03-06/alert-resolved"],
    ]
    raised = answered[3][0][1]
    assert isinstance(raised, AlertRaised)
    assert (raised.dedup_key, raised.check, raised.severity, raised.source) == (
        "validation:tiny-credit@1",
        "feature_validation",
        Severity.ERROR,
        "materialiser",
    )
    assert raised.summary == (
        f"feature set tiny-credit@1 failed validation on {BAD_DAY}: 2 of 11 expectations failed: "
        "feature 'age': between (2 unexpected), feature 'grade': in_set (1 unexpected)"
    )
    assert raised.feature_set_name == "tiny-credit"
    assert raised.links == {
        "job": f"https://pf.example.com/v1/jobs/{job.job_id}",
        "partition": f"https://pf.example.com/v1/feature-sets/tiny-credit/versions/1/partitions/{BAD_DAY}",
    }
    assert raised.details["job_id"] == job.job_id and raised.details["quarantine_uri"] == "file:///q"
    assert raised.details["failed_expectations"] == days[3].failures
    resolved = answered[5][0][1]
    assert isinstance(resolved, AlertResolved) and resolved.dedup_key == raised.dedup_key
    assert resolved.check == "feature_validation" and resolved.source == "materialiser"
    # without a gateway URL the alert still names the job, in its details
    unlinked = answers.ValidationAlerts(job, None).after(days[3])[0][1]
    assert isinstance(unlinked, AlertRaised) and unlinked.links == {}
    assert unlinked.details["job_id"] == job.job_id


async def _publish_again(settings: BusSettings, envelope: Envelope, key: str | None) -> None:
    """The very same envelope (same event id) once more, as a redelivery sends it."""
    client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await client.start()
    try:
        await client.send_and_wait(
            topics.MATERIALISATION_REQUESTED, envelope.to_bytes(), key=key.encode() if key else None
        )
    finally:
        await client.stop()


@pytest.mark.integration
async def test_the_worker_materialises_a_range_and_reports_a_bad_day(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    data, store = write_raw(tmp_path / "data"), tmp_path / "store"
    env = {"PF_MATERIALISER_DATA_ROOT": str(data), "PF_MATERIALISER_STORE_ROOT": str(store)}
    with (
        capturing_statsd() as statsd,
        running_worker(
            "materialiser",
            bus_settings,
            tmp_path,
            extra_env={
                **env,
                "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
                "PF_TELEMETRY_ENV": "test",
                "PF_MATERIALISER_GATEWAY_URL": "http://gateway.test",
            },
        ) as worker,
    ):
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 60, "materialiser /health", worker.log)
        good, bad = request(DAYS[0], DAYS[1]), request(BAD_DAY, BAD_DAY)
        sent = await publish(bus_settings, good)
        sent_bad = await publish(bus_settings, bad)

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
        # the bad day raises one alert; its redelivery raises it again under the same event id
        [raised] = await collect(
            bus_settings, topics.ALERTS, lambda e: e.correlation_id == bad.job_id, count=1, timeout_s=30
        )
        await _publish_again(bus_settings, sent_bad, bad.partition_key())
        raised_again = await collect(
            bus_settings, topics.ALERTS, lambda e: e.correlation_id == bad.job_id, count=2, timeout_s=60
        )
        # the next good day of the feature set resolves it
        after = request(DAYS[2], DAYS[2])
        await publish(bus_settings, after)
        [resolved] = await collect(
            bus_settings, topics.ALERTS, lambda e: e.correlation_id == after.job_id, count=1, timeout_s=60
        )
        [first_resolved] = await collect(
            bus_settings, topics.ALERTS, lambda e: e.correlation_id == good.job_id, count=1, timeout_s=10
        )
        partitions, ours = catalog.PARTITIONS_MATERIALISED.name, {"feature_set": "tiny-credit@1"}
        statsd.wait_for(
            lambda: (
                len(statsd.named(partitions, status="good", **ours)) == 3
                and len(statsd.named(partitions, status="failed", **ours)) == 2
            ),
            10,
            "three good and two failed partitions",
        )

    alert = raised.open_as(AlertRaised)
    assert alert.dedup_key == "validation:tiny-credit@1" and alert.check == "feature_validation"
    assert alert.severity == Severity.ERROR and alert.feature_set_name == "tiny-credit"
    assert f"failed validation on {BAD_DAY}" in alert.summary and "feature 'age': between" in alert.summary
    assert alert.links["job"] == f"http://gateway.test/v1/jobs/{bad.job_id}"
    assert {f["column"] for f in alert.details["failed_expectations"]} == {"age", "grade"}
    assert {e.event_id for e in raised_again} == {raised.event_id}
    assert resolved.open_as(AlertResolved).dedup_key == alert.dedup_key
    assert first_resolved.open_as(AlertResolved).dedup_key == alert.dedup_key  # the good job's first day
    tag = {"feature_set": "tiny-credit@1", "service": "materialiser", "env": "test"}
    assert sum(line.value for line in statsd.named(catalog.ROWS_MATERIALISED.name, **tag)) == 3 + 2 + 4
    assert [line.value for line in statsd.named(catalog.VALIDATION_FAILURES.name, **tag)] == [2, 2]
    assert {line.tags["stage"] for line in statsd.named(catalog.STAGE_DURATION.name, kind="materialise")} == {
        "render",
        "compute",
        "validate",
        "lineage",
        "write",
    }
    handled = statsd.named(
        catalog.MESSAGES_HANDLED.name, topic=topics.MATERIALISATION_REQUESTED, outcome="ok"
    )
    # a new group reads the topic from its start: earlier tests' requests may have been handled too
    assert len(handled) >= 4 and {line.tags["group"] for line in handled} == {worker.group_id}

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
