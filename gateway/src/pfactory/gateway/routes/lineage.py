"""Lineage queries: versions trained on a feature set; feature sets and versions depending on a source column."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from pfactory.contracts.events import FeatureSetRef
from pfactory.gateway import registry_access as ra
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.feature_schemas import FeatureUsePublic, SourceColumnLineagePublic
from pfactory.gateway.registry_schemas import VersionsPublic
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID, store_of
from pfactory.gateway.store import ApiKeyRecord
from pfactory.registry.model import ModelVersion, VersionStatus

router = APIRouter(prefix="/v1/lineage", tags=["lineage"])
Reader = Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
SCAN_LIMIT = 10_000
"""The most model versions a source-column query returns."""


@router.get(
    "/feature-sets/{name}/versions",
    response_model=VersionsPublic,
    summary="Versions trained on a feature set",
    description="Every version (of any model) trained on feature set `name`, or on one of its versions with "
    "`?version=`; optionally of one status. Ordered by feature set version, pair and version. Needs the "
    "`read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def versions_on_feature_set(
    request: Request,
    name: str,
    _key: Reader,
    version: Annotated[str | None, Query(description="Only this version of the feature set.")] = None,
    status: Annotated[VersionStatus | None, Query(description="Only versions in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> VersionsPublic:
    feature_set: str | FeatureSetRef = name if version is None else FeatureSetRef(name=name, version=version)
    try:
        page = await ra.registry_of(request).index.query(
            feature_set=feature_set, status=status, limit=limit, cursor=cursor
        )
    except (ValueError, IndexError, TypeError) as error:
        raise ra.invalid_parameter("cursor", f"not a cursor this API returned: {error}") from error
    data = [ra.version_summary(record) for record in page.items]
    return VersionsPublic(data=data, count=len(data), next_cursor=page.next_cursor)


ANY_STATUS = "any"


@router.get(
    "/source-columns",
    response_model=SourceColumnLineagePublic,
    summary="Feature sets and model versions depending on a source column",
    description="One query: the feature-set versions whose features derive from `column` (their column "
    "lineage: parsed from the rendered SQL by the materialiser, else declared in the config), and the "
    "registry's model versions trained on those feature-set versions — live ones by default, another "
    "status with `?status=`, every status with `?status=any`. Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def versions_on_source_column(
    request: Request,
    _key: Reader,
    column: Annotated[str, Query(min_length=1, description="<source>.<column>, e.g. applicants.income")],
    status: Annotated[
        str, Query(description="Model version status to look for: live (default), any other status, or any.")
    ] = VersionStatus.LIVE.value,
) -> SourceColumnLineagePublic:
    wanted: VersionStatus | None = None
    if status != ANY_STATUS:
        try:
            wanted = VersionStatus(status)
        except ValueError as error:
            allowed = ", ".join([*(s.value for s in VersionStatus), ANY_STATUS])
            raise ra.invalid_parameter("status", f"'{status}' is not one of {allowed}") from error
    matches = await store_of(request).features_on_source_column(column)
    grouped: dict[tuple[str, str], list[str]] = {}
    origins: dict[tuple[str, str], str] = {}
    for match in matches:
        grouped.setdefault((match.name, match.version), []).append(match.feature)
        origins[(match.name, match.version)] = match.origin
    index = ra.registry_of(request).index
    uses: list[FeatureUsePublic] = []
    versions: list[ModelVersion] = []
    truncated = False
    for (name, version), features in grouped.items():
        found: list[ModelVersion] = []
        cursor: str | None = None
        while True:
            page = await index.query(
                feature_set=FeatureSetRef(name=name, version=version), status=wanted, limit=500, cursor=cursor
            )
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
            if len(versions) + len(found) >= SCAN_LIMIT:
                truncated = True
                break
        versions.extend(found)
        uses.append(
            FeatureUsePublic(
                feature_set=f"{name}@{version}",
                name=name,
                version=version,
                features=sorted(features),
                origin=origins[(name, version)],
                model_versions=len(found),
            )
        )
    note = None
    if not uses:
        note = (
            f"no catalogued feature-set version derives from {column} (lineage is recorded when a "
            "FeatureSet is submitted and when its days are materialised)"
        )
    elif truncated:
        note = f"more than {SCAN_LIMIT} model versions match; the list is cut there"
    data = [ra.version_summary(record) for record in versions]
    return SourceColumnLineagePublic(
        column=column, status=status, feature_sets=uses, data=data, count=len(data), note=note
    )
