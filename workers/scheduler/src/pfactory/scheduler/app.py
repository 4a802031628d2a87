"""The scheduler's FastStream app: wiring only; the decisions live in :mod:`pfactory.scheduler.service`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import (
    Envelope,
    Event,
    MaterialisationRequested,
    ModelRegistered,
    ModelVersionChanged,
)
from pfactory.registry.model import PairKey
from pfactory.registry.wiring import Registry, RegistrySettings, build_registry
from pfactory.scheduler import service
from pfactory.scheduler.feature_sets import FeatureSetBook
from pfactory.scheduler.settings import SchedulerSettings
from pfactory.scheduler.ticks import TickMark

log = logging.getLogger("pfactory.scheduler")


def build_dags(settings: SchedulerSettings) -> service.DagTarget | None:
    """Airflow DAG files when a DAGs folder or S3 prefix is configured; None: the embedded cron runner.

    With ``dag_runner="kubernetes"`` the scoring DAGs score in a pod (see :class:`ScorerPod`).
    """
    if settings.dags_folder is None and settings.dags_s3_bucket is None:
        return None
    from pfactory.scheduler.adapters.dag_writer import DagWriter, LocalDagWriter, S3DagWriter
    from pfactory.scheduler.airflow import AirflowDags

    writer: DagWriter
    if settings.dags_folder is not None:
        writer = LocalDagWriter(settings.dags_folder)
    else:
        assert settings.dags_s3_bucket is not None
        writer = S3DagWriter(
            settings.dags_s3_bucket, settings.dags_s3_prefix, endpoint_url=settings.dags_s3_endpoint_url
        )
    return AirflowDags(
        writer,
        api_url=settings.api_url,
        retries=settings.dag_retries,
        poke_s=settings.dag_poke_s,
        pod=settings.scorer_pod(),
    )


def build(settings: SchedulerSettings) -> AsgiFastStream:
    """The scheduler app: follows registered and changed versions, polls the registry, runs the ticks."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)
    offset = timedelta(seconds=settings.clock_offset_s)
    dags = build_dags(settings)
    metrics = settings.telemetry.metrics(service.SERVICE)
    state: dict[str, object] = {}

    async def publish(event: Event, event_id: str) -> None:
        await publisher.publish(event, event_id=event_id)

    def scheduler() -> service.Scheduler:
        found = state.get("scheduler")
        assert isinstance(found, service.Scheduler), "the scheduler starts with the app"
        return found

    @subscribe(
        broker,
        topics.MODEL_REGISTERED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        metrics=metrics,
    )
    async def on_model_registered(envelope: Envelope) -> None:
        event = envelope.open_as(ModelRegistered)
        await scheduler().consider_pair(
            PairKey(model_name=event.model_name, feature_set=event.feature_set), event.version
        )

    @subscribe(
        broker,
        topics.MODEL_VERSION_CHANGED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        metrics=metrics,
    )
    async def on_version_changed(envelope: Envelope) -> None:
        event = envelope.open_as(ModelVersionChanged)
        if event.actor == service.SERVICE and event.action != "registered":
            return  # its own changes: already acted on
        await scheduler().consider_pair(
            PairKey(model_name=event.model_name, feature_set=event.feature_set), event.version
        )

    @subscribe(
        broker,
        topics.MATERIALISATION_REQUESTED,
        group_id=f"{settings.group_id}-feature-sets",
        settings=settings.bus,
        publisher=publisher,
        metrics=metrics,
    )
    async def on_materialisation_requested(envelope: Envelope) -> None:
        if envelope.producer == service.SERVICE:
            return  # a materialisation the scheduler itself asked for
        await scheduler().consider_feature_set(envelope.open_as(MaterialisationRequested))

    async def start() -> None:
        registry = await build_registry(RegistrySettings())
        state["registry"] = registry
        state["scheduler"] = service.Scheduler(
            registry=registry.index,
            publish=publish,
            dags=dags,
            clock=lambda: datetime.now().astimezone() + offset,
            runs_schedules=dags is None,
            feature_sets=FeatureSetBook(settings.state_dir / "feature-sets.json"),
            metrics=metrics,
        )
        mark = TickMark(settings.state_dir / "last-tick.json")
        resumed = mark.read(scheduler().clock(), timedelta(seconds=settings.catch_up_s))
        if resumed is not None and scheduler().runs_schedules:
            scheduler().last_tick = resumed
            log.info("embedded runner resumes from %s: firings missed since then are fired now", resumed)
        cursor = {"at": 0}

        async def poll() -> None:
            cursor["at"], seen = await service.poll_changes(scheduler(), cursor["at"])
            if seen:
                log.info("poll: %d changed version(s) considered; cursor %d", seen, cursor["at"])

        async def tick() -> None:
            await scheduler().tick()
            done = scheduler().last_tick
            if done is not None and scheduler().runs_schedules:
                mark.write(done)

        state["loops"] = [
            asyncio.create_task(
                _every(settings.poll_interval_s, poll, "registry poll"), name="scheduler-poll"
            ),
            asyncio.create_task(_every(settings.tick_s, tick, "tick"), name="scheduler-tick"),
        ]

    async def stop() -> None:
        for task in state.get("loops", []):  # type: ignore[attr-defined]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        registry = state.get("registry")
        if isinstance(registry, Registry):
            await registry.close()

    return make_service_app(
        broker, settings.bus, service=service.SERVICE, on_startup=[start], on_shutdown=[stop]
    )


async def _every(seconds: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` now and then every ``seconds``; a failing step is logged and tried again next time."""
    await asyncio.sleep(min(seconds, 2.0))  # the broker starts after the startup hooks
    while True:
        try:
            await step()
        except Exception:
            log.exception("scheduler %s failed; trying again in %.0f s", what, seconds)
        await asyncio.sleep(seconds)


def run(settings: SchedulerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
