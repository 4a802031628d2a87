"""Liveness and readiness (no authentication)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from pfactory.gateway.routes.common import registry_feed_of, relay_of, store_of
from pfactory.gateway.schemas import (
    BrokerState,
    HealthPublic,
    OutboxPublic,
    ReadyPublic,
    RegistryFeedPublic,
)

router = APIRouter(tags=["health"])
log = logging.getLogger("pfactory.gateway.health")


@router.get("/health", response_model=HealthPublic, summary="Liveness", description="The process answers.")
async def health() -> HealthPublic:
    return HealthPublic()


@router.get(
    "/ready",
    response_model=ReadyPublic,
    summary="Readiness",
    description=(
        "200 when the job store answers, even with the broker down (accepted jobs wait in the outbox; "
        "`broker` and `outbox` say so). 503 when the store does not answer."
    ),
    responses={503: {"model": ReadyPublic, "description": "The job store does not answer."}},
)
async def ready(request: Request, response: Response) -> ReadyPublic:
    store, relay = store_of(request), relay_of(request)
    broker: BrokerState
    try:
        await store.ping()
        backlog = await store.backlog()
    except Exception as error:
        log.warning("readiness: store unreachable: %s", error)
        response.status_code = 503
        return ReadyPublic(
            status="unavailable",
            store="unreachable",
            broker="unknown",
            outbox=None,
            detail=f"job store unreachable: {error}",
        )
    if relay is None:
        broker, detail = "disabled", "no bus configured: accepted jobs stay in the outbox"
    elif relay.state.broker_reachable is None:
        broker, detail = "unknown", ""
    elif relay.state.broker_reachable:
        broker, detail = "connected", ""
    else:
        broker = "unreachable"
        detail = (
            f"broker unreachable ({relay.state.last_error}); {backlog.pending} event(s) wait in the outbox"
        )
    feed = registry_feed_of(request)
    return ReadyPublic(
        status="ready",
        store="ok",
        broker=broker,
        outbox=OutboxPublic(
            pending=backlog.pending,
            oldest_pending_at=backlog.oldest_created_at,
            last_error=backlog.last_error,
        ),
        registry_feed=None
        if feed is None
        else RegistryFeedPublic(
            cursor=feed.state.cursor,
            last_published_at=feed.state.last_published_at,
            last_error=feed.state.last_error,
        ),
        detail=detail,
    )
