"""Job submission and job status."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from pfactory.contracts.events import Envelope, JobKind, JobStatus, new_id
from pfactory.contracts.issues import ConfigError, ConfigIssue
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.errors import ApiError
from pfactory.gateway.feature_catalog import (
    FeatureSetRegistration,
    FeatureSetVersionRecord,
    RegistrationOutcome,
)
from pfactory.gateway.routes.common import (
    AUTH_ERRORS,
    INVALID,
    job_metrics_of,
    relay_of,
    settings_of,
    store_of,
)
from pfactory.gateway.schemas import (
    ErrorPublic,
    JobCreate,
    JobCreated,
    JobPublic,
    JobsPublic,
    ProgressPublic,
)
from pfactory.gateway.store import ApiKeyRecord, JobRecord
from pfactory.gateway.submission import ValidConfig, request_event, validate_submission

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

YAML_TYPES = frozenset({"application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml"})
PRODUCER = "gateway"

_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "A FeatureSet or Model config: raw YAML (`application/yaml` or `text/yaml`; `filename`, "
            "`start_ds`, `end_ds` as query parameters), or JSON with `config` or `config_yaml`."
        ),
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "application/yaml": {"schema": {"type": "string"}},
            "text/yaml": {"schema": {"type": "string"}},
        },
    }
}


def config_error(error: ConfigError, *, detail: str = "the config was refused") -> ApiError:
    """A 422 carrying the loader's issues."""
    issues = error.issues
    first = issues[0] if issues else None
    where = ""
    if first is not None:
        where = f"; first at {first.file or '<config>'}"
        if first.line is not None:
            where += f":{first.line}:{first.column or 1}"
        where += f" ({first.path}: {first.message})"
    summary = f"{len(issues)} problem{'s' if len(issues) != 1 else ''} in config{where}"
    return ApiError(
        422,
        "invalid_config",
        f"{detail}: {summary}",
        summary=summary,
        issues=[issue.as_dict() for issue in issues],
    )


def _body_issue(path: str, message: str, filename: str | None = None) -> ConfigError:
    return ConfigError(
        [
            ConfigIssue(
                file=filename, line=None, column=None, path=path, message=message, code="invalid_request"
            )
        ]
    )


async def _read_submission(request: Request, filename: str | None) -> tuple[ValidConfig, JobCreate | None]:
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if media_type in YAML_TYPES:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            issue = _body_issue("<root>", f"the body is not UTF-8 text: {error}", filename)
            raise config_error(issue) from error
        return validate_submission(yaml_text=text, filename=filename or "config.yaml"), None
    if media_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send application/yaml, text/yaml or application/json, not {media_type!r}",
        )
    try:
        body = JobCreate.model_validate_json(raw or b"{}")
    except ValidationError as error:
        raise config_error(
            ConfigError(
                [
                    ConfigIssue(
                        file=None,
                        line=None,
                        column=None,
                        path=".".join(str(part) for part in issue["loc"]) or "<root>",
                        message=issue["msg"],
                        code="invalid_request",
                    )
                    for issue in error.errors(include_url=False)
                ]
            ),
            detail="the request body was refused",
        ) from error
    name = body.filename or filename
    if body.config_yaml is not None:
        return validate_submission(yaml_text=body.config_yaml, filename=name or "config.yaml"), body
    return validate_submission(data=body.config, filename=name), body


def job_public(job: JobRecord) -> JobPublic:
    """The public view of a stored job."""
    return JobPublic(
        job_id=job.job_id,
        kind=job.kind,
        name=job.name,
        status=job.status,
        terminal=job.status.terminal,
        stage=job.stage,
        progress=ProgressPublic.model_validate(job.progress) if job.progress else None,
        reason=job.reason,
        result=job.result,
        submitted_by=job.submitted_by,
        request_event_id=job.request_event_id,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    summary="Submit a FeatureSet or Model config",
    description=(
        "Validates the config, stores the job and its request event in one transaction, and answers "
        "202 at once; the event is published by the outbox relay (it survives a broker outage). "
        "A FeatureSet becomes a `MaterialisationRequested`, a Model a `TrainRequested`. "
        "Needs the `submit` scope."
    ),
    responses={
        **AUTH_ERRORS,
        **INVALID,
        409: {
            "model": ErrorPublic,
            "description": "A FeatureSet's name + version is already registered with a different config.",
        },
        415: {"model": ErrorPublic, "description": "The body is neither YAML nor JSON."},
    },
    openapi_extra=_SUBMIT_BODY,
)
async def submit_job(
    request: Request,
    response: Response,
    key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.SUBMIT))],
    filename: Annotated[str | None, Query(description="File name reported in errors (YAML bodies).")] = None,
    start_ds: Annotated[date | None, Query(description="FeatureSet only: first day to materialise.")] = None,
    end_ds: Annotated[date | None, Query(description="FeatureSet only: last day (inclusive).")] = None,
) -> JobCreated:
    try:
        config, body = await _read_submission(request, filename)
    except ConfigError as error:
        raise config_error(error) from error
    start = body.start_ds if body and body.start_ds else start_ds
    end = body.end_ds if body and body.end_ds else end_ds
    if config.kind is not JobKind.MATERIALISE and (start or end):
        raise config_error(_body_issue("start_ds", "start_ds/end_ds apply to FeatureSet configs only"))
    if start and end and end < start:
        raise config_error(_body_issue("end_ds", f"end_ds {end} is before start_ds {start}"))

    return await accept_submission(request, response, config, submitted_by=key.name, start=start, end=end)


async def accept_submission(
    request: Request,
    response: Response,
    config: ValidConfig,
    *,
    submitted_by: str | None,
    start: date | None,
    end: date | None,
    job_id: str | None = None,
) -> JobCreated:
    """Store a validated config's job with its request event (one transaction) and wake the relay.

    A FeatureSet is first registered in the feature-set catalog; a different config under a
    registered name + version is refused with 409 before any job exists. ``job_id`` (an idempotency
    key) names the job; a new id otherwise.
    """
    store = store_of(request)
    job_id = job_id or new_id()
    now = datetime.now(UTC)
    if config.kind is JobKind.MATERIALISE:
        registration = FeatureSetRegistration.from_document(
            config.document, registered_by=submitted_by, registered_at=now, job_id=job_id
        )
        result = await store.register_feature_set(registration)
        if result.outcome is RegistrationOutcome.CONFLICT:
            raise version_conflict(registration, result.record)
    event = request_event(config, job_id=job_id, submitted_by=submitted_by, start_ds=start, end_ds=end)
    envelope = Envelope.wrap(event, producer=PRODUCER, correlation_id=job_id)
    job = JobRecord(
        job_id=job_id,
        kind=config.kind,
        name=config.name,
        status=JobStatus.ACCEPTED,
        config=config.document,
        submitted_by=submitted_by,
        created_at=now,
        updated_at=now,
        request_event_id=envelope.event_id,
    )
    await store.accept_job(job, envelope, event.TOPIC, event.partition_key())
    job_metrics_of(request).submitted(config.kind)
    relay = relay_of(request)
    if relay is not None:
        relay.wake()
    base = (settings_of(request).public_base_url or "").rstrip("/")
    location = f"{base}/v1/jobs/{job_id}"
    response.headers["Location"] = location
    return JobCreated(
        job_id=job_id, kind=config.kind, name=config.name, status=JobStatus.ACCEPTED, location=location
    )


def version_conflict(registration: FeatureSetRegistration, held: FeatureSetVersionRecord) -> ApiError:
    """409: the name + version already holds another config (versions are immutable)."""
    held_spec = (held.config or {}).get("spec", {})
    new_spec = registration.config.get("spec", {})
    differing = sorted(k for k in set(held_spec) | set(new_spec) if held_spec.get(k) != new_spec.get(k))
    ref = f"{registration.name}@{registration.version}"
    return ApiError(
        409,
        "feature_set_version_conflict",
        f"feature set {ref} is already registered with a different config (spec differs in: "
        f"{', '.join(differing) or 'name'}); versions are immutable: bump spec.version for the change, "
        f"or resubmit the registered config (GET /v1/feature-sets/{registration.name}/versions/"
        f"{registration.version})",
        feature_set=registration.name,
        version=registration.version,
        registered_config_hash=held.config_hash,
        submitted_config_hash=registration.config_hash,
        differing_spec_keys=differing,
    )


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = text.partition(":")
        if prefix != "seq":
            raise ValueError(text)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise config_error(
            _body_issue("cursor", "not a cursor this API returned (use next_cursor as is)"),
            detail="the request was refused",
        ) from error


@router.get(
    "",
    response_model=JobsPublic,
    summary="List jobs, newest first",
    description="Filters combine with AND. Keyset pagination: pass `next_cursor` back as `cursor`. "
    "Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def list_jobs(
    request: Request,
    _key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))],
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    kind: Annotated[JobKind | None, Query(description="Only jobs of this kind.")] = None,
    name: Annotated[str | None, Query(description="Only jobs of the config with this metadata.name.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> JobsPublic:
    page, next_cursor = await page_of_jobs(
        request, status=status, kind=kind, name=name, limit=limit, cursor=cursor
    )
    return JobsPublic(data=[job_public(job) for job in page], count=len(page), next_cursor=next_cursor)


async def page_of_jobs(
    request: Request,
    *,
    status: JobStatus | None,
    kind: JobKind | None,
    name: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[JobRecord], str | None]:
    """One keyset page of jobs, newest first, and the cursor of the next page (None on the last)."""
    before = _decode_cursor(cursor) if cursor else None
    jobs = await store_of(request).list_jobs(
        status=status, kind=kind, name=name, limit=limit + 1, before_seq=before
    )
    page = jobs[:limit]
    return page, (_encode_cursor(page[-1].seq) if len(jobs) > limit else None)


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="Get a job's state",
    description="Status, stage, progress, the reason of a failure, and timestamps. Needs the `read` scope.",
    responses={**AUTH_ERRORS, 404: {"model": ErrorPublic, "description": "No job has this id."}},
)
async def get_job(
    request: Request, job_id: str, _key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
) -> JobPublic:
    job = await store_of(request).get_job(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id '{job_id}' (list jobs with GET /v1/jobs)")
    return job_public(job)
