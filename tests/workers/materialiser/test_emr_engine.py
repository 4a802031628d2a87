"""``EmrSqlEngine`` against a real moto_server: sources on S3, the submitted job, timeouts, the read-back.

moto's ``emr-containers`` never runs a job: a run stays RUNNING until it is cancelled. So the
timeout path is tested as it really happens, while the completed path needs one stand-in: the test
writes the Parquet the entry script would have staged and patches only ``EmrOnEksJobRunner.wait``
to answer COMPLETED. Everything else (upload, StartJobRun, S3 reads) is the real code against moto.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pfactory.materialiser.adapters.emr import EmrOnEksJobRunner, EmrOnEksSettings, JobRunState, RenderedJob
from pfactory.materialiser.adapters.emr_engine import EmrSqlEngine
from pfactory.materialiser.app import build_materialiser
from pfactory.materialiser.engine import EngineError, ModelStep, OutputColumn, SourceTable
from pfactory.materialiser.settings import MaterialiserSettings

JOBS = "pf-emr-jobs"
RAW = "pf-raw"
ROLE = "arn:aws:iam::123456789012:role/pf-emr-job"
DS = date(2024, 3, 1)

STEPS = [
    ModelStep("base", "mdl_base", "SELECT applicant_id, age, annual_income AS income FROM src_applicants"),
    ModelStep(
        "features",
        "mdl_features",
        "SELECT b.applicant_id, b.age, b.income, s.grade FROM mdl_base b "
        "LEFT JOIN src_scores s ON s.applicant_id = b.applicant_id",
    ),
]
COLUMNS = [
    OutputColumn("applicant_id", None),
    OutputColumn("age", "int"),
    OutputColumn("income", "double"),
    OutputColumn("grade", "string"),
    OutputColumn("event_ts", "timestamp"),
]


@pytest.fixture
def aws(moto: str) -> dict[str, Any]:
    return {"endpoint_url": moto, "region_name": "eu-west-1"}


@pytest.fixture
def virtual_cluster(aws: dict[str, Any]) -> str:
    """The job and raw buckets, raw data for one day, and a virtual cluster; returns the cluster id."""
    s3 = boto3.client("s3", **aws)
    for bucket in (JOBS, RAW):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    applicants = pa.table({"applicant_id": [1, 2], "age": [34, 51], "annual_income": [52_000.0, 61_500.5]})
    buffer = io.BytesIO()
    pq.write_table(applicants, buffer)
    s3.put_object(Bucket=RAW, Key=f"raw/applicants/ds={DS}/part-0.parquet", Body=buffer.getvalue())
    s3.put_object(
        Bucket=RAW, Key=f"raw/scores/ds={DS}/scores.csv", Body=b"applicant_id,score,grade\n1,710,A\n"
    )
    cluster = boto3.client("emr-containers", **aws).create_virtual_cluster(
        name="pf-test",
        containerProvider={"id": "pf-eks", "type": "EKS", "info": {"eksInfo": {"namespace": "pf-jobs"}}},
    )
    return str(cluster["id"])


def emr_settings(moto: str, virtual_cluster_id: str, **overrides: Any) -> EmrOnEksSettings:
    defaults: dict[str, Any] = {
        "virtual_cluster_id": virtual_cluster_id,
        "execution_role_arn": ROLE,
        "job_bucket": JOBS,
        "log_uri": "s3://pf-emr-logs/jobs",
        "region": "eu-west-1",
        "s3_endpoint_url": moto,
        "emr_endpoint_url": moto,
        "poll_interval_s": 0.05,
        "timeout_s": 0.3,
    }
    return EmrOnEksSettings(**{**defaults, **overrides})


def sources() -> list[SourceTable]:
    return [
        SourceTable("applicants", "src_applicants", "parquet", f"s3://{RAW}/raw/applicants", True),
        SourceTable("scores", "src_scores", "csv", f"s3://{RAW}/raw/scores", True, {"header": "true"}),
    ]


def start_day(engine: EmrSqlEngine, job_id: str) -> None:
    engine.begin_day(job_id, "tiny-credit", "1", DS)
    for source in sources():
        engine.register_source(source)


@pytest.mark.integration
def test_register_source_reads_the_columns_from_s3(moto: str, virtual_cluster: str) -> None:
    engine = EmrSqlEngine(emr_settings(moto, virtual_cluster))
    try:
        engine.begin_day("job-1", "tiny-credit", "1", DS)
        applicants, scores = sources()
        assert engine.register_source(applicants) == ["applicant_id", "age", "annual_income", "ds"]
        assert engine.register_source(scores) == ["applicant_id", "score", "grade", "ds"]
        with pytest.raises(
            EngineError, match=rf"source 'gone' has no data: s3://{RAW}/raw/gone does not exist"
        ):
            engine.register_source(SourceTable("gone", "src_gone", "parquet", f"s3://{RAW}/raw/gone", True))
        with pytest.raises(EngineError, match="EMR engine reads s3:// sources only"):
            engine.register_source(SourceTable("local", "src_local", "parquet", "/data/raw/x", True))
    finally:
        engine.close()


@pytest.mark.integration
def test_a_run_that_never_ends_times_out_and_is_cancelled(
    moto: str, virtual_cluster: str, aws: dict[str, Any]
) -> None:
    """moto's runs stay RUNNING, so ``run_models`` reaches the timeout: an EngineError, run CANCELLED."""
    engine = EmrSqlEngine(emr_settings(moto, virtual_cluster))
    try:
        start_day(engine, "job-timeout")
        with pytest.raises(EngineError, match=r"still RUNNING after 0.3 s; cancelled it") as raised:
            engine.run_models(STEPS, "features", COLUMNS)
        run_id = engine.last_run_id
        assert run_id is not None
        assert f"logs under s3://pf-emr-logs/jobs/{virtual_cluster}/jobs/{run_id}/" in str(raised.value)

        emr = boto3.client("emr-containers", **aws)
        run = emr.describe_job_run(id=run_id, virtualClusterId=virtual_cluster)["jobRun"]
        assert run["state"] == "CANCELLED"
        spec_uri = run["jobDriver"]["sparkSubmitJobDriver"]["entryPointArguments"][0]
        bucket, _, key = spec_uri.removeprefix("s3://").partition("/")
        spec = json.loads(boto3.client("s3", **aws).get_object(Bucket=bucket, Key=key)["Body"].read())
        assert [(m["name"], m["view"], m["sql"]) for m in spec["models"]] == [
            (s.name, s.view, s.sql) for s in STEPS
        ]
        assert spec["sources"] == {
            "applicants": {
                "root": f"s3://{RAW}/raw/applicants",
                "format": "parquet",
                "options": {},
                "view": "src_applicants",
            },
            "scores": {
                "root": f"s3://{RAW}/raw/scores",
                "format": "csv",
                "options": {"header": "true"},
                "view": "src_scores",
            },
        }
        assert (spec["feature_set"], spec["version"], spec["ds"], spec["output"]) == (
            "tiny-credit",
            "1",
            "2024-03-01",
            "features",
        )
        assert spec["columns"][1] == {"name": "age", "dtype": "int"}
        assert spec["target"].endswith("/output/")
    finally:
        engine.close()


@pytest.mark.integration
def test_a_completed_run_is_read_back_cast_to_the_declared_types(
    moto: str, virtual_cluster: str, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one part moto cannot emulate is a run completing: ``wait`` is patched to say COMPLETED and
    the test writes the Parquet the entry script would have staged. Submit and the S3 read are real."""
    settings = emr_settings(moto, virtual_cluster)

    async def completed(self: EmrOnEksJobRunner, run_id: str, **_: Any) -> JobRunState:
        return JobRunState(run_id=run_id, state="COMPLETED")

    monkeypatch.setattr(EmrOnEksJobRunner, "wait", completed)
    engine = EmrSqlEngine(settings)
    try:
        job_id = uuid.uuid4().hex
        start_day(engine, job_id)
        # what Spark would write: undeclared column kept here, int64 age, naive ns timestamps
        staged = pa.table(
            {
                "applicant_id": pa.array([1, 2], pa.int64()),
                "age": pa.array([34, 51], pa.int64()),
                "income": [52_000.0, 61_500.5],
                "grade": ["A", None],
                "event_ts": pa.array([datetime(2024, 3, 1), datetime(2024, 3, 1)], pa.timestamp("ns")),
                "scratch": [0, 0],
            }
        )
        location = EmrOnEksJobRunner(settings).output_location(_job_for(job_id))
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        buffer = io.BytesIO()
        pq.write_table(staged, buffer)
        boto3.client("s3", **aws).put_object(
            Bucket=bucket, Key=f"{prefix}part-00000.parquet", Body=buffer.getvalue()
        )

        result = engine.run_models(STEPS, "features", COLUMNS)
    finally:
        engine.close()

    assert result.rows == 2
    assert result.dropped_columns == ("scratch",)
    assert result.table.schema == pa.schema(
        [
            ("applicant_id", pa.int64()),
            ("age", pa.int32()),
            ("income", pa.float64()),
            ("grade", pa.string()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
        ]
    )
    assert result.table.column("age").to_pylist() == [34, 51]
    assert result.table.column("grade").to_pylist() == ["A", None]


def _job_for(job_id: str) -> RenderedJob:
    """The RenderedJob identity ``run_models`` submits (only the fields the output location uses)."""
    return RenderedJob(
        job_id=job_id, feature_set="tiny-credit", version="1", ds=DS, models=(), sources={}, output="features"
    )


def test_run_models_needs_the_day_and_a_known_output() -> None:
    engine = EmrSqlEngine(EmrOnEksSettings(virtual_cluster_id="vc", execution_role_arn=ROLE, job_bucket=JOBS))
    with pytest.raises(EngineError, match="needs begin_day"):
        engine.run_models(STEPS, "features", COLUMNS)
    engine.begin_day("j", "fs", "1", DS)
    with pytest.raises(
        EngineError, match=r"output model 'nope' is not among the rendered models \['base', 'features'\]"
    ):
        engine.run_models(STEPS, "nope", COLUMNS)
    engine.close()


def test_the_emr_engine_without_emr_settings_names_the_env_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("PF_EMR_VIRTUAL_CLUSTER_ID", "PF_EMR_EXECUTION_ROLE_ARN", "PF_EMR_JOB_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    settings = MaterialiserSettings(engine="emr", store_root=str(tmp_path / "store"))
    with pytest.raises(ValueError, match="engine 'emr' needs EMR on EKS settings") as raised:
        build_materialiser(settings)
    for name in ("PF_EMR_VIRTUAL_CLUSTER_ID", "PF_EMR_EXECUTION_ROLE_ARN", "PF_EMR_JOB_BUCKET"):
        assert name in str(raised.value)


def test_the_emr_engine_is_wired_from_the_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PF_EMR_VIRTUAL_CLUSTER_ID", "vc")
    monkeypatch.setenv("PF_EMR_EXECUTION_ROLE_ARN", ROLE)
    monkeypatch.setenv("PF_EMR_JOB_BUCKET", JOBS)
    materialiser = build_materialiser(MaterialiserSettings(engine="emr", store_root=str(tmp_path / "store")))
    assert isinstance(materialiser.engine, EmrSqlEngine)
    assert materialiser.engine.settings.job_bucket == JOBS
    materialiser.engine.close()


class _DayRecordingEngine:
    """Records what the service tells an engine with ``begin_day``; fails the day at ``run_models``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def begin_day(self, job_id: str, feature_set: str, version: str, ds: date) -> None:
        self.calls.append(("begin_day", job_id, feature_set, version, ds))

    def register_source(self, source: SourceTable) -> list[str]:
        self.calls.append(("register_source", source.name))
        return []

    def run_models(self, steps: Any, output: str, columns: Any) -> Any:
        raise EngineError("stop here")

    def close(self) -> None:
        pass


def test_the_service_gives_an_engine_with_begin_day_the_request_job_id(tmp_path: Path) -> None:
    from pfactory.materialiser.adapters.partitions import LocalPartitionStore
    from pfactory.materialiser.service import Materialiser
    from tests.workers.materialiser.conftest import feature_set

    engine = _DayRecordingEngine()
    materialiser = Materialiser(engine, LocalPartitionStore(tmp_path / "store"), validator=None)  # type: ignore[arg-type]
    [result] = materialiser.materialise_range(feature_set(), DS, DS, job_id="job-42")
    assert (result.status, result.reason) == ("failed", "stop here")
    assert engine.calls[0] == ("begin_day", "job-42", "tiny-credit", "1", DS)
    assert sorted(c[1] for c in engine.calls[1:]) == ["applicants", "scores"]
