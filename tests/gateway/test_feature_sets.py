"""The feature-set catalog: registration at submission (immutable versions), days and lineage from
materialisation events, partition reports read from a store folder, re-materialisation, and the
source-column lineage joined with the registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pfactory.contracts import topics
from pfactory.contracts.events import (
    Envelope,
    FeatureSetRef,
    FeaturesMaterialised,
    MaterialisationFailed,
    MaterialisationRequested,
)
from pfactory.gateway.adapters.sqlite import SqliteGatewayStore
from pfactory.gateway.app import create_app
from pfactory.gateway.feature_catalog import apply_feature_envelope
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.model import PairKey
from pfactory.registry.wiring import Registry
from tests.gateway.registry_support import PAIR, make_live, seed
from tests.gateway.support import YAML, QueueStatusFeed, RecordingSink, eventually, serving

FS_YAML = """\
apiVersion: pfactory.io/v1
kind: FeatureSet
metadata:
  name: credit_features
  owner: risk-ds@bank.example
spec:
  entity: applicant_id
  timestamp: application_ts
  version: 3
  sources:
    applicants:
      format: parquet
      path: data/applicants/
  models:
    - name: features
      sql: "select applicant_id, application_ts, annual_income / 12 as monthly_income, age from {{ source('applicants') }}"
  features:
    - name: monthly_income
      dtype: float
      source_columns: [applicants.annual_income]
    - name: age
      dtype: int
"""
REF = FeatureSetRef(name="credit_features", version="3")
VERSION_URL = "/v1/feature-sets/credit_features/versions/3"
T0 = datetime(2024, 1, 10, tzinfo=UTC)


def materialised(ds: date, *, at: datetime, lineage: dict[str, list[str]], rows: int = 100) -> Envelope:
    """A FeaturesMaterialised envelope shaped like the materialiser's."""
    event = FeaturesMaterialised(
        job_id="job-m",
        feature_set=REF,
        ds=ds,
        uri=f"file:///store/features/feature_set=credit_features/version=3/ds={ds}",
        rows=rows,
        columns=["applicant_id", "application_ts", "monthly_income", "age"],
        validation={"success": True, "evaluated": 5, "passed": 5, "failed": 0, "failures": []},
        lineage=[{"feature": name, "sources": sources} for name, sources in lineage.items()],
    )
    envelope = Envelope.wrap(event, producer="materialiser", correlation_id="job-m")
    return envelope.model_copy(update={"occurred_at": at})


def failed(ds: date, *, at: datetime) -> Envelope:
    """A day-level MaterialisationFailed envelope (the partition was quarantined)."""
    event = MaterialisationFailed(
        job_id="job-m",
        feature_set=REF,
        ds=ds,
        reason="1 of 5 expectations failed: age between 18 and 120",
        failing_expectations=[{"expectation": "between", "column": "age", "unexpected_examples": [7]}],
    )
    envelope = Envelope.wrap(event, producer="materialiser", correlation_id="job-m")
    return envelope.model_copy(update={"occurred_at": at})


DERIVED = {
    "monthly_income": ["applicants.annual_income"],
    "age": ["applicants.age"],
    "applicant_id": ["applicants.applicant_id"],
}


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def feed() -> QueueStatusFeed:
    return QueueStatusFeed()


@pytest.fixture
async def client(
    gateway_settings: GatewaySettings, admin_key: str, sink: RecordingSink, feed: QueueStatusFeed
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(gateway_settings, sink=sink, feature_feed=feed), admin_key) as http:
        yield http


async def submit(client: httpx.AsyncClient, text: str = FS_YAML, **params: str) -> httpx.Response:
    return await client.post("/v1/jobs", content=text, headers=YAML, params=params)


async def test_a_submitted_feature_set_is_catalogued_and_its_version_is_immutable(
    client: httpx.AsyncClient,
) -> None:
    first = await submit(client)
    assert first.status_code == 202, first.text
    listing = (await client.get("/v1/feature-sets")).json()
    assert [(f["name"], f["versions"], f["latest_version"]) for f in listing["data"]] == [
        ("credit_features", ["3"], "3")
    ]
    detail = (await client.get(VERSION_URL)).json()
    assert detail["job_id"] == first.json()["job_id"]
    assert detail["config"]["spec"]["version"] == 3 and detail["config"]["metadata"]["owner"]
    assert [(f["name"], f["source_columns"]) for f in detail["features"]] == [
        ("monthly_income", ["applicants.annual_income"]),
        ("age", []),
    ]
    assert detail["partitions"]["good_days"] == 0 and len(detail["config_hash"]) == 64

    # the same config again, or with only metadata changed, is the same version
    assert (await submit(client)).status_code == 202
    renamed_owner = FS_YAML.replace("risk-ds@bank.example", "other@bank.example")
    assert (await submit(client, renamed_owner)).status_code == 202
    assert (await client.get(VERSION_URL)).json()["config"]["metadata"]["owner"] == "risk-ds@bank.example"

    # a different spec under the same version is refused before any job exists
    jobs_before = (await client.get("/v1/jobs")).json()["count"]
    changed = await submit(client, FS_YAML.replace("dtype: int", "dtype: long"))
    assert changed.status_code == 409
    body = changed.json()
    assert body["code"] == "feature_set_version_conflict"
    assert body["differing_spec_keys"] == ["features"] and "bump spec.version" in body["detail"]
    assert (await client.get("/v1/jobs")).json()["count"] == jobs_before

    # a new version is fine
    assert (await submit(client, FS_YAML.replace("version: 3", "version: 4"))).status_code == 202
    versions = (await client.get("/v1/feature-sets/credit_features")).json()
    assert [v["version"] for v in versions["data"]] == ["3", "4"]


async def test_materialisation_events_fill_days_and_lineage(
    client: httpx.AsyncClient, feed: QueueStatusFeed
) -> None:
    await submit(client)
    declared = (await client.get(f"{VERSION_URL}/lineage")).json()
    assert declared["data"] == [
        {"feature": "monthly_income", "source_columns": ["applicants.annual_income"], "origin": "declared"}
    ]

    good = materialised(date(2024, 1, 1), at=T0, lineage=DERIVED)
    await feed.deliver(
        good,
        good,  # a redelivery changes nothing
        materialised(date(2024, 1, 3), at=T0, lineage=DERIVED),
        failed(date(2024, 1, 2), at=T0),
        # an older report of day 3 loses to the newer one
        failed(date(2024, 1, 3), at=T0 - timedelta(hours=1)),
        # a failure without a day (the config was rejected) records no day
        Envelope.wrap(
            MaterialisationFailed(job_id="job-x", feature_set=REF, reason="bad"), producer="materialiser"
        ),
    )
    days = (
        await client.get(f"{VERSION_URL}/partitions", params={"from": "2023-12-31", "to": "2024-01-04"})
    ).json()
    assert [(d["ds"], d["status"]) for d in days["data"]] == [
        ("2023-12-31", "missing"),
        ("2024-01-01", "good"),
        ("2024-01-02", "failed"),
        ("2024-01-03", "good"),
        ("2024-01-04", "missing"),
    ]
    assert (days["good"], days["failed"], days["missing"]) == (2, 1, 2)
    assert days["data"][1]["rows"] == 100 and days["data"][1]["validation"]["success"] is True
    assert "age between 18 and 120" in days["data"][2]["reason"]
    unbounded = (await client.get(f"{VERSION_URL}/partitions")).json()
    assert (unbounded["start_ds"], unbounded["end_ds"], unbounded["count"]) == ("2024-01-01", "2024-01-03", 3)
    bad_range = await client.get(
        f"{VERSION_URL}/partitions", params={"from": "2024-01-05", "to": "2024-01-01"}
    )
    assert bad_range.status_code == 422

    summary = (await client.get(VERSION_URL)).json()["partitions"]
    assert (summary["good_days"], summary["failed_days"], summary["last_ds"]) == (2, 1, "2024-01-03")

    lineage = (await client.get(f"{VERSION_URL}/lineage")).json()
    assert {item["feature"]: (item["origin"], item["source_columns"]) for item in lineage["data"]} == {
        name: ("derived", columns) for name, columns in DERIVED.items()
    }


async def test_a_version_known_only_from_events_is_catalogued_without_config(
    client: httpx.AsyncClient, feed: QueueStatusFeed
) -> None:
    await feed.deliver(materialised(date(2024, 1, 1), at=T0, lineage=DERIVED))
    detail = (await client.get(VERSION_URL)).json()
    assert detail["config"] is None and detail["partitions"]["good_days"] == 1
    again = await client.post(f"{VERSION_URL}/materialisations", json={"start_ds": "2024-01-02"})
    assert again.status_code == 409 and again.json()["code"] == "feature_set_config_unknown"
    # submitting the config then registers it on the existing version
    assert (await submit(client)).status_code == 202
    assert (await client.get(VERSION_URL)).json()["config"]["spec"]["version"] == 3


async def test_the_handler_is_idempotent_on_the_store(tmp_path: Path) -> None:
    store = SqliteGatewayStore(tmp_path / "g.db")
    try:
        envelope = materialised(date(2024, 1, 1), at=T0, lineage=DERIVED)
        assert await apply_feature_envelope(store, envelope) is True
        assert await apply_feature_envelope(store, envelope) is False
        other = Envelope.wrap(
            MaterialisationRequested(job_id="j", feature_set=REF, config={}), producer="gateway"
        )
        assert await apply_feature_envelope(store, other) is None
        [day] = await store.list_partitions("credit_features", "3", start=None, end=None)
        assert (day.status, day.rows, day.event_id) == ("good", 100, envelope.event_id)
    finally:
        await store.close()


def write_partition(root: Path, ds: date, *, good: bool, config_hash: str | None) -> Path:
    """A day folder shaped like the materialiser's (storage.py): parquet, reports, then the marker."""
    relative = f"feature_set=credit_features/version=3/ds={ds}"
    table = pa.table({"applicant_id": ["a1", "a2"], "monthly_income": [1000.0, 2500.0], "age": [30, 7]})
    stats = {
        "rows": 2,
        "columns": {"monthly_income": {"type": "double", "null_fraction": 0.0, "min": 1000.0, "max": 2500.0}},
    }
    failing = [{"expectation": "between", "column": "age", "success": False, "unexpected_examples": [7]}]
    report = {
        "engine": "great_expectations",
        "success": good,
        "evaluated": 5,
        "passed": 5 if good else 4,
        "failed": 0 if good else 1,
        "failures": [] if good else failing,
        "results": [],
    }
    folder = root / ("features" if good else "quarantine") / relative
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    (folder / "_validation.json").write_text(json.dumps(report))
    (folder / "_stats.json").write_text(json.dumps(stats))
    common: dict[str, Any] = {"feature_set": "credit_features", "version": "3", "ds": ds.isoformat()}
    if good:
        marker = {**common, "rows": 2, "config_hash": config_hash, "validation": report, "lineage": DERIVED}
        (folder / "_SUCCESS").write_text(json.dumps(marker))
        return folder
    features = root / "features" / relative
    features.mkdir(parents=True)
    record = {**common, "rows": 2, "reason": "age", "quarantine_uri": folder.as_uri()}
    (folder / "_QUARANTINED").write_text(json.dumps(record))
    (features / "_FAILED").write_text(json.dumps(record))
    return features


async def test_partition_statistics_and_reports_come_from_the_store(
    gateway_settings: GatewaySettings, admin_key: str, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    settings = gateway_settings.model_copy(update={"feature_store_root": str(root)})
    feed = QueueStatusFeed()
    async with serving(create_app(settings, sink=RecordingSink(), feature_feed=feed), admin_key) as client:
        await submit(client)
        config_hash = (await client.get(VERSION_URL)).json()["config_hash"]
        write_partition(root, date(2024, 1, 1), good=True, config_hash=config_hash)
        write_partition(root, date(2024, 1, 2), good=False, config_hash=None)
        await feed.deliver(
            materialised(date(2024, 1, 1), at=T0, lineage=DERIVED, rows=2), failed(date(2024, 1, 2), at=T0)
        )

        good = (await client.get(f"{VERSION_URL}/partitions/2024-01-01")).json()
        assert (good["status"], good["recorded_status"], good["rows"]) == ("good", "good", 2)
        assert good["statistics"]["columns"]["monthly_income"]["max"] == 2500.0
        assert good["validation"]["engine"] == "great_expectations" and good["validation"]["success"]
        assert good["config_hash_matches"] is True and good["note"] is None
        assert good["uri"].endswith("features/feature_set=credit_features/version=3/ds=2024-01-01")

        bad = (await client.get(f"{VERSION_URL}/partitions/2024-01-02")).json()
        assert (bad["status"], bad["marker"]["reason"]) == ("failed", "age")
        assert bad["validation"]["failures"][0]["unexpected_examples"] == [7]  # from quarantine
        assert bad["statistics"]["rows"] == 2

        # the store disagrees with the events: reported, not hidden
        (root / "features/feature_set=credit_features/version=3/ds=2024-01-01/_SUCCESS").unlink()
        gone = (await client.get(f"{VERSION_URL}/partitions/2024-01-01")).json()
        assert gone["status"] == "missing" and "shows it missing" in gone["note"]

        assert (await client.get(f"{VERSION_URL}/partitions/2024-02-01")).status_code == 404
        assert (await client.get(f"{VERSION_URL}/partitions/not-a-day")).status_code == 422
        assert (await client.get("/v1/feature-sets/credit_features/versions/9/partitions")).status_code == 404


async def test_a_materialisation_with_an_idempotency_key_is_started_once(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    await submit(client)
    body, key = (
        {"start_ds": "2024-01-02"},
        {"Idempotency-Key": "pf_materialise__credit_features_1-2024-01-02"},
    )
    first = await client.post(f"{VERSION_URL}/materialisations", json=body, headers=key)
    again = await client.post(f"{VERSION_URL}/materialisations", json=body, headers=key)
    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert first.json()["job_id"] == again.json()["job_id"] == key["Idempotency-Key"]
    assert (first.json()["replayed"], again.json()["replayed"]) == (False, True)
    await eventually(lambda: bool(sink.for_job(key["Idempotency-Key"])), what="the request to be published")
    assert len(sink.for_job(key["Idempotency-Key"])) == 1  # one job, one request event
    other = await client.post(
        "/v1/jobs", content=FS_YAML.replace("credit_features", "other_features"), headers=YAML
    )
    assert other.status_code == 202
    reused = await client.post(
        "/v1/feature-sets/other_features/versions/3/materialisations", json=body, headers=key
    )
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    bad = await client.post(
        f"{VERSION_URL}/materialisations", json=body, headers={"Idempotency-Key": "no spaces"}
    )
    assert bad.status_code == 422


async def test_materialisations_start_a_job_from_the_registered_config(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    await submit(client)
    answer = await client.post(
        f"{VERSION_URL}/materialisations", json={"start_ds": "2024-01-01", "end_ds": "2024-01-30"}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.headers["Location"] == f"/v1/jobs/{job_id}"
    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (job["kind"], job["name"], job["status"]) == ("materialise", "credit_features", "accepted")

    await eventually(lambda: bool(sink.for_job(job_id)), what="the request to be published")
    [envelope] = sink.for_job(job_id)
    assert [topic for e, topic, _ in sink.published if e.correlation_id == job_id] == [
        topics.MATERIALISATION_REQUESTED
    ]
    request = envelope.open_as(MaterialisationRequested)
    assert (request.start_ds, request.end_ds, request.feature_set) == (
        date(2024, 1, 1),
        date(2024, 1, 30),
        REF,
    )
    assert request.config["spec"]["features"][0]["name"] == "monthly_income"

    backwards = await client.post(
        f"{VERSION_URL}/materialisations", json={"start_ds": "2024-01-05", "end_ds": "2024-01-01"}
    )
    assert backwards.status_code == 422
    missing = await client.post(
        "/v1/feature-sets/credit_features/versions/8/materialisations", json={"start_ds": "2024-01-01"}
    )
    assert missing.status_code == 404 and "known versions: 3" in missing.json()["detail"]


async def test_source_column_lineage_joins_feature_sets_with_the_registry(
    client: httpx.AsyncClient, feed: QueueStatusFeed, registry: Registry
) -> None:
    await submit(client)
    await submit(client, FS_YAML.replace("version: 3", "version: 4"))
    await feed.deliver(materialised(date(2024, 1, 1), at=T0, lineage=DERIVED))  # v3 derived, v4 declared
    live = await seed(registry, PAIR, "job-1")
    await make_live(registry, PAIR, live.version)
    await seed(registry, PAIR, "job-2")  # a candidate
    await seed(registry, PairKey.of("credit_default", "bureau_features", "1"), "job-3")

    answer = await client.get("/v1/lineage/source-columns", params={"column": "applicants.annual_income"})
    body = answer.json()
    assert [
        (u["feature_set"], u["features"], u["origin"], u["model_versions"]) for u in body["feature_sets"]
    ] == [
        ("credit_features@3", ["monthly_income"], "derived", 1),
        ("credit_features@4", ["monthly_income"], "declared", 0),
    ]
    assert [(v["model_name"], v["version"], v["status"]) for v in body["data"]] == [
        ("credit_default", 1, "live")
    ]
    assert body["status"] == "live" and body["count"] == 1 and body["note"] is None

    every = (
        await client.get(
            "/v1/lineage/source-columns", params={"column": "applicants.annual_income", "status": "any"}
        )
    ).json()
    assert sorted(v["version"] for v in every["data"]) == [1, 2]
    candidates = (
        await client.get(
            "/v1/lineage/source-columns", params={"column": "applicants.age", "status": "candidate"}
        )
    ).json()
    assert [u["feature_set"] for u in candidates["feature_sets"]] == ["credit_features@3"]  # derived only
    assert [v["version"] for v in candidates["data"]] == [2]

    unknown = (await client.get("/v1/lineage/source-columns", params={"column": "bureau.score"})).json()
    assert unknown["feature_sets"] == [] and "no catalogued feature-set version" in unknown["note"]
    wrong = await client.get("/v1/lineage/source-columns", params={"column": "a.b", "status": "bogus"})
    assert wrong.status_code == 422


async def test_feature_set_endpoints_need_a_key_with_the_right_scope(client: httpx.AsyncClient) -> None:
    await submit(client)
    reader = (await client.post("/v1/keys", json={"name": "r", "scopes": ["read"]})).json()["key"]
    submitter = (await client.post("/v1/keys", json={"name": "s", "scopes": ["submit"]})).json()["key"]
    as_reader = {"Authorization": f"Bearer {reader}"}
    as_submitter = {"Authorization": f"Bearer {submitter}"}
    reads = [
        "/v1/feature-sets",
        "/v1/feature-sets/credit_features",
        VERSION_URL,
        f"{VERSION_URL}/partitions",
        f"{VERSION_URL}/lineage",
    ]
    for path in reads:
        assert (await client.get(path, headers={"Authorization": ""})).status_code == 401, path
        assert (await client.get(path, headers=as_submitter)).status_code == 403, path
        assert (await client.get(path, headers=as_reader)).status_code == 200, path
    start = {"start_ds": "2024-01-01"}
    url = f"{VERSION_URL}/materialisations"
    assert (await client.post(url, json=start, headers=as_reader)).status_code == 403
    assert (await client.post(url, json=start, headers={"Authorization": ""})).status_code == 401
    assert (await client.post(url, json=start, headers=as_submitter)).status_code == 202


async def test_feature_sets_are_paginated_by_name(client: httpx.AsyncClient) -> None:
    for name in ("c_features", "a_features", "b_features"):
        assert (await submit(client, FS_YAML.replace("credit_features", name))).status_code == 202
    first = (await client.get("/v1/feature-sets", params={"limit": 2})).json()
    assert [f["name"] for f in first["data"]] == ["a_features", "b_features"] and first["next_cursor"]
    rest = (await client.get("/v1/feature-sets", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [f["name"] for f in rest["data"]] == ["c_features"] and rest["next_cursor"] is None
    assert (await client.get("/v1/feature-sets", params={"cursor": "zzz"})).status_code == 422
    assert (await client.get("/v1/feature-sets/nope")).status_code == 404
