"""The registrar's FastStream app: wiring only; the decisions live in :mod:`pfactory.registrar.service`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, publish_answers, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import TRANSIENT_ERRORS, is_transient, subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ModelTrained
from pfactory.registrar import service
from pfactory.registrar.settings import RegistrarSettings
from pfactory.registrar.telemetry import RegistryMetrics
from pfactory.registry.layout import VersionLayout
from pfactory.registry.wiring import Registry, build_registry, transient_errors
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.registrar")

RETRIED = (*TRANSIENT_ERRORS, *transient_errors())
"""Failures retried by the bus (then dead-lettered); any other error fails the job with its reason."""


class _RegistryHolder:
    """The registry and its metrics, opened by the start-up hook and closed by the shutdown hook."""

    def __init__(self, settings: RegistrarSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._registry: Registry | None = None
        self._registry_metrics: RegistryMetrics | None = None
        self._gauge: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._registry = await build_registry(self.settings.registry)
        self._registry_metrics = RegistryMetrics(
            self._registry.index,
            self.metrics,
            interval_s=self.settings.versions_gauge_interval_s,
            min_gap_s=self.settings.versions_gauge_min_gap_s,
        )
        if self.settings.telemetry.metrics_enabled:  # no agent to tell: no reason to count the registry
            self._gauge = asyncio.create_task(self._registry_metrics.run(), name="registry-versions-gauge")

    async def close(self) -> None:
        if self._gauge is not None:
            self._gauge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge
            self._gauge = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        self.metrics.close()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("the registry is not open (the app has not started)")
        return self._registry

    @property
    def registry_metrics(self) -> RegistryMetrics:
        if self._registry_metrics is None:
            raise RuntimeError("the registry is not open (the app has not started)")
        return self._registry_metrics


def crash_hook(settings: RegistrarSettings) -> service.AfterArtifactsWritten | None:
    """The test hook behind ``PF_REGISTRAR_CRASH_AFTER=artifact_write``: die before the commit."""
    if settings.crash_after != "artifact_write":
        return None

    def crash(layout: VersionLayout) -> None:
        log.error("crash_after=artifact_write: exiting before committing %s", layout.prefix)
        os._exit(1)

    return crash


def build(settings: RegistrarSettings) -> AsgiFastStream:
    """The registrar app: ``pf.model.trained`` → a registered version, its events and the job's status."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)
    metrics = settings.telemetry.metrics(service.SERVICE)
    stores = _RegistryHolder(settings, metrics)
    after_write = crash_hook(settings)

    @subscribe(
        broker,
        topics.MODEL_TRAINED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        transient=RETRIED,
        metrics=metrics,
    )
    async def on_model_trained(envelope: Envelope) -> None:
        event = envelope.open_as(ModelTrained)
        running_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{envelope.event_id}/running"))
        await publisher.publish(service.running(event), cause=envelope, event_id=running_id)
        try:
            outcome = await service.register(
                event,
                stores.registry,
                after_artifacts_written=after_write,
                on_committed=stores.registry_metrics.committed,
            )
        except Exception as error:
            if is_transient(error, RETRIED):
                raise
            log.exception("registering job=%s failed", event.job_id)
            outcome = service.failed(event, error)
        await publish_answers(publisher, envelope, service.answers(outcome, stores.registry.artifacts))

    return make_service_app(
        broker, settings.bus, service=service.SERVICE, on_startup=[stores.open], on_shutdown=[stores.close]
    )


def run(settings: RegistrarSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
