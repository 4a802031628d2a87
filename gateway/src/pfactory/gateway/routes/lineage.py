"""Lineage queries: versions trained on a feature set; live versions depending on a source column."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from pfactory.contracts.events import FeatureSetRef
from pfactory.gateway import registry_access as ra
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.registry_schemas import SourceColumnLineagePublic, VersionsPublic
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID
from pfactory.gateway.store import ApiKeyRecord
from pfactory.registry.model import ModelVersion, VersionStatus

router = APIRouter(prefix="/v1/lineage", tags=["lineage"])
Reader = Annotated[ApiKeyRecord, Depends(require_scope(Scope.READ))]
LIVE_SCAN_LIMIT = 10_000
"""The most live versions a source-column query looks at."""


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


def recorded_source_columns(record: ModelVersion) -> set[str] | None:
    """The source columns a version's lineage records (``<source>.<column>``), or None if it records none.

    Reads ``lineage.source_columns`` as a list of columns or a feature → columns mapping, the shape the
    materialiser's column lineage is expected to take; versions registered before it record nothing.
    """
    recorded = getattr(record.lineage, "source_columns", None)
    if isinstance(recorded, dict):
        return {str(column) for columns in recorded.values() for column in _as_list(columns)}
    if isinstance(recorded, list | tuple | set | frozenset):
        return {str(column) for column in recorded}
    return None


def _as_list(value: object) -> Iterable[object]:
    return value if isinstance(value, list | tuple | set | frozenset) else [value]


@router.get(
    "/source-columns",
    response_model=SourceColumnLineagePublic,
    summary="Live versions depending on a source column",
    description="Answers from each live version's recorded column lineage. Versions that record none cannot "
    "be placed, and `note` says so (column lineage is recorded by the materialiser; versions trained "
    "before it record nothing). Needs the `read` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def live_versions_on_source_column(
    request: Request,
    _key: Reader,
    column: Annotated[str, Query(min_length=1, description="<source>.<column>, e.g. applicants.income")],
) -> SourceColumnLineagePublic:
    index = ra.registry_of(request).index
    matching: list[ModelVersion] = []
    checked = with_lineage = 0
    cursor: str | None = None
    while checked < LIVE_SCAN_LIMIT:
        page = await index.query(status=VersionStatus.LIVE, limit=500, cursor=cursor)
        for record in page.items:
            checked += 1
            columns = recorded_source_columns(record)
            if columns is not None:
                with_lineage += 1
                if column in columns:
                    matching.append(record)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    note = None
    if checked and with_lineage < checked:
        note = (
            f"{checked - with_lineage} of {checked} live versions record no source-column lineage, so whether "
            f"they read {column} is unknown (column lineage comes from the materialiser; versions trained "
            "before it was recorded have none)"
        )
    elif not checked:
        note = "no version is live"
    data = [ra.version_summary(record) for record in matching]
    return SourceColumnLineagePublic(
        column=column,
        data=data,
        count=len(data),
        live_versions_checked=checked,
        with_column_lineage=with_lineage,
        note=note,
    )
