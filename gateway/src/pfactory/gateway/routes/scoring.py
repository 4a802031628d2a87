"""Scoring runs for schedulers: ``POST /v1/scoring-runs`` starts a batch run, ``GET`` follows it.

A run is a job of kind ``score``: its row and its ``ScoringRequested`` are stored in one transaction
and published by the outbox relay; the scorer's ``JobStatusChanged`` events move it forward.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response

from pfactory.contracts.events import Envelope, JobKind, JobStatus, ScoringRequested, new_id
from pfactory.gateway import registry_access as ra
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.errors import ApiError
from pfactory.gateway.routes.common import (
    AUTH_ERRORS,
    INVALID,
    idempotency_lock,
    job_metrics_of,
    relay_of,
    settings_of,
    store_of,
)
from pfactory.gateway.routes.jobs import PRODUCER, page_of_jobs
from pfactory.gateway.schemas import ErrorPublic, ProgressPublic
from pfactory.gateway.scoring_schemas import (
    RUN_ID_PATTERN,
    ScoringRunCreate,
    ScoringRunCreated,
    ScoringRunPublic,
    ScoringRunsPublic,
    UnknownModelPublic,
)
from pfactory.gateway.store import ApiKeyRecord, JobRecord
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.model import PairKey

router = APIRouter(prefix="/v1/scoring-runs", tags=["scoring-runs"])

_IDEMPOTENCY_NAMESPACE = "pf:scoring-run/"
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    **INVALID,
    404: {"model": UnknownModelPublic, "description": "The model, feature set, version or alias is unknown."},
    409: {
        "model": ErrorPublic,
        "description": "Several feature sets and none chosen; no live version; or the run id / "
        "Idempotency-Key already names a different request.",
    },
}


async def _resolve_target(request: Request, body: ScoringRunCreate) -> PairKey:
    """The pair to score, after checking the version, alias or live version exists (advice otherwise)."""
    catalog = ra.catalog_of(request)
    pairs = await catalog.list_pairs(body.model)
    if not pairs:
        models = (await catalog.list_models(limit=50)).items
        listed = ", ".join(models) if models else "none yet"
        raise ApiError(
            404,
            "model_not_found",
            f"no model named '{body.model}' is registered (registered models: {listed}); "
            "check the 'model' field, or list them with GET /v1/models",
            models=models,
        )
    choices = [ra.feature_set_text(pair.feature_set) for pair in pairs]
    if body.feature_set is None and len(pairs) > 1:
        raise ApiError(
            409,
            "ambiguous_feature_set",
            f"model '{body.model}' is registered on {len(pairs)} feature sets ({', '.join(choices)}); "
            f'choose one with "feature_set", e.g. "feature_set": "{choices[0]}"',
            feature_sets=choices,
        )
    pair = (
        pairs[0] if body.feature_set is None else await ra.resolve_pair(catalog, body.model, body.feature_set)
    )
    index = ra.registry_of(request).index
    where = f"model '{body.model}' on {ra.feature_set_text(pair.feature_set)}"
    try:
        if body.version is not None:
            await index.get(pair, body.version)
        elif body.alias is not None:
            await index.get_by_alias(pair, body.alias)
        elif await index.get_live(pair) is None:
            raise ApiError(
                409,
                "no_live_version",
                f'{where} has no live version to score; pass "version" or "alias", or put a version '
                f"live (pfactory models promote)",
            )
    except VersionNotFoundError as error:
        code, what = ("version_not_found", f"version {body.version}")
        if body.alias is not None:
            code, what = ("alias_not_found", f"alias '{body.alias}'")
        raise ApiError(
            404,
            code,
            f"{where} has no {what}; list its versions with GET {ra.versions_path(body.model, pair)}",
            feature_sets=choices,
        ) from error
    return pair


def _run_id(body: ScoringRunCreate, idempotency_key: str | None) -> tuple[str, bool]:
    """The run's id and whether the client chose it (so it may name an existing run)."""
    if body.run_id is not None and idempotency_key is not None:
        raise ra.invalid_parameter(
            "Idempotency-Key", "send either the Idempotency-Key header or 'run_id' in the body, not both"
        )
    if body.run_id is not None:
        return body.run_id, True
    if idempotency_key is not None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, _IDEMPOTENCY_NAMESPACE + idempotency_key)), True
    return new_id(), False


def run_public(job: JobRecord) -> ScoringRunPublic:
    """The public view of a scoring job."""
    asked = job.config
    return ScoringRunPublic(
        run_id=job.job_id,
        model=job.name,
        feature_set=asked.get("resolved_feature_set") or asked.get("feature_set"),
        ds=date.fromisoformat(asked["ds"]),
        version=asked.get("version"),
        alias=asked.get("alias"),
        status=job.status,
        terminal=job.status.terminal,
        stage=job.stage,
        progress=ProgressPublic.model_validate(job.progress) if job.progress else None,
        reason=job.reason,
        result=job.result,
        submitted_by=job.submitted_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def _created(job: JobRecord, location: str, *, replayed: bool) -> ScoringRunCreated:
    view = run_public(job)
    return ScoringRunCreated(
        run_id=view.run_id,
        model=view.model,
        feature_set=view.feature_set or "",
        ds=view.ds,
        status=view.status,
        replayed=replayed,
        location=location,
    )


def _replay(existing: JobRecord, asked: dict[str, Any], run_id: str) -> None:
    """Refuse an id that already names another request (a replay must ask for the same run)."""
    held = {key: existing.config.get(key) for key in asked}
    if existing.kind is JobKind.SCORE and held == asked:
        return
    differing = sorted(key for key in asked if held.get(key) != asked[key]) or ["kind"]
    raise ApiError(
        409,
        "idempotency_conflict",
        f"run id '{run_id}' already names a different request (differs in: {', '.join(differing)}); "
        "use a new run_id / Idempotency-Key for a different run",
        run_id=run_id,
        differing=differing,
    )


@router.post(
    "",
    status_code=202,
    response_model=ScoringRunCreated,
    summary="Start a batch scoring run",
    description=(
        "Checks the model and its version, alias or live version in the registry, stores the run and its "
        "`ScoringRequested` in one transaction and answers 202 with the run id and `Location`; the outbox "
        "relay publishes the event (it survives a broker outage). With `run_id` or an `Idempotency-Key` "
        "header a retry returns the same run (200, `replayed: true`) instead of starting a second one. "
        "Needs the `submit` scope."
    ),
    responses={
        **_SUBMIT_ERRORS,
        200: {"model": ScoringRunCreated, "description": "An existing run (replay)."},
    },
)
async def start_scoring_run(
    request: Request,
    response: Response,
    body: Annotated[ScoringRunCreate, Body()],
    key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.SUBMIT))],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=RUN_ID_PATTERN,
            description="Retries with the same key return the first run instead of starting another.",
        ),
    ] = None,
) -> ScoringRunCreated:
    if problem := body.both_version_and_alias():
        raise ra.invalid_parameter("alias", problem)
    run_id, chosen = _run_id(body, idempotency_key)
    asked = body.request_document()
    base = (settings_of(request).public_base_url or "").rstrip("/")
    location = f"{base}/v1/scoring-runs/{run_id}"
    response.headers["Location"] = location
    store = store_of(request)
    async with idempotency_lock(request):
        existing = await store.get_job(run_id) if chosen else None
        if existing is not None:
            _replay(existing, asked, run_id)
            response.status_code = 200
            return _created(existing, location, replayed=True)
        pair = await _resolve_target(request, body)
        event = ScoringRequested(
            job_id=run_id,
            model_name=body.model,
            feature_set=pair.feature_set,
            version=body.version,
            alias=body.alias,
            ds=body.ds,
        )
        envelope = Envelope.wrap(event, producer=PRODUCER, correlation_id=run_id)
        now = datetime.now(UTC)
        job = JobRecord(
            job_id=run_id,
            kind=JobKind.SCORE,
            name=body.model,
            status=JobStatus.ACCEPTED,
            config={**asked, "resolved_feature_set": ra.feature_set_text(pair.feature_set)},
            submitted_by=key.name,
            created_at=now,
            updated_at=now,
            request_event_id=envelope.event_id,
        )
        await store.accept_job(job, envelope, event.TOPIC, event.partition_key())
    job_metrics_of(request).submitted(JobKind.SCORE)
    relay = relay_of(request)
    if relay is not None:
        relay.wake()
    return _created(job, location, replayed=False)


@router.get(
    "",
    response_model=ScoringRunsPublic,
    summary="List scoring runs, newest first",
    description="Filters combine with AND. Keyset pagination: pass `next_cursor` back as `cursor`. "
    "Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def list_scoring_runs(
    request: Request,
    _key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))],
    model: Annotated[str | None, Query(description="Only runs of this model.")] = None,
    status: Annotated[JobStatus | None, Query(description="Only runs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> ScoringRunsPublic:
    page, next_cursor = await page_of_jobs(
        request, status=status, kind=JobKind.SCORE, name=model, limit=limit, cursor=cursor
    )
    return ScoringRunsPublic(data=[run_public(job) for job in page], count=len(page), next_cursor=next_cursor)


@router.get(
    "/{run_id}",
    response_model=ScoringRunPublic,
    summary="Get a scoring run's state",
    description="Status, stage, progress, the reason of a failure, and (once succeeded) the scorer's result: "
    "predictions_uri, rows, drift, version. Needs the `read` scope.",
    responses={**AUTH_ERRORS, 404: {"model": ErrorPublic, "description": "No scoring run has this id."}},
)
async def get_scoring_run(
    request: Request, run_id: str, _key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
) -> ScoringRunPublic:
    job = await store_of(request).get_job(run_id)
    if job is None or job.kind is not JobKind.SCORE:
        raise ApiError(
            404, "run_not_found", f"no scoring run with id '{run_id}' (list them with GET /v1/scoring-runs)"
        )
    return run_public(job)
