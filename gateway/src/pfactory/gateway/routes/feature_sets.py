"""The feature-set catalog: versions, their days, partition reports, column lineage; materialise again."""

from __future__ import annotations

import base64
import binascii
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from pfactory.contracts.events import JobKind
from pfactory.contracts.issues import ConfigError
from pfactory.gateway import registry_access as ra
from pfactory.gateway.adapters.partitions import PartitionReader, join_root, partition_path
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.errors import ApiError
from pfactory.gateway.feature_catalog import FeatureSetVersionRecord, PartitionRecord, version_sort_key
from pfactory.gateway.feature_schemas import (
    DayPublic,
    DaysPublic,
    FeatureLineagePublic,
    FeaturePublic,
    FeatureSetPublic,
    FeatureSetsPublic,
    FeatureSetVersionPublic,
    FeatureSetVersionsPublic,
    FeatureSetVersionSummaryPublic,
    LineagePublic,
    MaterialisationCreate,
    PartitionDetailPublic,
    PartitionsSummaryPublic,
)
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID, idempotency_lock, settings_of, store_of
from pfactory.gateway.routes.jobs import accept_submission, config_error
from pfactory.gateway.schemas import ErrorPublic, JobCreated
from pfactory.gateway.scoring_schemas import RUN_ID_PATTERN
from pfactory.gateway.store import ApiKeyRecord
from pfactory.gateway.submission import validate_submission

router = APIRouter(prefix="/v1/feature-sets", tags=["feature-sets"])
Reader = Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
Submitter = Annotated[ApiKeyRecord, Depends(require_scope(Scope.SUBMIT))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such feature set or version."}
}
MAX_RANGE_DAYS = 3660
"""The longest ``from``..``to`` a partitions listing spans."""


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(f"name:{name}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ra.invalid_parameter("cursor", "not a cursor this API returned") from error
    prefix, _, name = text.partition(":")
    if prefix != "name":
        raise ra.invalid_parameter("cursor", "not a cursor this API returned")
    return name


def _version_url(name: str, version: str) -> str:
    return f"/v1/feature-sets/{name}/versions/{version}"


def _summary(record: FeatureSetVersionRecord) -> FeatureSetVersionSummaryPublic:
    return FeatureSetVersionSummaryPublic(
        name=record.name,
        version=record.version,
        config_hash=record.config_hash,
        registered_by=record.registered_by,
        registered_at=record.registered_at,
        partitions=PartitionsSummaryPublic(
            good_days=record.good_days,
            failed_days=record.failed_days,
            first_ds=record.first_ds,
            last_ds=record.last_ds,
            last_materialised_at=record.last_materialised_at,
        ),
        url=_version_url(record.name, record.version),
    )


async def _version_or_404(request: Request, name: str, version: str) -> FeatureSetVersionRecord:
    record = await store_of(request).get_feature_set_version(name, version)
    if record is None:
        known = await store_of(request).list_feature_set_versions(name)
        hint = (
            f"known versions: {', '.join(sorted((v.version for v in known), key=version_sort_key))}"
            if known
            else "list feature sets with GET /v1/feature-sets"
        )
        raise ApiError(404, "feature_set_version_not_found", f"no feature set {name}@{version} ({hint})")
    return record


@router.get(
    "",
    response_model=FeatureSetsPublic,
    summary="List feature sets",
    description="Feature sets by name, each with its versions: registered by FeatureSet submissions, or "
    "first seen in materialisation events. Keyset pagination: pass `next_cursor` back as `cursor`. "
    "Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def list_feature_sets(
    request: Request,
    _key: Reader,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> FeatureSetsPublic:
    after = _decode_cursor(cursor) if cursor else None
    found = await store_of(request).list_feature_sets(limit=limit + 1, after_name=after)
    page = found[:limit]
    data = []
    for item in page:
        versions = sorted(item.versions, key=version_sort_key)
        data.append(
            FeatureSetPublic(
                name=item.name,
                versions=versions,
                latest_version=versions[-1],
                registered_at=item.registered_at,
                url=f"/v1/feature-sets/{item.name}",
            )
        )
    next_cursor = _encode_cursor(page[-1].name) if len(found) > limit else None
    return FeatureSetsPublic(data=data, count=len(data), next_cursor=next_cursor)


@router.get(
    "/{name}",
    response_model=FeatureSetVersionsPublic,
    summary="A feature set's versions",
    description="Every version, oldest first, with what materialisation reported. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
async def get_feature_set(request: Request, name: str, _key: Reader) -> FeatureSetVersionsPublic:
    versions = await store_of(request).list_feature_set_versions(name)
    if not versions:
        raise ApiError(
            404, "feature_set_not_found", f"no feature set '{name}' (list them with GET /v1/feature-sets)"
        )
    ordered = sorted(versions, key=lambda v: version_sort_key(v.version))
    return FeatureSetVersionsPublic(name=name, data=[_summary(v) for v in ordered], count=len(ordered))


@router.get(
    "/{name}/versions/{version}",
    response_model=FeatureSetVersionPublic,
    summary="A feature-set version",
    description="Its normalised config, declared features and partitions summary. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
async def get_feature_set_version(
    request: Request, name: str, version: str, _key: Reader
) -> FeatureSetVersionPublic:
    record = await _version_or_404(request, name, version)
    url = _version_url(name, version)
    return FeatureSetVersionPublic(
        **_summary(record).model_dump(),
        config=record.config,
        features=[FeaturePublic.model_validate(f) for f in record.features],
        job_id=record.job_id,
        partitions_url=f"{url}/partitions",
        lineage_url=f"{url}/lineage",
    )


def _day(record: PartitionRecord) -> DayPublic:
    return DayPublic(
        ds=record.ds,
        status=record.status,
        uri=record.uri,
        rows=record.rows,
        validation=record.validation or None,
        reason=record.reason,
        job_id=record.job_id,
        recorded_at=record.occurred_at,
    )


@router.get(
    "/{name}/versions/{version}/partitions",
    response_model=DaysPublic,
    summary="A version's days: good, failed or missing",
    description="Every day from `from` to `to` (inclusive) with the status the materialisation events "
    "reported: good (validated and written), failed (rejected by validation or the run), or missing. "
    "Without bounds, the recorded days' own range. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID, **NOT_FOUND},
)
async def list_partitions(
    request: Request,
    name: str,
    version: str,
    _key: Reader,
    start: Annotated[date | None, Query(alias="from", description="First day (YYYY-MM-DD).")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last day, inclusive.")] = None,
) -> DaysPublic:
    await _version_or_404(request, name, version)
    if start and end and end < start:
        raise ra.invalid_parameter("to", f"{end} is before from={start}")
    recorded = await store_of(request).list_partitions(name, version, start=start, end=end)
    first = start or (recorded[0].ds if recorded else None)
    last = end or (recorded[-1].ds if recorded else None)
    if first is not None and last is None:
        last = first if not recorded else max(first, recorded[-1].ds)
    if last is not None and first is None:
        first = last if not recorded else min(last, recorded[0].ds)
    days: list[DayPublic] = []
    if first is not None and last is not None:
        if (last - first).days >= MAX_RANGE_DAYS:
            raise ra.invalid_parameter("to", f"a listing spans at most {MAX_RANGE_DAYS} days")
        by_day = {record.ds: record for record in recorded}
        span = (last - first).days + 1
        for offset in range(span):
            ds = first + timedelta(days=offset)
            held = by_day.get(ds)
            days.append(_day(held) if held else DayPublic(ds=ds, status="missing"))
    counts = {status: sum(d.status == status for d in days) for status in ("good", "failed", "missing")}
    return DaysPublic(
        name=name,
        version=version,
        start_ds=first,
        end_ds=last,
        data=days,
        count=len(days),
        good=counts["good"],
        failed=counts["failed"],
        missing=counts["missing"],
    )


@router.get(
    "/{name}/versions/{version}/partitions/{ds}",
    response_model=PartitionDetailPublic,
    summary="A day's statistics and validation report",
    description="Read from the partition store (`PF_GATEWAY_FEATURE_STORE_ROOT`, else the URI the "
    "materialisation event recorded): the `_SUCCESS` or `_FAILED` marker, `_stats.json` and "
    "`_validation.json` (a failed day's come from its quarantine folder). Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID, **NOT_FOUND},
)
async def get_partition(
    request: Request, name: str, version: str, ds: date, _key: Reader
) -> PartitionDetailPublic:
    record = await _version_or_404(request, name, version)
    held = await store_of(request).get_partition(name, version, ds)
    settings = settings_of(request)
    root = settings.feature_store_root
    uri = join_root(root, partition_path(name, version, ds)) if root else (held.uri if held else None)
    if uri is None:
        if held is None:
            raise ApiError(
                404,
                "partition_not_found",
                f"no day {ds} of {name}@{version} was materialised (see its partitions listing)",
            )
        return PartitionDetailPublic(
            name=name,
            version=version,
            ds=ds,
            status="missing",
            recorded_status=held.status,
            uri=None,
            rows=held.rows,
            marker=None,
            statistics=None,
            validation=None,
            config_hash_matches=None,
            note="the day failed and no partition store root is configured (PF_GATEWAY_FEATURE_STORE_ROOT); "
            f"reason: {held.reason}",
        )
    reader = PartitionReader(
        endpoint_url=settings.feature_store_endpoint_url, region=settings.feature_store_region
    )
    try:
        files = await reader.read_day_async(uri)
    except OSError as error:
        raise ApiError(
            502, "partition_store_unreachable", f"the partition store could not be read at {uri}: {error}"
        ) from error
    if files.status == "missing" and held is None:
        raise ApiError(404, "partition_not_found", f"no day {ds} of {name}@{version} at {uri}")
    marker = files.marker or {}
    marker_hash = marker.get("config_hash")
    matches = None if marker_hash is None or record.config_hash is None else marker_hash == record.config_hash
    note = None
    if held is not None and files.status != held.status:
        note = f"the events reported the day {held.status}, the partition store shows it {files.status}"
    elif matches is False:
        note = "the partition was written from another config than the registered one"
    rows = marker.get("rows") if isinstance(marker.get("rows"), int) else (held.rows if held else None)
    return PartitionDetailPublic(
        name=name,
        version=version,
        ds=ds,
        status=files.status,
        recorded_status=held.status if held else None,
        uri=uri,
        rows=rows,
        marker=files.marker,
        statistics=files.statistics,
        validation=files.validation,
        config_hash_matches=matches,
        note=note,
    )


@router.get(
    "/{name}/versions/{version}/lineage",
    response_model=LineagePublic,
    summary="A version's column lineage",
    description="Each feature with the source columns (`<source>.<column>`) it derives from: parsed from "
    "the rendered SQL by the materialiser (derived) once a day was materialised, else as the config "
    "declares them. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
async def get_lineage(request: Request, name: str, version: str, _key: Reader) -> LineagePublic:
    record = await _version_or_404(request, name, version)
    lineage = await store_of(request).feature_lineage(name, version)
    data = [
        FeatureLineagePublic(feature=feature, source_columns=columns, origin=origin)
        for feature, (origin, columns) in sorted(lineage.items())
    ]
    note = None
    if not data:
        note = "no lineage yet: no day was materialised and the config declares no source_columns"
    elif data[0].origin == "declared" and record.good_days == 0:
        note = "declared lineage only: no day was materialised yet"
    return LineagePublic(name=name, version=version, data=data, count=len(data), note=note)


@router.post(
    "/{name}/versions/{version}/materialisations",
    status_code=202,
    response_model=JobCreated,
    summary="Materialise or backfill days of a registered version",
    description="Starts a materialise job from the version's registered config for `start_ds`..`end_ds` "
    "(the same job and outbox path as `POST /v1/jobs`). With an `Idempotency-Key` header the key is the "
    "job id, and a retry with it returns that job (200, `replayed: true`) instead of starting another. "
    "Needs the `submit` scope.",
    responses={
        **AUTH_ERRORS,
        **INVALID,
        **NOT_FOUND,
        200: {"model": JobCreated, "description": "The job an Idempotency-Key already started (replay)."},
        409: {
            "model": ErrorPublic,
            "description": "The version was never registered with a config, or the key names another job.",
        },
    },
)
async def materialise(
    request: Request,
    response: Response,
    name: str,
    version: str,
    body: MaterialisationCreate,
    key: Submitter,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=RUN_ID_PATTERN,
            description="Retries with the same key return the first job instead of starting another.",
        ),
    ] = None,
) -> JobCreated:
    async with idempotency_lock(request):
        if idempotency_key is not None:
            existing = await store_of(request).get_job(idempotency_key)
            if existing is not None:
                if existing.kind is not JobKind.MATERIALISE or existing.name != name:
                    raise ApiError(
                        409,
                        "idempotency_key_reused",
                        f"Idempotency-Key {idempotency_key} already names a {existing.kind} job of "
                        f"{existing.name}; use a new key for this request",
                    )
                response.status_code = 200
                base = (settings_of(request).public_base_url or "").rstrip("/")
                response.headers["Location"] = location = f"{base}/v1/jobs/{existing.job_id}"
                return JobCreated(
                    job_id=existing.job_id,
                    kind=existing.kind,
                    name=existing.name,
                    status=existing.status,
                    location=location,
                    replayed=True,
                )
        return await _materialise(request, response, name, version, body, key, idempotency_key)


async def _materialise(
    request: Request,
    response: Response,
    name: str,
    version: str,
    body: MaterialisationCreate,
    key: ApiKeyRecord,
    job_id: str | None,
) -> JobCreated:
    record = await _version_or_404(request, name, version)
    if record.config is None:
        raise ApiError(
            409,
            "feature_set_config_unknown",
            f"{name}@{version} is known only from materialisation events; submit its config with "
            "POST /v1/jobs once (it is then registered)",
        )
    end = body.end_ds or body.start_ds
    if end < body.start_ds:
        raise ra.invalid_parameter("end_ds", f"end_ds {end} is before start_ds {body.start_ds}")
    try:
        config = validate_submission(data=record.config, filename=f"{name}@{version}")
    except ConfigError as error:
        raise config_error(error, detail="the registered config no longer loads") from error
    return await accept_submission(
        request, response, config, submitted_by=key.name, start=body.start_ds, end=end, job_id=job_id
    )
