"""``EmrOnEksJobRunner``: runs one day's rendered SQL as a Spark job on EMR on EKS (aioboto3).

A submission uploads the PySpark program :mod:`~pfactory.materialiser.adapters.emr_entry` and a JSON
job spec to ``s3://<job_bucket>/<job_prefix>/<feature_set>/<ds>/<submission id>/``, then calls
``emr-containers`` StartJobRun and follows DescribeJobRun until the run ends.

A submission is idempotent: the submission id (and the StartJobRun ``clientToken``) is derived from
the request's job id, feature set, version and ds. AWS honours the token; moto does not, so the
runner also looks for a run with the same name and token before starting one. A redelivered request
therefore reattaches to the run already going, and a worker that stops while waiting leaves the run
alone for the next delivery to pick up.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from typing import Any, NamedTuple

import aioboto3  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.materialiser.engine import EngineError

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
ENTRY_SCRIPT = "emr_entry.py"
SPEC_FILE = "job.json"
_NAME_UNSAFE = re.compile(r"[^.\-_/#A-Za-z0-9]+")


class EmrOnEksSettings(BaseSettings):
    """Where and how ``EmrOnEksJobRunner`` runs jobs (env prefix ``PF_EMR_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_EMR_", extra="forbid")

    virtual_cluster_id: str = Field(description="EMR on EKS virtual cluster the jobs run in.")
    execution_role_arn: str = Field(description="IAM role the job's driver and executors assume.")
    release_label: str = Field(
        default="emr-7.5.0-latest", description="EMR release (Spark version) of the job."
    )
    region: str = Field(
        default="eu-west-1", description="AWS region of the virtual cluster and the job bucket."
    )
    job_bucket: str = Field(description="Bucket the entry script and job spec are uploaded to.")
    job_prefix: str = Field(
        default="pfactory/emr-jobs", description="Key prefix of uploaded jobs in the bucket."
    )
    output_uri: str | None = Field(
        default=None,
        description="Root jobs without an explicit target stage their Parquet under; None: the job's own folder.",
    )
    log_uri: str | None = Field(
        default=None, description="S3 URI EMR ships driver and executor logs to; None: no S3 logs."
    )
    cloudwatch_log_group: str | None = Field(
        default=None, description="CloudWatch log group for the job's logs; None: no CloudWatch logs."
    )
    cloudwatch_log_stream_prefix: str = Field(
        default="pfactory", description="Prefix of the CloudWatch log streams."
    )
    executor_instances: int = Field(default=2, ge=1, description="Spark executors per job.")
    executor_memory: str = Field(default="4g", description="Memory per executor, Spark notation ('4g').")
    executor_cores: int = Field(default=2, ge=1, description="Cores per executor.")
    driver_memory: str = Field(default="2g", description="Memory of the driver, Spark notation.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra '--conf key=value' pairs for spark-submit."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Override of the S3 endpoint (moto_server, MinIO); None for AWS."
    )
    emr_endpoint_url: str | None = Field(
        default=None, description="Override of the emr-containers endpoint (moto_server); None for AWS."
    )
    poll_interval_s: float = Field(default=10.0, gt=0, description="Seconds between DescribeJobRun polls.")
    timeout_s: float = Field(
        default=3600.0, gt=0, description="A run still going after this long is cancelled and reported."
    )


class JobModel(NamedTuple):
    """A rendered SQL model: ``(name, sql)``, plus the models it refs and its view name."""

    name: str
    sql: str
    refs: tuple[str, ...] = ()
    view: str | None = None
    """Temp view the other models read it as; None: the model name."""


@dataclass(frozen=True)
class JobSource:
    """Where a source is read from: its root (``ds=`` folders are discovered), format and options."""

    root: str
    format: str = "parquet"
    options: Mapping[str, str] = field(default_factory=dict)
    view: str | None = None
    """Temp view the SQL reads it as; None: the source name."""


@dataclass(frozen=True)
class RenderedJob:
    """One day of one feature-set version, rendered and ready to run remotely."""

    job_id: str
    feature_set: str
    version: str
    ds: date
    models: tuple[JobModel, ...]
    sources: Mapping[str, JobSource]
    output: str
    target: str | None = None
    """Where the output Parquet goes; None: the runner's staging location (see ``output_location``)."""
    columns: tuple[tuple[str, str | None], ...] = ()
    """Output columns and declared dtypes; empty: keep the output model's columns as computed."""


@dataclass(frozen=True)
class JobRunState:
    """What DescribeJobRun says about a run."""

    run_id: str
    state: str
    state_details: str | None = None
    failure_reason: str | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        """Whether the run has ended (COMPLETED, FAILED or CANCELLED)."""
        return self.state in TERMINAL_STATES


class EmrJobError(EngineError):
    """An EMR on EKS job could not be submitted, followed or finished."""


class EmrJobFailed(EmrJobError):
    """The run ended FAILED or CANCELLED; ``state`` holds EMR's reason."""

    def __init__(self, state: JobRunState, logs: str | None) -> None:
        self.state = state
        reason = ": ".join(p for p in (state.failure_reason, state.state_details) if p) or "no reason given"
        where = f"; logs under {logs}" if logs else ""
        super().__init__(f"EMR job run {state.run_id} {state.state}: {reason}{where}")


class EmrJobTimeout(EmrJobError):
    """The run did not finish within the timeout and was cancelled."""

    def __init__(self, state: JobRunState, timeout_s: float) -> None:
        self.state = state
        super().__init__(
            f"EMR job run {state.run_id} still {state.state} after {timeout_s:g} s; cancelled it"
        )


ProgressCallback = Callable[[JobRunState], Awaitable[None] | None]


class EmrOnEksJobRunner:
    """Submits rendered jobs to an EMR on EKS virtual cluster and follows them to the end."""

    def __init__(self, settings: EmrOnEksSettings, *, session: Any | None = None) -> None:
        self.settings = settings
        self._session = session or aioboto3.Session()
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def _client(self, service: str) -> Any:
        async with self._lock:
            if service not in self._clients:
                endpoint = (
                    self.settings.s3_endpoint_url if service == "s3" else self.settings.emr_endpoint_url
                )
                self._clients[service] = await self._stack.enter_async_context(
                    self._session.client(service, region_name=self.settings.region, endpoint_url=endpoint)
                )
            return self._clients[service]

    async def close(self) -> None:
        """Close the S3 and emr-containers clients."""
        async with self._lock:
            await self._stack.aclose()
            self._clients.clear()

    async def __aenter__(self) -> EmrOnEksJobRunner:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def submission_id(self, job: RenderedJob) -> str:
        """Stable id of a request for one day: the StartJobRun client token and the upload folder."""
        key = "\n".join((job.job_id, job.feature_set, job.version, job.ds.isoformat()))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def job_uri(self, job: RenderedJob) -> str:
        """``s3://<job_bucket>/<job_prefix>/<feature_set>/<ds>/<submission id>/`` (trailing slash)."""
        return f"s3://{self.settings.job_bucket}/{self._job_key(job)}"

    def output_location(self, job: RenderedJob) -> str:
        """Where the job writes its Parquet: ``job.target``, else a staging folder for this submission."""
        if job.target:
            return job.target
        if self.settings.output_uri:
            return (
                f"{self.settings.output_uri.rstrip('/')}/feature_set={job.feature_set}/version={job.version}"
                f"/ds={job.ds.isoformat()}/{self.submission_id(job)}/"
            )
        return f"{self.job_uri(job)}output/"

    def logs_uri(self, run_id: str) -> str | None:
        """Where EMR writes a run's logs under ``log_uri`` (None without S3 logging)."""
        if not self.settings.log_uri:
            return None
        return f"{self.settings.log_uri.rstrip('/')}/{self.settings.virtual_cluster_id}/jobs/{run_id}/"

    def _job_key(self, job: RenderedJob) -> str:
        prefix = self.settings.job_prefix.strip("/")
        folder = f"{job.feature_set}/{job.ds.isoformat()}/{self.submission_id(job)}/"
        return f"{prefix}/{folder}" if prefix else folder

    def spec(self, job: RenderedJob) -> dict[str, Any]:
        """The JSON job spec ``emr_entry.py`` reads."""
        return {
            "spec_version": 1,
            "feature_set": job.feature_set,
            "version": job.version,
            "ds": job.ds.isoformat(),
            "models": [
                {"name": m.name, "view": m.view or m.name, "sql": m.sql, "refs": list(m.refs)}
                for m in job.models
            ],
            "sources": {
                name: {"root": s.root, "format": s.format, "options": dict(s.options), "view": s.view or name}
                for name, s in job.sources.items()
            },
            "output": job.output,
            "target": self.output_location(job),
            "columns": [{"name": name, "dtype": dtype} for name, dtype in job.columns],
        }

    def spark_submit_parameters(self) -> str:
        """The ``sparkSubmitParameters`` string: executor sizing plus any extra ``--conf``."""
        conf = {
            "spark.executor.instances": str(self.settings.executor_instances),
            "spark.executor.memory": self.settings.executor_memory,
            "spark.executor.cores": str(self.settings.executor_cores),
            "spark.driver.memory": self.settings.driver_memory,
            **self.settings.spark_conf,
        }
        return " ".join(f"--conf {key}={value}" for key, value in conf.items())

    def _run_name(self, job: RenderedJob) -> str:
        suffix = f"-{job.ds.isoformat()}-{self.submission_id(job)[:8]}"
        return "pf-" + _NAME_UNSAFE.sub("-", job.feature_set)[: 64 - 3 - len(suffix)] + suffix

    async def submit(self, job: RenderedJob) -> str:
        """Upload the job and start it; a repeated request returns the run already started.

        Args:
            job: the rendered day.

        Returns:
            The EMR job run id.

        Raises:
            EmrJobError: the upload or StartJobRun was refused (unknown cluster, bad release label...).
        """
        token, name = self.submission_id(job), self._run_name(job)
        existing = await self._find_run(name, token)
        if existing is not None:
            return existing
        s3, emr = await self._client("s3"), await self._client("emr-containers")
        key = self._job_key(job)
        script = resources.files(__package__).joinpath(ENTRY_SCRIPT).read_bytes()
        spec = json.dumps(self.spec(job), sort_keys=True, indent=1).encode()
        monitoring: dict[str, Any] = {}
        if self.settings.log_uri:
            monitoring["s3MonitoringConfiguration"] = {"logUri": self.settings.log_uri}
        if self.settings.cloudwatch_log_group:
            monitoring["cloudWatchMonitoringConfiguration"] = {
                "logGroupName": self.settings.cloudwatch_log_group,
                "logStreamNamePrefix": self.settings.cloudwatch_log_stream_prefix,
            }
        try:
            bucket = self.settings.job_bucket
            await s3.put_object(
                Bucket=bucket, Key=key + ENTRY_SCRIPT, Body=script, ContentType="text/x-python"
            )
            await s3.put_object(Bucket=bucket, Key=key + SPEC_FILE, Body=spec, ContentType="application/json")
            response = await emr.start_job_run(
                name=name,
                virtualClusterId=self.settings.virtual_cluster_id,
                clientToken=token,
                executionRoleArn=self.settings.execution_role_arn,
                releaseLabel=self.settings.release_label,
                jobDriver={
                    "sparkSubmitJobDriver": {
                        "entryPoint": f"s3://{bucket}/{key}{ENTRY_SCRIPT}",
                        "entryPointArguments": [f"s3://{bucket}/{key}{SPEC_FILE}"],
                        "sparkSubmitParameters": self.spark_submit_parameters(),
                    }
                },
                configurationOverrides={"monitoringConfiguration": monitoring} if monitoring else {},
                tags={
                    "pfactory:feature-set": job.feature_set,
                    "pfactory:ds": job.ds.isoformat(),
                    "pfactory:job-id": job.job_id,
                },
            )
        except ClientError as error:
            raise EmrJobError(f"could not start EMR job '{name}': {_message(error)}") from error
        return str(response["id"])

    async def _find_run(self, name: str, token: str) -> str | None:
        emr = await self._client("emr-containers")
        try:
            pages = emr.get_paginator("list_job_runs").paginate(
                virtualClusterId=self.settings.virtual_cluster_id, name=name
            )
            async for page in pages:
                for run in page.get("jobRuns", []):
                    if run.get("name") == name and run.get("clientToken") == token:
                        return str(run["id"])
        except ClientError as error:
            raise EmrJobError(f"could not list EMR job runs named '{name}': {_message(error)}") from error
        return None

    async def describe(self, run_id: str) -> JobRunState:
        """The run's current state, details and failure reason.

        Raises:
            EmrJobError: the run does not exist in the virtual cluster, or the call failed.
        """
        emr = await self._client("emr-containers")
        try:
            response = await emr.describe_job_run(
                id=run_id, virtualClusterId=self.settings.virtual_cluster_id
            )
        except ClientError as error:
            raise EmrJobError(f"could not describe EMR job run {run_id}: {_message(error)}") from error
        run = response["jobRun"]
        return JobRunState(
            run_id=run_id,
            state=run["state"],
            state_details=run.get("stateDetails"),
            failure_reason=run.get("failureReason"),
            finished_at=run.get("finishedAt"),
        )

    async def cancel(self, run_id: str) -> None:
        """Ask EMR to cancel the run.

        Raises:
            EmrJobError: the run does not exist or is no longer cancellable (it has ended).
        """
        emr = await self._client("emr-containers")
        try:
            await emr.cancel_job_run(id=run_id, virtualClusterId=self.settings.virtual_cluster_id)
        except ClientError as error:
            raise EmrJobError(f"could not cancel EMR job run {run_id}: {_message(error)}") from error

    async def wait(self, run_id: str, *, on_progress: ProgressCallback | None = None) -> JobRunState:
        """Poll the run until it completes; report each change of state to ``on_progress``.

        Args:
            run_id: the run to follow.
            on_progress: called (awaited if async) with the first state and every change after.

        Returns:
            The COMPLETED state.

        Raises:
            EmrJobFailed: the run ended FAILED or CANCELLED.
            EmrJobTimeout: still not ended after ``timeout_s``; the run has been cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        last: JobRunState | None = None
        while True:
            state = await self.describe(run_id)
            if on_progress is not None and state != last:
                outcome = on_progress(state)
                if inspect.isawaitable(outcome):
                    await outcome
            last = state
            if state.state == "COMPLETED":
                return state
            if state.terminal:
                raise EmrJobFailed(state, self.logs_uri(run_id))
            remaining = deadline - loop.time()
            if remaining <= 0:
                try:
                    await self.cancel(run_id)
                except EmrJobError:
                    final = await self.describe(run_id)  # it may have ended between the poll and the cancel
                    if final.state == "COMPLETED":
                        return final
                    raise EmrJobTimeout(final, self.settings.timeout_s) from None
                raise EmrJobTimeout(state, self.settings.timeout_s)
            await asyncio.sleep(min(self.settings.poll_interval_s, remaining))


def _message(error: ClientError) -> str:
    info = error.response.get("Error", {})
    return f"{info.get('Code', 'Error')}: {info.get('Message', str(error))}"
