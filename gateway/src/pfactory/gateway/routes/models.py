"""The model registry: models, pairs and versions; status changes, artifact download, model cards.

Reads need the ``read`` scope, changes the ``admin`` scope. Every change is published as a
``ModelVersionChanged`` by the registry feed, which derives it from the version's audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from pfactory.gateway import registry_access as ra
from pfactory.gateway.artifact_stream import digest_of, mismatch_message, open_checked
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.cards import MEDIA_TYPES, CardFormat, negotiate, render_card
from pfactory.gateway.errors import ApiError
from pfactory.gateway.registry_schemas import (
    AmbiguousFeatureSetPublic,
    IntegrityErrorPublic,
    ModelPublic,
    ModelsPublic,
    TransitionErrorPublic,
    VersionPublic,
    VersionsPublic,
    VersionUpdate,
)
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID, settings_of
from pfactory.gateway.schemas import ErrorPublic
from pfactory.gateway.store import ApiKeyRecord
from pfactory.registry.errors import ArtifactNotFoundError, IllegalTransitionError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus

router = APIRouter(prefix="/v1/models", tags=["models"])
Reader = Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
Admin = Annotated[ApiKeyRecord, Depends(require_scope(Scope.ADMIN))]
FeatureSet = Annotated[
    str | None,
    Query(
        description="The pair's feature set as <name>@<version>; needed when the model is registered on several.",
        examples=["credit_features@3"],
    ),
]
VersionNumber = Annotated[int, Path(ge=1, description="The version number within the pair.")]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorPublic,
        "description": "No such model, feature set, version or alias (the answer says how to list them).",
    },
}
PAIR_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    **NOT_FOUND,
    **INVALID,
    409: {
        "model": AmbiguousFeatureSetPublic,
        "description": "Several feature sets; choose one with ?feature_set=.",
    },
}
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **PAIR_ERRORS,
    409: {
        "model": TransitionErrorPublic,
        "description": "The lifecycle refused the change (illegal transition, failed gates without override), "
        "or the feature set is ambiguous.",
    },
}


async def resolve(request: Request, name: str, feature_set: str | None) -> PairKey:
    return await ra.resolve_pair(ra.catalog_of(request), name, feature_set)


async def _version(request: Request, name: str, version: int, feature_set: str | None) -> ModelVersion:
    pair = await resolve(request, name, feature_set)
    with ra.registry_errors(pair, version=version):
        return await ra.registry_of(request).index.get(pair, version)


def _bad_cursor(error: Exception) -> ApiError:
    return ra.invalid_parameter("cursor", f"not a cursor this API returned (use next_cursor as is): {error}")


@router.get(
    "",
    response_model=ModelsPublic,
    summary="List registered models",
    description="Models with a committed version, by name, each with its pairs (feature sets), newest and "
    "live version. Keyset pagination: pass `next_cursor` back as `cursor`. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def list_models(
    request: Request, _key: Reader, limit: Limit = 50, cursor: Cursor = None
) -> ModelsPublic:
    catalog, index = ra.catalog_of(request), ra.registry_of(request).index
    try:
        page = await catalog.list_models(limit=limit, cursor=cursor)
    except (ValueError, IndexError, TypeError) as error:
        raise _bad_cursor(error) from error
    models = [await ra.model_public(index, name, await catalog.list_pairs(name)) for name in page.items]
    return ModelsPublic(data=models, count=len(models), next_cursor=page.next_cursor)


@router.get(
    "/{name}",
    response_model=ModelPublic,
    summary="Get a model and its pairs",
    description="Every feature set the model is registered on, with the newest and live version of each. "
    "Needs the `read` scope.",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
async def get_model(request: Request, name: str, _key: Reader) -> ModelPublic:
    pairs = await ra.catalog_of(request).list_pairs(name)
    if not pairs:
        raise ApiError(
            404,
            "model_not_found",
            f"no model named '{name}' is registered; list the models with GET /v1/models",
        )
    return await ra.model_public(ra.registry_of(request).index, name, pairs)


@router.get(
    "/{name}/versions",
    response_model=VersionsPublic,
    summary="List a model's versions",
    description="Versions of one pair, by number (`sort=-version`, the default, is newest first), optionally "
    "of one status. Needs the `read` scope.",
    responses=PAIR_ERRORS,
)
async def list_versions(
    request: Request,
    name: str,
    _key: Reader,
    feature_set: FeatureSet = None,
    status: Annotated[VersionStatus | None, Query(description="Only versions in this status.")] = None,
    sort: Annotated[Literal["version", "-version"], Query(description="By version number.")] = "-version",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> VersionsPublic:
    pair = await resolve(request, name, feature_set)
    try:
        page = await ra.registry_of(request).index.list_versions(
            pair, status=status, newest_first=sort == "-version", limit=limit, cursor=cursor
        )
    except (ValueError, IndexError, TypeError) as error:
        raise _bad_cursor(error) from error
    data = [ra.version_summary(record) for record in page.items]
    return VersionsPublic(data=data, count=len(data), next_cursor=page.next_cursor)


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionPublic,
    summary="Get a version",
    description="Everything the registry holds: artifact, provenance, metrics, fairness, gates, lineage, "
    "status, aliases and the audit trail. Needs the `read` scope.",
    responses=PAIR_ERRORS,
)
async def get_version(
    request: Request, name: str, version: VersionNumber, _key: Reader, feature_set: FeatureSet = None
) -> VersionPublic:
    return ra.version_public(await _version(request, name, version, feature_set))


@router.patch(
    "/{name}/versions/{version}",
    response_model=VersionPublic,
    summary="Change a version's status",
    description="Only legal transitions (candidate → approved → live → archived; rejected is final). A version "
    "that failed its gates becomes approved or live only with `override: true` and a reason, both recorded. "
    "Asking for the status it already has changes nothing. Needs the `admin` scope.",
    responses=CHANGE_ERRORS,
)
async def update_version(
    request: Request,
    name: str,
    version: VersionNumber,
    body: VersionUpdate,
    key: Admin,
    feature_set: FeatureSet = None,
) -> VersionPublic:
    record = await _version(request, name, version, feature_set)
    if record.status is body.status:
        return ra.version_public(record)
    return ra.version_public(
        await _transition(request, record, body.status, key, reason=body.reason, override=body.override)
    )


@router.delete(
    "/{name}/versions/{version}",
    response_model=VersionPublic,
    summary="Archive a version",
    description="Versions are never deleted: this archives one (recorded in its audit trail). Archiving an "
    "archived version changes nothing. Needs the `admin` scope.",
    responses=CHANGE_ERRORS,
)
async def archive_version(
    request: Request,
    name: str,
    version: VersionNumber,
    key: Admin,
    feature_set: FeatureSet = None,
    reason: Annotated[str | None, Query(max_length=2000, description="Why; recorded.")] = None,
) -> VersionPublic:
    record = await _version(request, name, version, feature_set)
    if record.status is VersionStatus.ARCHIVED:
        return ra.version_public(record)
    return ra.version_public(await _transition(request, record, VersionStatus.ARCHIVED, key, reason=reason))


async def _transition(
    request: Request,
    record: ModelVersion,
    to: VersionStatus,
    key: ApiKeyRecord,
    *,
    reason: str | None,
    override: bool = False,
) -> ModelVersion:
    index = ra.registry_of(request).index
    with ra.registry_errors(record.pair, version=record.version):
        try:
            changed = await index.transition(
                record.pair, record.version, to, actor=key.name, reason=reason, override=override
            )
        except IllegalTransitionError as error:
            raise ra.refused(error, record, to) from error
    ra.registry_changed(request)
    return changed


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    summary="Download a version's artifact",
    description="Streams the skops file. `ETag` and `X-Content-SHA256` carry the registered sha256. Artifacts "
    "up to the gateway's `artifact_verify_max_bytes` (or any, with `verify=true`) are hashed first and "
    "refused with 409 naming both hashes if they differ; every download is also checked as it streams and "
    "aborted before its end on a mismatch. Needs the `read` scope.",
    responses={
        200: {
            "description": "The artifact's bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "If-None-Match matched the ETag (the registered sha256)."},
        **PAIR_ERRORS,
        409: {"model": IntegrityErrorPublic, "description": "The stored artifact is not the registered one."},
    },
)
async def download_artifact(
    request: Request,
    name: str,
    version: VersionNumber,
    _key: Reader,
    feature_set: FeatureSet = None,
    verify: Annotated[
        bool | None, Query(description="Hash before streaming: true always, false never, unset by size.")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    record = await _version(request, name, version, feature_set)
    artifact = record.artifact
    headers = {"ETag": f'"{artifact.sha256}"', "X-Content-SHA256": artifact.sha256}
    if if_none_match is not None and headers["ETag"] in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    store = ra.registry_of(request).artifacts
    key = VersionLayout(record.pair, record.version).model
    check_first = (
        verify
        if verify is not None
        else artifact.size_bytes <= settings_of(request).artifact_verify_max_bytes
    )
    try:
        if check_first:
            actual, size = await digest_of(store, key)
            if (actual, size) != (artifact.sha256, artifact.size_bytes):
                raise ApiError(
                    409,
                    "artifact_integrity",
                    mismatch_message(record, actual, size),
                    expected_sha256=artifact.sha256,
                    actual_sha256=actual,
                )
        body = await open_checked(store, key, record)
    except ArtifactNotFoundError as error:
        raise ApiError(
            404,
            "artifact_not_found",
            f"{record.label} is registered but its artifact is missing from the store ({key}); "
            "the registrar may not have finished, or the store was changed by hand",
        ) from error
    filename = (
        f"{record.model_name}-{record.feature_set.name}@{record.feature_set.version}-v{record.version}.skops"
    )
    headers |= {
        "Content-Length": str(artifact.size_bytes),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return StreamingResponse(body, media_type="application/octet-stream", headers=headers)


@router.get(
    "/{name}/versions/{version}/card",
    response_class=Response,
    summary="Get a version's model card",
    description="JSON, Markdown or HTML: `?format=json|md|html`, else by the `Accept` header, else JSON. "
    "Built from the version as it is now (status and approval history included); text from configs "
    "is escaped in HTML. Needs the `read` scope.",
    responses={
        200: {
            "description": "The model card.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        },
        **PAIR_ERRORS,
    },
)
async def get_card(
    request: Request,
    name: str,
    version: VersionNumber,
    _key: Reader,
    feature_set: FeatureSet = None,
    format_: Annotated[CardFormat | None, Query(alias="format", description="json, md or html.")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    record = await _version(request, name, version, feature_set)
    chosen = negotiate(format_, accept)
    text = await render_card(ra.registry_of(request).artifacts, record, chosen)
    return Response(text, media_type=MEDIA_TYPES[chosen], headers={"Vary": "Accept"})
