"""The trainer's FastStream app: wiring only; the decisions live in :mod:`pfactory.trainer.service`."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

from faststream.asgi import AsgiFastStream

from pfactory.bus.app import make_service_app, serve
from pfactory.bus.broker import EventPublisher, build_broker
from pfactory.bus.consumer import subscribe
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, Event, ModelRegistered, TrainRequested
from pfactory.registry.wiring import RegistrySettings, build_artifact_store
from pfactory.trainer import service
from pfactory.trainer.jobspec import StoreLocation
from pfactory.trainer.launcher import PodLauncher
from pfactory.trainer.settings import TrainerSettings
from pfactory.trainer.tracking import MlflowSettings, MlflowTracker

log = logging.getLogger("pfactory.trainer")


def build_launcher(settings: TrainerSettings) -> PodLauncher:
    """The isolation backend the settings name."""
    if settings.backend == "kubernetes":
        from pfactory.trainer.adapters.kubernetes import KubernetesPodLauncher
        from pfactory.trainer.manifest import KubernetesSettings

        return KubernetesPodLauncher(KubernetesSettings())
    from pfactory.trainer.adapters.process import ProcessPodLauncher

    return ProcessPodLauncher(settings.scratch_dir.resolve())


def build(settings: TrainerSettings) -> AsgiFastStream:
    """The trainer app: consumes ``pf.train.requested``; answers on the model and job topics."""
    broker = build_broker(settings.bus, service=service.SERVICE)
    metrics = settings.telemetry.metrics(service.SERVICE)
    publisher = EventPublisher(broker, producer=service.SERVICE)
    artifacts = build_artifact_store(RegistrySettings())
    launcher = build_launcher(settings)
    mlflow = MlflowSettings()
    tracker = MlflowTracker(mlflow) if mlflow.tracking_uri else None
    deps = service.TrainerDeps(
        launcher=launcher,
        artifacts=artifacts,
        feature_store=StoreLocation(
            root=settings.feature_store_root,
            endpoint_url=settings.feature_store_endpoint_url,
            region=settings.feature_store_region,
        ),
        run_root=settings.run_root or str(settings.scratch_dir.resolve()),
        run_slots=asyncio.Semaphore(settings.max_parallel_runs),
        working_dir=settings.working_dir or os.getcwd(),
        labels_endpoint_url=settings.feature_store_endpoint_url,
        tracker=tracker,
        heartbeat_s=settings.heartbeat_s,
        metrics=metrics,
    )
    in_flight: set[str] = set()

    @subscribe(
        broker,
        topics.TRAIN_REQUESTED,
        group_id=settings.group_id,
        settings=settings.bus,
        publisher=publisher,
        concurrency=settings.max_concurrent_jobs,
        metrics=metrics,
    )
    async def on_train_requested(envelope: Envelope) -> None:
        request = envelope.open_as(TrainRequested)
        if request.job_id in in_flight:  # a re-published request of a job this worker is training
            log.info("job %s is already training here; ignoring the repeated request", request.job_id)
            return

        async def emit(label: str, event: Event) -> None:
            event_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{envelope.event_id}/{label}")
            )
            await publisher.publish(event, cause=envelope, event_id=event_id)

        log.info("training job=%s model=%s", request.job_id, request.model_name)
        in_flight.add(request.job_id)
        try:
            await service.answer_train_request(request, deps, emit)
        finally:
            in_flight.discard(request.job_id)

    if tracker is not None:

        @subscribe(
            broker,
            topics.MODEL_REGISTERED,
            group_id=f"{settings.group_id}-tracking",
            settings=settings.bus,
            publisher=publisher,
            metrics=metrics,
        )
        async def on_model_registered(envelope: Envelope) -> None:
            event = envelope.open_as(ModelRegistered)
            if event.job_id:
                await asyncio.to_thread(tracker.record_registration, event.job_id, event.version)

    async def warm() -> None:  # the fork server and a standby child up before the first job
        start = getattr(launcher, "start", None)
        if start is not None:
            await start()

    async def close() -> None:
        await launcher.aclose()
        await artifacts.close()
        metrics.close()

    return make_service_app(
        broker, settings.bus, service=service.SERVICE, on_startup=[warm], on_shutdown=[close]
    )


def run(settings: TrainerSettings) -> None:
    """Serve the app and its health endpoints until SIGTERM/SIGINT."""
    serve(build(settings), host=settings.health_host, port=settings.health_port, log_level=settings.log_level)
