"""EMR on EKS: the job runner against a real moto_server, and the entry script without (and with) Spark.

moto's ``emr-containers`` keeps every job run RUNNING until it is cancelled (no COMPLETED or FAILED
ever), and it ignores StartJobRun's ``clientToken``. So against moto we test submit, describe,
cancel, the timeout path of ``wait`` and the runner's own idempotency; the FAILED/COMPLETED
mapping of ``wait`` is tested with scripted states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pfactory.materialiser.adapters import emr_entry
from pfactory.materialiser.adapters.emr import (
    EmrJobError,
    EmrJobFailed,
    EmrJobTimeout,
    EmrOnEksJobRunner,
    EmrOnEksSettings,
    JobModel,
    JobRunState,
    JobSource,
    RenderedJob,
)
from pfactory.materialiser.adapters.emr_entry import ModelSpec, SpecError, execution_order, parse_spec

BUCKET = "pf-emr-jobs"
ROLE = "arn:aws:iam::123456789012:role/pf-emr-job"
DS = date(2024, 3, 1)


def credit_job(job_id: str | None = None, ds: date = DS, target: str | None = None) -> RenderedJob:
    """Two sources and three models, declared out of ref order (``features`` refs ``joined``)."""
    return RenderedJob(
        job_id=job_id or uuid.uuid4().hex,
        feature_set="credit_features",
        version="3",
        ds=ds,
        models=(
            JobModel(
                "features",
                "SELECT applicant_id, CAST(income AS double) / 12 AS monthly_income, n FROM mdl_joined",
                refs=("joined",),
                view="mdl_features",
            ),
            JobModel(
                "apps",
                f"SELECT * FROM src_applications WHERE ds = '{ds.isoformat()}'",
                view="mdl_apps",
            ),
            JobModel(
                "joined",
                "SELECT a.applicant_id, a.income, COUNT(b.applicant_id) AS n FROM mdl_apps a "
                "LEFT JOIN src_bureau b ON a.applicant_id = b.applicant_id GROUP BY a.applicant_id, a.income",
                refs=("apps",),
                view="mdl_joined",
            ),
        ),
        sources={
            "applications": JobSource(root="s3://raw/applications", view="src_applications"),
            "bureau": JobSource(
                root="s3://raw/bureau", format="csv", options={"header": "true"}, view="src_bureau"
            ),
        },
        output="features",
        target=target,
        columns=(("applicant_id", "long"), ("monthly_income", "double"), ("n", "int")),
    )


# --------------------------------------------------------------------------- moto_server


@pytest.fixture
def aws(moto: str) -> dict[str, Any]:
    """boto3 client arguments for the test's moto_server."""
    return {"endpoint_url": moto, "region_name": "eu-west-1"}


@pytest.fixture
def virtual_cluster(aws: dict[str, Any]) -> str:
    """The job bucket and an EMR on EKS virtual cluster in moto; returns the cluster id."""
    boto3.client("s3", **aws).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
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
        "job_bucket": BUCKET,
        "log_uri": "s3://pf-emr-logs/jobs",
        "s3_endpoint_url": moto,
        "emr_endpoint_url": moto,
        "poll_interval_s": 0.05,
        "timeout_s": 30,
    }
    return EmrOnEksSettings(**{**defaults, **overrides})


@pytest.fixture
async def runner(moto: str, virtual_cluster: str) -> AsyncIterator[EmrOnEksJobRunner]:
    async with EmrOnEksJobRunner(emr_settings(moto, virtual_cluster)) as job_runner:
        yield job_runner


@pytest.mark.integration
async def test_submit_uploads_the_script_and_spec_and_starts_a_run(
    runner: EmrOnEksJobRunner, aws: dict[str, Any], virtual_cluster: str
) -> None:
    job = credit_job()
    run_id = await runner.submit(job)

    s3 = boto3.client("s3", **aws)
    folder = f"pfactory/emr-jobs/credit_features/2024-03-01/{runner.submission_id(job)}/"
    assert runner.job_uri(job) == f"s3://{BUCKET}/{folder}"
    script = s3.get_object(Bucket=BUCKET, Key=folder + "emr_entry.py")["Body"].read()
    compile(script, "emr_entry.py", "exec")
    assert script == Path(emr_entry.__file__).read_bytes()
    spec_text = s3.get_object(Bucket=BUCKET, Key=folder + "job.json")["Body"].read().decode()
    assert json.loads(spec_text) == runner.spec(job)
    spec = parse_spec(spec_text)
    assert [m.name for m in spec.models] == ["apps", "joined", "features"]
    assert spec.target == f"s3://{BUCKET}/{folder}output/"
    assert {s.name: (s.view, s.format) for s in spec.sources} == {
        "applications": ("src_applications", "parquet"),
        "bureau": ("src_bureau", "csv"),
    }

    run = boto3.client("emr-containers", **aws).describe_job_run(id=run_id, virtualClusterId=virtual_cluster)[
        "jobRun"
    ]
    driver = run["jobDriver"]["sparkSubmitJobDriver"]
    assert driver["entryPoint"] == f"s3://{BUCKET}/{folder}emr_entry.py"
    assert driver["entryPointArguments"] == [f"s3://{BUCKET}/{folder}job.json"]
    assert "--conf spark.executor.instances=2" in driver["sparkSubmitParameters"]
    assert run["releaseLabel"] == "emr-7.5.0-latest"
    assert run["executionRoleArn"] == ROLE
    assert run["clientToken"] == runner.submission_id(job)
    assert run["name"].startswith("pf-credit_features-2024-03-01-")
    assert run["configurationOverrides"]["monitoringConfiguration"] == {
        "s3MonitoringConfiguration": {"logUri": "s3://pf-emr-logs/jobs"}
    }

    state = await runner.describe(run_id)
    assert (state.run_id, state.state, state.terminal) == (run_id, "RUNNING", False)


@pytest.mark.integration
async def test_a_redelivered_request_reattaches_to_its_run(
    runner: EmrOnEksJobRunner, aws: dict[str, Any], virtual_cluster: str
) -> None:
    job = credit_job()
    first = await runner.submit(job)
    assert await runner.submit(job) == first
    other_day = await runner.submit(credit_job(job.job_id, ds=date(2024, 3, 2)))
    new_request = await runner.submit(credit_job())
    assert len({first, other_day, new_request}) == 3
    runs = boto3.client("emr-containers", **aws).list_job_runs(virtualClusterId=virtual_cluster)["jobRuns"]
    assert len(runs) == 3


@pytest.mark.integration
def test_moto_ignores_the_client_token(aws: dict[str, Any], virtual_cluster: str) -> None:
    """Why the runner looks for its run before starting one: moto starts a second run for the same token."""
    emr = boto3.client("emr-containers", **aws)
    request = {
        "name": "pf-token",
        "virtualClusterId": virtual_cluster,
        "clientToken": "same-token",
        "executionRoleArn": ROLE,
        "releaseLabel": "emr-7.5.0-latest",
        "jobDriver": {"sparkSubmitJobDriver": {"entryPoint": "s3://b/e.py"}},
    }
    assert emr.start_job_run(**request)["id"] != emr.start_job_run(**request)["id"]


@pytest.mark.integration
async def test_wait_gives_up_at_the_timeout_and_cancels_the_run(moto: str, virtual_cluster: str) -> None:
    """moto's runs never leave RUNNING, so ``wait`` always reaches its timeout there."""
    seen: list[str] = []
    async with EmrOnEksJobRunner(emr_settings(moto, virtual_cluster, timeout_s=0.3)) as runner:
        run_id = await runner.submit(credit_job())
        with pytest.raises(EmrJobTimeout, match=rf"{run_id} still RUNNING after 0.3 s; cancelled it"):
            await runner.wait(run_id, on_progress=lambda s: seen.append(s.state))
        assert seen == ["RUNNING"]  # reported once, not once per poll
        after = await runner.describe(run_id)
    assert (after.state, after.state_details) == ("CANCELLED", "JobRun CANCELLED successfully.")


@pytest.mark.integration
async def test_cancel_ends_the_run_and_wait_reports_it(runner: EmrOnEksJobRunner) -> None:
    run_id = await runner.submit(credit_job())
    await runner.cancel(run_id)
    state = await runner.describe(run_id)
    assert state.state == "CANCELLED" and state.terminal
    assert state.finished_at is not None
    with pytest.raises(EmrJobError, match="not in a cancellable state"):
        await runner.cancel(run_id)
    with pytest.raises(EmrJobFailed, match=rf"{run_id} CANCELLED: JobRun CANCELLED successfully\."):
        await runner.wait(run_id)


@pytest.mark.integration
async def test_unknown_runs_clusters_and_releases_are_clear_errors(
    runner: EmrOnEksJobRunner, moto: str, virtual_cluster: str
) -> None:
    with pytest.raises(
        EmrJobError, match="could not describe EMR job run 0000000000000000000: ResourceNotFound"
    ):
        await runner.describe("0000000000000000000")
    async with EmrOnEksJobRunner(emr_settings(moto, "no-such-cluster")) as lost:
        with pytest.raises(EmrJobError, match="Virtual cluster no-such-cluster doesn't exist"):
            await lost.submit(credit_job())
    async with EmrOnEksJobRunner(emr_settings(moto, virtual_cluster, release_label="emr-9")) as old:
        with pytest.raises(EmrJobError, match="Release emr-9 doesn't exist"):
            await old.submit(credit_job())


# --------------------------------------------------------------------------- wait, scripted


class ScriptedRunner(EmrOnEksJobRunner):
    """DescribeJobRun answers from a script: the states real EMR goes through and moto never does."""

    def __init__(self, states: list[JobRunState], **overrides: Any) -> None:
        super().__init__(
            EmrOnEksSettings(
                virtual_cluster_id="vc",
                execution_role_arn=ROLE,
                job_bucket=BUCKET,
                log_uri="s3://logs/emr",
                poll_interval_s=0.01,
                **overrides,
            )
        )
        self.states = states
        self.cancelled: list[str] = []
        self.finish_on_cancel = False

    async def describe(self, run_id: str) -> JobRunState:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)
        if self.finish_on_cancel:  # the run ended between the last poll and the cancel
            self.states = [_state("COMPLETED")]
            raise EmrJobError("not in a cancellable state")


def _state(state: str, **kwargs: Any) -> JobRunState:
    return JobRunState(run_id="r1", state=state, **kwargs)


async def test_wait_maps_failed_to_an_error_with_the_reason_and_the_logs() -> None:
    progress: list[str] = []

    async def record(state: JobRunState) -> None:
        progress.append(state.state)

    runner = ScriptedRunner(
        [
            _state("SUBMITTED"),
            _state("RUNNING"),
            _state("RUNNING"),
            _state("FAILED", failure_reason="USER_ERROR", state_details="Job failed: Table not found: mdl_x"),
        ]
    )
    with pytest.raises(EmrJobFailed) as failed:
        await runner.wait("r1", on_progress=record)
    assert str(failed.value) == (
        "EMR job run r1 FAILED: USER_ERROR: Job failed: Table not found: mdl_x; logs under s3://logs/emr/vc/jobs/r1/"
    )
    assert failed.value.state.failure_reason == "USER_ERROR"
    assert progress == ["SUBMITTED", "RUNNING", "FAILED"]
    assert runner.cancelled == []


async def test_wait_returns_the_completed_state() -> None:
    runner = ScriptedRunner([_state("PENDING"), _state("RUNNING"), _state("COMPLETED")])
    assert (await runner.wait("r1")).state == "COMPLETED"


async def test_a_run_that_completes_as_the_timeout_cancels_it_counts_as_completed() -> None:
    runner = ScriptedRunner([_state("RUNNING")], timeout_s=0.05)
    runner.finish_on_cancel = True
    assert (await runner.wait("r1")).state == "COMPLETED"
    assert runner.cancelled == ["r1"]


# --------------------------------------------------------------------------- the entry script


def test_the_spec_round_trips_with_models_in_ref_order() -> None:
    job = credit_job(target="s3://features/fs/ds=2024-03-01/")
    runner = EmrOnEksJobRunner(
        EmrOnEksSettings(virtual_cluster_id="vc", execution_role_arn=ROLE, job_bucket=BUCKET)
    )
    spec = parse_spec(json.dumps(runner.spec(job)))
    assert [(m.name, m.view, m.refs) for m in spec.models] == [
        ("apps", "mdl_apps", ()),
        ("joined", "mdl_joined", ("apps",)),
        ("features", "mdl_features", ("joined",)),
    ]
    assert (spec.feature_set, spec.version, spec.ds, spec.output) == (
        "credit_features",
        "3",
        "2024-03-01",
        "features",
    )
    assert spec.target == "s3://features/fs/ds=2024-03-01/"
    assert spec.sources[1] == emr_entry.SourceSpec(
        "bureau", "src_bureau", "s3://raw/bureau", "csv", {"header": "true"}
    )
    assert [(c.name, c.dtype) for c in spec.columns] == [
        ("applicant_id", "long"),
        ("monthly_income", "double"),
        ("n", "int"),
    ]


def test_the_minimal_spec_of_the_brief_is_enough() -> None:
    spec = parse_spec(
        json.dumps(
            {
                "feature_set": "fs",
                "ds": "2024-03-01",
                "models": [{"name": "a", "sql": "SELECT 1 AS x"}],
                "sources": {"raw": {"root": "/data/raw"}},
                "output": "a",
                "target": "/out",
            }
        )
    )
    assert spec.models == (ModelSpec("a", "a", "SELECT 1 AS x"),)
    assert spec.sources[0].view == "raw" and spec.sources[0].format == "parquet"


def _model(name: str, *refs: str) -> ModelSpec:
    return ModelSpec(name, name, "SELECT 1", refs)


def test_execution_order_is_stable_and_follows_refs() -> None:
    ordered = [_model("a"), _model("b", "a"), _model("c", "a", "b")]
    assert execution_order(ordered) == ordered
    shuffled = [_model("c", "a", "b"), _model("x"), _model("b", "a"), _model("a")]
    assert [m.name for m in execution_order(shuffled)] == ["x", "a", "b", "c"]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([_model("a", "b"), _model("b", "a"), _model("c")], r"ref cycle among models \['a', 'b'\]"),
        ([_model("a", "ghost")], r"model 'a' refs unknown model\(s\) \['ghost'\]"),
        ([_model("a"), _model("a")], "duplicate model name 'a'"),
    ],
)
def test_execution_order_refuses_bad_graphs(models: list[ModelSpec], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        execution_order(models)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output": "nope"}, r"output model 'nope' is not among the models \['a'\]"),
        ({"models": [{"name": "a"}]}, "model 'a': 'sql' must be a non-empty string"),
        ({"models": []}, "'models' must be a non-empty list"),
        ({"columns": [{"name": "x", "dtype": "decimal"}]}, r"columns\[0\]: dtype 'decimal' is not one of"),
        ({"spec_version": 2}, "job spec version 2 is not supported"),
        ({"target": ""}, "'target' must be a non-empty string"),
        ({"sources": {"raw": {"format": "csv"}}}, "source 'raw': 'root' must be a non-empty string"),
    ],
)
def test_parse_spec_names_what_is_wrong(change: dict[str, Any], message: str) -> None:
    raw = {
        "feature_set": "fs",
        "ds": "2024-03-01",
        "models": [{"name": "a", "sql": "SELECT 1"}],
        "output": "a",
        "target": "/o",
    }
    with pytest.raises(SpecError, match=message):
        parse_spec(json.dumps({**raw, **change}))
    with pytest.raises(SpecError, match="not JSON"):
        parse_spec("{")


def test_the_entry_script_imports_only_pyspark_and_the_standard_library() -> None:
    source = Path(emr_entry.__file__).read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.strip().startswith(("import ", "from ")) and not line.strip().startswith("from __future__")
    }
    assert imported - set(sys.stdlib_module_names) == {"pyspark"}


@pytest.fixture
def local_day(tmp_path: Path) -> Iterator[Path]:
    """Raw data for two days on local disk, partitioned by ``ds=`` folders (bureau as CSV)."""
    for ds, ids in (("2024-03-01", [1, 2, 3]), ("2024-02-29", [9])):
        folder = tmp_path / "raw" / "applications" / f"ds={ds}"
        folder.mkdir(parents=True)
        pq.write_table(
            pa.table({"applicant_id": ids, "income": [1200 * i for i in ids]}), folder / "p.parquet"
        )
    bureau = tmp_path / "raw" / "bureau"
    bureau.mkdir(parents=True)
    (bureau / "b.csv").write_text("applicant_id,score\n1,700\n1,710\n3,650\n")
    yield tmp_path


@pytest.mark.integration
def test_the_entry_script_runs_a_day_on_spark(local_day: Path) -> None:
    """The uploaded program itself, run as spark-submit runs it (a separate process, local Spark)."""
    job = replace(
        credit_job(target=str(local_day / "out")),
        sources={
            "applications": JobSource(root=str(local_day / "raw/applications"), view="src_applications"),
            "bureau": JobSource(root=str(local_day / "raw/bureau"), format="csv", view="src_bureau"),
        },
    )
    runner = EmrOnEksJobRunner(
        EmrOnEksSettings(virtual_cluster_id="vc", execution_role_arn=ROLE, job_bucket=BUCKET)
    )
    spec_path = local_day / "job.json"
    spec_path.write_text(json.dumps(runner.spec(job)))
    env = {
        **os.environ,
        "PYSPARK_SUBMIT_ARGS": "--master local[1] --conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 pyspark-shell",
    }
    done = subprocess.run(
        [sys.executable, emr_entry.__file__, str(spec_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pfactory: wrote features" in done.stdout
    out = local_day / "out"
    assert not (out / "_SUCCESS").exists()  # only the platform marks a partition good
    table = pq.read_table(out).sort_by("applicant_id")
    assert table.schema.field("applicant_id").type == pa.int64()
    assert table.schema.field("n").type == pa.int32()
    assert table.to_pydict() == {
        "applicant_id": [1, 2, 3],
        "monthly_income": [100.0, 200.0, 300.0],
        "n": [2, 0, 1],
    }
