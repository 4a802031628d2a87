"""API keys: ``pf_<key id>_<secret>``, stored as sha256 of the secret, checked per scope."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pfactory.gateway.errors import ApiError
from pfactory.gateway.settings import API_KEY_PATTERN
from pfactory.gateway.store import ApiKeyRecord, ApiKeyStore


class Scope(enum.StrEnum):
    """What a key may do. ``admin`` manages keys and implies every other scope."""

    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


def hash_secret(secret: str) -> str:
    """sha256 hex of a key's secret part (high-entropy, so no slow KDF is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """Generate a key.

    Returns:
        ``(raw key, key id, secret)``; the raw key is shown once and never stored.
    """
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return f"pf_{key_id}_{secret}", key_id, secret


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """Split a raw key into ``(key id, secret)``; None when it does not have the key format."""
    match = API_KEY_PATTERN.match(raw)
    return (match["key_id"], match["secret"]) if match else None


async def install_api_key(store: ApiKeyStore, raw_key: str, name: str, scopes: Iterable[str]) -> ApiKeyRecord:
    """Store a key whose raw value is already known (the bootstrap admin key).

    Args:
        store: where keys live.
        raw_key: ``pf_<id>_<secret>``.
        name: a label for people.
        scopes: scopes granted.

    Returns:
        The stored key's metadata.
    """
    parts = parse_api_key(raw_key)
    if parts is None:
        raise ValueError("an API key looks like pf_<12 hex chars>_<32+ url-safe chars>")
    key_id, secret = parts
    record = ApiKeyRecord(
        key_id=key_id, name=name, scopes=frozenset(Scope(s) for s in scopes), created_at=datetime.now(UTC)
    )
    await store.add_key(record, hash_secret(secret))
    return record


async def create_api_key(store: ApiKeyStore, name: str, scopes: Iterable[str]) -> tuple[str, ApiKeyRecord]:
    """Create a new key (used by ``POST /v1/keys`` and the command line).

    Args:
        store: where keys live.
        name: a label for people.
        scopes: any of ``submit``, ``read``, ``admin``.

    Returns:
        ``(raw key, metadata)``; the raw key cannot be recovered later.
    """
    raw, _, _ = new_api_key()
    return raw, await install_api_key(store, raw, name, scopes)


async def authenticate(store: ApiKeyStore, raw_key: str) -> ApiKeyRecord | None:
    """Return the live key matching ``raw_key``, or None (unknown, malformed, wrong secret or revoked)."""
    parts = parse_api_key(raw_key)
    if parts is None:
        return None
    found = await store.find_key(parts[0])
    if found is None:
        return None
    record, stored_hash = found
    if not hmac.compare_digest(stored_hash, hash_secret(parts[1])) or record.revoked_at is not None:
        return None
    return record


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer pf_<id>_<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: pf_<id>_<secret>`")


def require_scope(scope: Scope) -> Callable[..., Awaitable[ApiKeyRecord]]:
    """A FastAPI dependency: the caller's key, which must hold ``scope`` (401 / 403 otherwise)."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_header)],
    ) -> ApiKeyRecord:
        raw = bearer.credentials if bearer else header_key
        challenge = {"WWW-Authenticate": "Bearer"}
        if not raw:
            raise ApiError(
                401,
                "missing_api_key",
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=challenge,
            )
        store: ApiKeyStore = request.app.state.store
        record = await authenticate(store, raw)
        if record is None:
            raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers=challenge)
        if scope not in record.scopes and Scope.ADMIN not in record.scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the '{scope}' scope",
                required_scope=str(scope),
                granted_scopes=sorted(record.scopes),
            )
        await store.touch_key(record.key_id)
        return record

    return dependency
