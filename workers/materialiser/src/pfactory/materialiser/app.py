"""The materialiser's FastStream app: wiring only; decisions live in :mod:`pfactory.materialiser.service`."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import date
from pathlib import Path

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.events import Envelope, Event, MaterialisationRequested
from pfactory.contracts.issues import ConfigError
from pfactory.contracts.loader import load_config_dict
from pfactory.materialiser import answers, service
from pfactory.materialiser.service import DayResult, Materialiser
from pfactory.materialiser.settings import MaterialiserSettings
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.materialiser")


def build_materialiser(settings: MaterialiserSettings, metrics: Metrics | None = None) -> Materialiser:
    """The one wiring point: engine, partition store and validator chosen from settings."""
    from pfactory.materialiser.adapters.gx import GxPartitionValidator
    from pfactory.materialiser.adapters.partitions import build_partition_store
    from pfactory.materialiser.engine import SqlEngine

    engine: SqlEngine
    if settings.engine == "emr":
        from pfactory.materialiser.adapters.emr_engine import EmrSqlEngine

        engine = EmrSqlEngine(settings.emr_settings())
    else:
        from pfactory.materialiser.adapters.spark import LocalSparkEngine, SparkEngineSettings

        engine = LocalSparkEngine(
            SparkEngineSettings(
                master=settings.spark_master,
                shuffle_partitions=settings.spark_shuffle_partitions,
                s3_endpoint_url=settings.s3_endpoint_url,
                s3_region=settings.s3_region,
            )
        )
    store = build_partition_store(
        settings.store_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    return Materialiser(
        engine,
        store,
        GxPartitionValidator(),
        data_root=settings.data_root,
        macros_dir=Path(settings.macros_dir) if settings.macros_dir else None,
        sql_root=Path(settings.sql_root) if settings.sql_root else None,
        metrics=metrics,
    )


class _MaterialiserHolder:
    """Builds the materialiser once (heavy imports, warm Spark session) off the event loop."""

    def __init__(self, settings: MaterialiserSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._materialiser: Materialiser | None = None
        self._lock = threading.Lock()

    def get(self) -> Materialiser:
        with self._lock:
            if self._materialiser is None:
                self._materialiser = build_materialiser(self.settings, self.metrics)
            return self._materialiser

    async def close(self) -> None:
        if self._materialiser is not None:
            await asyncio.to_thread(self._materialiser.engine.close)
        self.metrics.close()


def build(settings: MaterialiserSettings) -> AsgiFastStream:
    """The materialiser app: consumes ``pf.materialisation.requested``, answers per day and per job."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)
    metrics = settings.telemetry.metrics(service.SERVICE)
    holder = _MaterialiserHolder(settings, metrics)

    @subscribe(
        broker,
        topics.MATERIALISATION_REQUESTED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        metrics=metrics,
    )
    async def on_materialisation_requested(envelope: Envelope) -> None:
        request = envelope.open_as(MaterialisationRequested)
        log.info(
            "received MaterialisationRequested job=%s feature_set=%s", request.job_id, request.feature_set
        )

        async def answer(label: str, event: Event) -> None:
            event_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{envelope.event_id}/{label}")
            )
            await publisher.publish(event, cause=envelope, event_id=event_id)

        try:
            config = load_config_dict(request.config, expect=FeatureSetConfig)
        except ConfigError as error:
            for label, event in answers.rejected(request, str(error)):
                await answer(label, event)
            return
        start, end = answers.window(request, date.today())
        total = len(service.days_between(start, end))
        await answer(*answers.started(request, total, start, end))
        materialiser = await asyncio.to_thread(holder.get)
        days = materialiser.materialise_range(config, start, end, job_id=request.job_id)
        results: list[DayResult] = []
        alerts = answers.ValidationAlerts(request, settings.gateway_url)
        # Spark runs in a thread so the consumer keeps heartbeating through long days
        while (result := await asyncio.to_thread(next, days, None)) is not None:
            results.append(result)
            for label, event in answers.day_answers(request, result, len(results), total):
                await answer(label, event)
            for label, event in alerts.after(result):
                await answer(label, event)
        await answer(*answers.finished(request, results))

    return make_service_app(broker, settings.bus, service=service.SERVICE, on_shutdown=[holder.close])


def run(settings: MaterialiserSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
