"""Alerts raised from outside the bus (a generated Airflow DAG's failure callback), published as events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from pfactory.contracts.events import AlertRaised, Envelope, Severity
from pfactory.gateway.auth import Scope, require_scope
from pfactory.gateway.routes.common import AUTH_ERRORS, INVALID, relay_of, store_of
from pfactory.gateway.store import ApiKeyRecord

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

_KEY = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$"


class AlertCreate(BaseModel):
    """An alert to raise: one incident per ``dedup_key`` (repeats add to the open one)."""

    model_config = ConfigDict(extra="forbid")
    dedup_key: str = Field(pattern=_KEY, description="e.g. 'airflow:pf_score__credit_default__v4'.")
    check: str = Field(min_length=1, max_length=100, description="What failed, e.g. 'scoring_dag'.")
    severity: Severity = Field(default=Severity.ERROR, description="critical, error, warning or info.")
    summary: str = Field(min_length=1, max_length=1024, description="One line a person on call can act on.")
    model_name: str | None = Field(default=None, max_length=200)
    feature_set_name: str | None = Field(default=None, max_length=200)
    links: dict[str, str] = Field(default_factory=dict, description="Name → URL (an Airflow log, a run).")
    details: dict[str, Any] = Field(default_factory=dict, description="Anything else worth keeping.")


class AlertAccepted(BaseModel):
    """The alert's event id: it is published once the broker takes it (it survives a broker outage)."""

    event_id: str
    dedup_key: str


@router.post(
    "",
    status_code=202,
    response_model=AlertAccepted,
    summary="Raise an alert",
    description=(
        "Stores `AlertRaised` in the outbox; the relay publishes it to `pf.alerts`, where the alert router "
        "pages. The source is the API key's name. Needs the `submit` scope."
    ),
    responses={**AUTH_ERRORS, **INVALID},
)
async def raise_alert(
    request: Request, body: AlertCreate, key: Annotated[ApiKeyRecord, Depends(require_scope(Scope.SUBMIT))]
) -> AlertAccepted:
    event = AlertRaised(
        dedup_key=body.dedup_key,
        check=body.check,
        severity=body.severity,
        summary=body.summary,
        source=f"api:{key.name}",
        model_name=body.model_name,
        feature_set_name=body.feature_set_name,
        links=body.links,
        details=body.details,
    )
    envelope = Envelope.wrap(event, producer="gateway", correlation_id=body.dedup_key)
    await store_of(request).enqueue(envelope, event.TOPIC, event.partition_key())
    relay = relay_of(request)
    if relay is not None:
        relay.wake()
    return AlertAccepted(event_id=envelope.event_id, dedup_key=body.dedup_key)
