"""API key administration (``admin`` scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from pfactory.gateway.auth import Scope, create_api_key, require_scope
from pfactory.gateway.errors import ApiError
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID, store_of
from pfactory.gateway.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeysPublic, ErrorPublic
from pfactory.gateway.store import ApiKeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"])
_admin = Depends(require_scope(Scope.ADMIN))


def key_public(record: ApiKeyRecord) -> ApiKeyPublic:
    """The public view of a key (no secret, no hash)."""
    return ApiKeyPublic(
        key_id=record.key_id,
        name=record.name,
        scopes=sorted(record.scopes),
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
        revoked=record.revoked_at is not None,
    )


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description="The raw key is in the answer once; only its sha256 is stored. Needs the `admin` scope.",
    responses={**AUTH_ERRORS, **INVALID},
)
async def create_key(
    request: Request, body: ApiKeyCreate, _key: Annotated[ApiKeyRecord, _admin]
) -> ApiKeyCreated:
    raw, record = await create_api_key(store_of(request), body.name, body.scopes)
    return ApiKeyCreated(key=raw, **key_public(record).model_dump())


@router.get(
    "",
    response_model=ApiKeysPublic,
    summary="List API keys",
    description="Every key with its scopes and last use, revoked ones included. Needs the `admin` scope.",
    responses=AUTH_ERRORS,
)
async def list_keys(request: Request, _key: Annotated[ApiKeyRecord, _admin]) -> ApiKeysPublic:
    records = await store_of(request).list_keys()
    return ApiKeysPublic(data=[key_public(record) for record in records], count=len(records))


@router.delete(
    "/{key_id}",
    response_model=ApiKeyPublic,
    summary="Revoke an API key",
    description="The key stops working at once (401). Revoking twice is harmless. Needs the `admin` scope.",
    responses={**AUTH_ERRORS, 404: {"model": ErrorPublic, "description": "No key has this id."}},
)
async def revoke_key(request: Request, key_id: str, _key: Annotated[ApiKeyRecord, _admin]) -> ApiKeyPublic:
    store = store_of(request)
    if not await store.revoke_key(key_id):
        raise ApiError(404, "key_not_found", f"no API key with id '{key_id}'")
    found = await store.find_key(key_id)
    assert found is not None
    return key_public(found[0])
