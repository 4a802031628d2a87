"""Aliases of a pair's versions (``champion``, ``challenger``, any name): read, set or move, remove.

Reads need the ``read`` scope, changes the ``admin`` scope; each change is published as a
``ModelVersionChanged`` by the registry feed (a move: ``alias_removed`` on the previous holder too).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pfactory.gateway import registry_access as ra
from pfactory.gateway.registry_schemas import AliasUpdate, VersionPublic
from pfactory.gateway.routes.models import CHANGE_ERRORS, PAIR_ERRORS, Admin, FeatureSet, Reader, resolve
from pfactory.registry.model import check_name

router = APIRouter(prefix="/v1/models", tags=["models"])


def _alias_name(alias: str) -> str:
    try:
        return check_name(alias, "alias")
    except ValueError as error:
        raise ra.invalid_parameter("alias", str(error)) from error


@router.get(
    "/{name}/aliases/{alias}",
    response_model=VersionPublic,
    summary="Get the version holding an alias",
    description="e.g. `champion`. Needs the `read` scope.",
    responses=PAIR_ERRORS,
)
async def get_alias(
    request: Request, name: str, alias: str, _key: Reader, feature_set: FeatureSet = None
) -> VersionPublic:
    pair = await resolve(request, name, feature_set)
    with ra.registry_errors(pair, alias=alias):
        return ra.version_public(await ra.registry_of(request).index.get_by_alias(pair, alias))


@router.put(
    "/{name}/aliases/{alias}",
    response_model=VersionPublic,
    summary="Point an alias at a version",
    description="Sets the alias, or moves it from the version holding it (one holder per alias per pair). "
    "A rejected version cannot take an alias. Needs the `admin` scope.",
    responses=CHANGE_ERRORS,
)
async def set_alias(
    request: Request, name: str, alias: str, body: AliasUpdate, key: Admin, feature_set: FeatureSet = None
) -> VersionPublic:
    pair = await resolve(request, name, feature_set)
    alias = _alias_name(alias)
    with ra.registry_errors(pair, version=body.version):
        moved = await ra.registry_of(request).index.move_alias(pair, alias, body.version, actor=key.name)
    ra.registry_changed(request)
    return ra.version_public(moved)


@router.delete(
    "/{name}/aliases/{alias}",
    response_model=VersionPublic,
    summary="Remove an alias",
    description="Takes the alias from the version holding it (recorded) and answers with that version. "
    "Needs the `admin` scope.",
    responses=CHANGE_ERRORS,
)
async def remove_alias(
    request: Request,
    name: str,
    alias: str,
    key: Admin,
    feature_set: FeatureSet = None,
    reason: Annotated[str | None, Query(max_length=2000, description="Why; recorded.")] = None,
) -> VersionPublic:
    pair = await resolve(request, name, feature_set)
    with ra.registry_errors(pair, alias=alias):
        removed = await ra.registry_of(request).index.remove_alias(pair, alias, actor=key.name, reason=reason)
    ra.registry_changed(request)
    return ra.version_public(removed)
