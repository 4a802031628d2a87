"""The scorer's FastStream app: wiring only; the decisions live in :mod:`pfactory.scorer.service`."""

from __future__ import annotations

import logging
import uuid
from typing import cast

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import TRANSIENT_ERRORS, subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, Event, ScoringRequested
from pfactory.registry.index import ModelCatalog
from pfactory.registry.loading import LoaderIndex, VersionLoader
from pfactory.registry.wiring import Registry, build_registry, transient_errors
from pfactory.scorer import service
from pfactory.scorer.batch import Store
from pfactory.scorer.settings import ScorerSettings
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.scorer")


class _Scorer:
    """The registry and the loader over it, opened by the start-up hook and closed by the shutdown hook."""

    def __init__(self, settings: ScorerSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._registry: Registry | None = None
        self._deps: service.ScorerDeps | None = None

    async def open(self) -> None:
        self._registry = registry = await build_registry(self.settings.registry)
        if not isinstance(registry.index, ModelCatalog):
            raise TypeError(f"{type(registry.index).__name__} cannot list a model's pairs (ModelCatalog)")
        loader = VersionLoader(
            cast(LoaderIndex, registry.index), registry.artifacts, cache_size=self.settings.model_cache_size
        )
        store = Store(self.settings.store_root, self.settings.endpoint_url, self.settings.region)
        self._deps = service.ScorerDeps(
            loader,
            store,
            self.settings.batch_rows,
            RETRIED,
            metrics=self.metrics,
            gateway_url=self.settings.gateway_url,
        )

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        self.metrics.close()

    @property
    def deps(self) -> service.ScorerDeps:
        if self._deps is None:
            raise RuntimeError("the registry is not open (the app has not started)")
        return self._deps


RETRIED = (*TRANSIENT_ERRORS, *transient_errors())


def build(settings: ScorerSettings) -> AsgiFastStream:
    """The scorer app: consumes ``pf.scoring.requested``; answers on the scoring, drift and job topics."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)
    metrics = settings.telemetry.metrics(service.SERVICE)
    scorer = _Scorer(settings, metrics)

    @subscribe(
        broker,
        topics.SCORING_REQUESTED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        transient=RETRIED,
        concurrency=settings.max_concurrent_jobs,
        metrics=metrics,
    )
    async def on_scoring_requested(envelope: Envelope) -> None:
        request = envelope.open_as(ScoringRequested)

        async def emit(label: str, event: Event) -> None:
            # ids derive from the request's id: a redelivery republishes the same events
            event_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{envelope.event_id}/{label}")
            )
            await publisher.publish(event, cause=envelope, event_id=event_id)

        log.info("scoring job=%s model=%s ds=%s", request.job_id, request.model_name, request.ds)
        await service.answer_scoring_request(request, scorer.deps, emit)

    return make_service_app(
        broker, settings.bus, service=service.SERVICE, on_startup=[scorer.open], on_shutdown=[scorer.close]
    )


def run(settings: ScorerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
