"""Pieces every route module shares: documented error answers and app-state accessors."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from pfactory.gateway.outbox import OutboxRelay
from pfactory.gateway.registry_feed import RegistryFeed
from pfactory.gateway.schemas import ErrorPublic, ScopeErrorPublic, ValidationErrorPublic
from pfactory.gateway.settings import GatewaySettings
from pfactory.gateway.status import JobMetrics
from pfactory.gateway.store import GatewayStore

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    403: {"model": ScopeErrorPublic, "description": "The API key lacks the scope this endpoint needs."},
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorPublic, "description": "The request or its config was refused."},
}


def store_of(request: Request) -> GatewayStore:
    """The app's store."""
    store: GatewayStore = request.app.state.store
    return store


def relay_of(request: Request) -> OutboxRelay | None:
    """The app's outbox relay (None without a sink)."""
    relay: OutboxRelay | None = request.app.state.relay
    return relay


def registry_feed_of(request: Request) -> RegistryFeed | None:
    """The app's registry feed (None without a sink)."""
    feed: RegistryFeed | None = request.app.state.registry_feed
    return feed


def settings_of(request: Request) -> GatewaySettings:
    """The app's settings."""
    settings: GatewaySettings = request.app.state.settings
    return settings


def job_metrics_of(request: Request) -> JobMetrics:
    """The app's job lifecycle metrics."""
    job_metrics: JobMetrics = request.app.state.job_metrics
    return job_metrics


def idempotency_lock(request: Request) -> asyncio.Lock:
    """One lock per app: the look-up of an idempotency key and the insert of its job must not interleave."""
    lock: asyncio.Lock | None = getattr(request.app.state, "idempotency_lock", None)
    if lock is None:
        lock = request.app.state.idempotency_lock = asyncio.Lock()
    return lock
