"""The gateway's FastAPI app: wiring only (store, relay, registry feed, status feed, routes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import Envelope
from pfactory.gateway.auth import ALL_SCOPES, install_api_key
from pfactory.gateway.errors import ApiError, api_error_handler
from pfactory.gateway.feature_catalog import apply_feature_envelope
from pfactory.gateway.outbox import OutboxRelay
from pfactory.gateway.registry_feed import RegistryFeed
from pfactory.gateway.routes import (
    alerts,
    aliases,
    feature_sets,
    health,
    jobs,
    keys,
    lineage,
    models,
    scoring,
)
from pfactory.gateway.settings import GatewaySettings
from pfactory.gateway.sink import EnvelopeSink, StatusFeed
from pfactory.gateway.status import JobMetrics, JobStatusFollower
from pfactory.gateway.store import GatewayStore
from pfactory.registry.wiring import Registry, build_registry
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.gateway")

DESCRIPTION = """\
Submit FeatureSet and Model configs, follow their jobs, browse and govern the model registry
(versions, status, aliases, artifacts, model cards, lineage), manage API keys.

Every call but `/health` and `/ready` needs an API key (`Authorization: Bearer pf_…` or
`X-API-Key: pf_…`) holding the scope the endpoint names: `submit`, `read` or `admin`
(`admin` implies the others). Errors share one body: `{"detail", "code", …}`.
"""

TAGS = [
    {"name": "jobs", "description": "Submit configs and follow the jobs they start."},
    {
        "name": "models",
        "description": "The model registry: models, their feature-set pairs and versions; status changes and "
        "aliases (admin scope); artifacts; model cards. Every change to a version (registration included) "
        "is published as a ModelVersionChanged event derived from its audit trail.",
    },
    {
        "name": "feature-sets",
        "description": "The feature-set catalog: versions registered by FeatureSet submissions (immutable), "
        "their days as materialisation reported them, partition statistics and validation reports, column "
        "lineage; materialise or backfill days of a registered version.",
    },
    {
        "name": "lineage",
        "description": "Which versions were trained on what; which feature sets and model versions depend on "
        "a source column.",
    },
    {
        "name": "scoring-runs",
        "description": "Batch scoring runs for schedulers (the generated Airflow DAGs): start one for a model "
        "and a day, follow it to its predictions and drift summary.",
    },
    {"name": "keys", "description": "API key administration (admin scope)."},
    {"name": "health", "description": "Liveness and readiness probes (no authentication)."},
]


@dataclass
class Components:
    """What :func:`build` chose from the settings."""

    store: GatewayStore
    sink: EnvelopeSink | None
    status_feed: StatusFeed | None
    feature_feed: StatusFeed | None = None


def build(
    settings: GatewaySettings,
    *,
    sink: EnvelopeSink | None = None,
    store: GatewayStore | None = None,
    bus: BusSettings | None = None,
    status_feed: StatusFeed | None = None,
    feature_feed: StatusFeed | None = None,
    metrics: Metrics | None = None,
) -> Components:
    """Choose the backends: SQLite store; Kafka sink and status feed when a bus is configured.

    Args:
        settings: gateway settings.
        sink: an envelope sink to use instead of Kafka.
        store: a store to use instead of the SQLite file of the settings.
        bus: bus settings; when None and no sink is given, read from ``PF_BUS_*`` if the bus is enabled.
        status_feed: a status feed to use instead of the Kafka consumer.
        feature_feed: a feed of materialisation outcomes to use instead of the Kafka consumers.
        metrics: the emitter the Kafka consumers report their bus metrics to (none when None).

    Returns:
        The components.
    """
    from pfactory.gateway.adapters.sqlite import SqliteGatewayStore

    if bus is None and sink is None and settings.bus_enabled:
        bus = BusSettings()
    if bus is not None:
        from pfactory.gateway.adapters.bus import KafkaEnvelopeSink, KafkaStatusFeed, feature_outcome_feed

        sink = sink or KafkaEnvelopeSink(bus)
        status_feed = status_feed or KafkaStatusFeed(bus, metrics=metrics)
        feature_feed = feature_feed or feature_outcome_feed(bus, metrics=metrics)
    return Components(store or SqliteGatewayStore(settings.database_path), sink, status_feed, feature_feed)


async def _request_invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    issues = [
        {
            "file": None,
            "line": None,
            "column": None,
            "message": item.get("msg", "invalid"),
            "path": ".".join(str(part) for part in item.get("loc", ())) or "<root>",
            "expected": None,
            "suggestion": None,
            "code": "invalid_request",
        }
        for item in error.errors()
    ]
    summary = f"{len(issues)} problem{'s' if len(issues) != 1 else ''} in the request"
    return JSONResponse(
        {
            "detail": f"the request was refused: {summary}",
            "code": "invalid_request",
            "summary": summary,
            "issues": issues,
        },
        status_code=422,
    )


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: GatewaySettings,
    *,
    sink: EnvelopeSink | None = None,
    store: GatewayStore | None = None,
    bus: BusSettings | None = None,
    status_feed: StatusFeed | None = None,
    registry: Registry | None = None,
    feature_feed: StatusFeed | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The gateway app; its lifespan opens the store and the registry, starts the relay and the registry
    feed, follows job status and materialisation outcomes.

    Args:
        settings: gateway settings.
        sink: publish through this instead of Kafka (tests).
        store: use this store (left open at shutdown) instead of the settings' SQLite file.
        bus: Kafka settings (defaults to ``PF_BUS_*`` when the bus is enabled and no sink is given).
        status_feed: follow job status from this instead of Kafka.
        registry: use these registry stores (left open at shutdown) instead of building them from
            ``settings.registry_settings()``.
        feature_feed: follow materialisation outcomes (``FeaturesMaterialised``, day-level
            ``MaterialisationFailed``) from this instead of Kafka, into the feature-set catalog.
        metrics: the DogStatsD emitter for job and bus metrics; by default one built from
            ``settings.telemetry`` (``PF_TELEMETRY_*``) for the service ``gateway``.

    Returns:
        The FastAPI app.
    """
    emitter = metrics if metrics is not None else settings.telemetry.metrics("gateway")
    job_metrics = JobMetrics(emitter)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = build(
            settings,
            sink=sink,
            store=store,
            bus=bus,
            status_feed=status_feed,
            feature_feed=feature_feed,
            metrics=emitter,
        )
        app.state.store = parts.store
        app.state.registry = registry or await build_registry(settings.registry_settings())
        if settings.bootstrap_admin_key is not None:
            await install_api_key(
                parts.store, settings.bootstrap_admin_key.get_secret_value(), "bootstrap-admin", ALL_SCOPES
            )
        relay_task = feed_task = status_task = feature_task = None
        app.state.relay = app.state.registry_feed = None
        if parts.sink is not None:
            relay = OutboxRelay(
                parts.store,
                parts.store,
                parts.sink,
                poll_interval_s=settings.outbox_poll_interval_s,
                backoff_max_s=settings.outbox_backoff_max_s,
                publish_timeout_s=settings.publish_timeout_s,
                stale_after_s=settings.stale_job_republish_age_s,
            )
            await relay.republish_unfinished()
            app.state.relay = relay
            relay_task = asyncio.create_task(relay.run(), name="gateway-outbox-relay")
            feed = RegistryFeed(
                app.state.registry.index,
                parts.store,
                parts.sink,
                poll_interval_s=settings.registry_feed_interval_s,
                backoff_max_s=settings.outbox_backoff_max_s,
                publish_timeout_s=settings.publish_timeout_s,
            )
            app.state.registry_feed = feed
            feed_task = asyncio.create_task(feed.run(), name="gateway-registry-feed")
        if parts.status_feed is not None:
            follower = JobStatusFollower(parts.store, job_metrics)

            async def handle(envelope: Envelope) -> None:
                await follower.apply(envelope)

            status_task = asyncio.create_task(parts.status_feed.run(handle), name="gateway-status-feed")
        if parts.feature_feed is not None:
            catalog = parts.store

            async def record(envelope: Envelope) -> None:
                await apply_feature_envelope(catalog, envelope)

            feature_task = asyncio.create_task(parts.feature_feed.run(record), name="gateway-feature-feed")
        try:
            yield
        finally:
            await _stop(feature_task)
            await _stop(status_task)
            await _stop(feed_task)
            await _stop(relay_task)
            if parts.sink is not None:
                await parts.sink.close()
            if store is None:
                await parts.store.close()
            if registry is None:
                await app.state.registry.close()
            if metrics is None:
                emitter.close()

    app = FastAPI(
        title="Prediction Factory gateway",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.job_metrics = job_metrics
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.include_router(jobs.router)
    app.include_router(scoring.router)
    app.include_router(models.router)
    app.include_router(aliases.router)
    app.include_router(feature_sets.router)
    app.include_router(lineage.router)
    app.include_router(keys.router)
    app.include_router(alerts.router)
    app.include_router(health.router)
    return app
