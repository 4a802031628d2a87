"""The trainer's domain: how one training request becomes a staged, evaluated model. No network SDK.

A job is a set of isolated runs (:mod:`pfactory.trainer.jobspec`): one ``fit`` run per sweep trial
(or one for a config without a sweep), run in parallel up to the worker's run slots through a
:class:`~pfactory.trainer.launcher.PodLauncher`; then the champion is selected, or the top k are
combined by an ``ensemble`` run. The selected model and its reference distributions are staged in
the registry's artifact store, and ``staging/job=<id>/training.json`` is written last: it is the
durable record that the job was trained. A redelivered request whose record exists is answered
from it, without training again (idempotent per job id).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from pfactory.contracts.configs.model import ModelConfig, ModelSpec
from pfactory.contracts.configs.pipeline import SelectionMode
from pfactory.contracts.events import (
    Event,
    JobStatus,
    JobStatusChanged,
    ModelTrained,
    Progress,
    TrainingFailed,
    TrainRequested,
)
from pfactory.contracts.issues import ConfigError
from pfactory.contracts.loader import load_config_dict
from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.staging import STAGING_PREFIX, stage_model
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from pfactory.trainer import runfiles
from pfactory.trainer.jobspec import MODEL_FILE, REFERENCE_FILE, RunResult, RunSpec, StoreLocation
from pfactory.trainer.launcher import PodLauncher, RunOutcome

log = logging.getLogger("pfactory.trainer")

SERVICE = "trainer"
TRAINING_RECORD = "training.json"
LOG_TAIL_CHARS = 4000

Emit = Callable[[str, Event], Awaitable[None]]
"""Publishes one answer under a label that makes its event id deterministic."""


class Tracker(Protocol):
    """Experiment tracking (MLflow) as the trainer uses it; synchronous, called in a thread."""

    def log_job(
        self,
        job_id: str,
        model_name: str,
        feature_set: str,
        trials: Sequence[Any],
        selected: Sequence[str],
        lineage: dict[str, Any],
        *,
        config: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """Record every trial of a job; returns run id → tracking run id."""

    def record_registration(self, job_id: str, version: int) -> int:
        """Tag the job's runs with the registry version; returns how many were tagged."""


@dataclass
class TrainerDeps:
    """What the trainer needs from the outside world, chosen by the app's wiring."""

    launcher: PodLauncher
    artifacts: ArtifactStore
    feature_store: StoreLocation
    run_root: str
    run_slots: asyncio.Semaphore
    working_dir: str | None = None
    labels_endpoint_url: str | None = None
    tracker: Tracker | None = None
    heartbeat_s: float = 60.0
    metrics: Metrics = field(default_factory=lambda: Metrics.disabled(SERVICE))


@dataclass
class TrialOutcome:
    """One run's end as the job record keeps it."""

    run_id: str
    params: dict[str, Any]
    outcome: RunOutcome
    result: RunResult | None
    output_uri: str

    @property
    def ok(self) -> bool:
        """The run finished and reported success."""
        return self.outcome.ok and self.result is not None and self.result.ok

    @property
    def reason(self) -> str | None:
        """Why the run failed, if it did."""
        if self.ok:
            return None
        if self.result is not None and self.result.reason:
            return self.result.reason
        return self.outcome.reason or "the run ended without a result"

    def summary(self, metric: str | None) -> dict[str, Any]:
        """The run as one row of the job record and the model card's sweep table."""
        metrics = {
            name: value["value"]
            for name, value in (self.result.metrics if self.result else {}).items()
            if isinstance(value, dict) and "value" in value
        }
        return {
            "run_id": self.run_id,
            "params": self.params,
            "status": "succeeded" if self.ok else "failed",
            "reason": self.reason,
            "metrics": metrics,
            "score": metrics.get(metric) if metric else None,
            "duration_s": round(self.outcome.duration_s, 3),
            "peak_memory_bytes": self.outcome.peak_memory_bytes,
            "timings": self.result.timings.model_dump() if self.result else None,
            "logs_tail": (self.outcome.logs or "")[-LOG_TAIL_CHARS:] or None,
        }


@dataclass
class _Job:
    request: TrainRequested
    config: ModelConfig
    deps: TrainerDeps
    emit: Emit
    done: int = 0
    total: int = 1
    started: float = field(default_factory=time.monotonic)
    statuses: asyncio.Task[None] | None = None
    """The last progress status being published in the background (each waits for the one before)."""

    @property
    def spec(self) -> ModelSpec:
        return self.config.spec

    def emit_soon(self, label: str, event: Event) -> None:
        """Publish a progress status without waiting for the broker: the run goes on meanwhile, and
        the statuses still leave in the order they were made. :meth:`flush` waits for them."""
        previous = self.statuses

        async def publish() -> None:
            if previous is not None:
                await previous
            await self.emit(label, event)

        self.statuses = asyncio.create_task(publish())

    async def flush(self) -> None:
        """Wait until every progress status is published (raises what a publish raised)."""
        if self.statuses is not None:
            await self.statuses


def record_key(job_id: str) -> str:
    """Where the durable record of a trained job lives in the artifact store."""
    return f"{STAGING_PREFIX}job={job_id}/{TRAINING_RECORD}"


def reference_key(job_id: str) -> str:
    """Where a job's staged reference distributions live."""
    return f"{STAGING_PREFIX}job={job_id}/{REFERENCE_FILE}"


def _status(
    job_id: str, stage: str, *, done: int, total: int, message: str, **extra: Any
) -> JobStatusChanged:
    return JobStatusChanged(
        job_id=job_id,
        status=JobStatus.RUNNING,
        stage=stage,
        progress=Progress(done=done, total=total, unit="runs", message=message),
        **extra,
    )


def _failed(
    request: TrainRequested, stage: str, reason: str, result: dict[str, Any] | None = None
) -> list[Event]:
    return [
        TrainingFailed(job_id=request.job_id, model_name=request.model_name, stage=stage, reason=reason),
        JobStatusChanged(
            job_id=request.job_id, status=JobStatus.FAILED, stage=stage, reason=reason, result=result or {}
        ),
    ]


async def answer_train_request(request: TrainRequested, deps: TrainerDeps, emit: Emit) -> None:
    """Train one request end to end, publishing progress, then ``ModelTrained`` or ``TrainingFailed``."""
    # the record lookup (a store round trip) and the config check (CPU) overlap
    lookup = asyncio.create_task(_recorded(deps.artifacts, request.job_id))
    try:
        config: ModelConfig | ConfigError = await asyncio.to_thread(
            load_config_dict, request.config, expect=ModelConfig
        )
    except ConfigError as error:
        config = error
    recorded = await lookup
    if recorded is not None:
        log.info("job %s was trained before; answering from its record", request.job_id)
        await emit(
            "answer-0",
            _status(
                request.job_id, "trained", done=1, total=1, message="trained", result=recorded["summary"]
            ),
        )
        await emit("answer-1", ModelTrained.model_validate(recorded["event"]))
        return
    if isinstance(config, ConfigError):
        for index, event in enumerate(
            _failed(request, "received", f"the model config does not validate: {config}")
        ):
            await emit(f"failed-{index}", event)
        return
    job = _Job(request, config, deps, emit)
    heartbeat = asyncio.create_task(_heartbeat(job))
    try:
        events = await _train(job)
    except BaseException:  # the request will be redelivered: its pending statuses are moot
        if job.statuses is not None:
            job.statuses.cancel()
        raise
    finally:
        heartbeat.cancel()
    await job.flush()
    # the final status and the answer go to different topics: published together (the gateway's job
    # record never moves back to an older state, whichever it reads first)
    await asyncio.gather(*(emit(f"answer-{index}", event) for index, event in enumerate(events)))


async def _recorded(artifacts: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    if not await artifacts.exists(record_key(job_id)):
        return None
    try:
        record: dict[str, Any] = json.loads(await artifacts.read(record_key(job_id)))
        ModelTrained.model_validate(record["event"])
    except (ValueError, KeyError, ValidationError) as error:
        log.warning("job %s has an unreadable training record (%s); training again", job_id, error)
        return None
    return record


async def _heartbeat(job: _Job) -> None:
    """Keep the job's record fresh during long runs, so nobody mistakes it for a lost one."""
    beat = 0
    while True:
        await asyncio.sleep(job.deps.heartbeat_s)
        beat += 1
        elapsed = time.monotonic() - job.started
        status = _status(
            job.request.job_id,
            "training",
            done=job.done,
            total=job.total,
            message=f"{job.done}/{job.total} runs finished after {elapsed:.0f} s",
        )
        try:
            await job.emit(f"heartbeat-{beat}", status)
        except Exception as error:  # a missed heartbeat only delays the record; the next one may pass
            log.warning("job %s: heartbeat not published: %r", job.request.job_id, error)


def _run_spec(
    job: _Job,
    run_id: str,
    params: dict[str, Any],
    *,
    kind: Literal["fit", "ensemble"] = "fit",
    inputs: Sequence[str] = (),
) -> RunSpec:
    deps = job.deps
    return RunSpec(
        job_id=job.request.job_id,
        run_id=run_id,
        kind=kind,
        config=job.request.config,
        params=params,
        inputs=list(inputs),
        feature_store=deps.feature_store,
        labels_endpoint_url=deps.labels_endpoint_url,
        working_dir=deps.working_dir,
        output_uri=f"{deps.run_root.rstrip('/')}/job={job.request.job_id}/{run_id}",
        threads=max(1, int(job.spec.resources.cpu)),
    )


async def _run(job: _Job, spec: RunSpec) -> TrialOutcome:
    async with job.deps.run_slots:
        outcome = await job.deps.launcher.run(
            spec, resources=job.spec.resources, model_name=job.request.model_name
        )
    result = outcome.result
    if result is not None:
        report_stage_timings(job.deps.metrics, result)
    trial = TrialOutcome(spec.run_id, dict(spec.params), outcome, result, spec.output_uri)
    job.done += 1
    status = "finished" if trial.ok else f"failed: {trial.reason}"
    job.emit_soon(
        f"run-{spec.run_id}",
        _status(
            job.request.job_id,
            "training",
            done=job.done,
            total=job.total,
            message=f"{spec.run_id} {status}"[:500],
        ),
    )
    return trial


def report_stage_timings(metrics: Metrics, result: RunResult) -> None:
    """One ``catalog.STAGE_DURATION`` value per stage the run entered, from the times its ``result.json`` reports.

    The isolated run measures its phases itself (it has no telemetry of its own); a phase it never
    reached reports exactly 0 s and is left out, so a run failing while loading adds no fit time.
    """
    for stage, seconds in result.timings.model_dump().items():
        if seconds > 0:
            metrics.emit(catalog.STAGE_DURATION, seconds * 1000, kind="train", stage=stage)


async def _train(job: _Job) -> list[Event]:
    from pfactory.trainer.sweep import TrialScore, expand_trials, select

    spec = job.spec
    request = job.request
    sweep = spec.sweep
    trials = expand_trials(sweep, seed=spec.training.split.seed) if sweep else [{}]
    ensemble = sweep is not None and sweep.selection.mode is SelectionMode.TOP_K_ENSEMBLE
    job.total = len(trials) + (1 if ensemble else 0)
    job.emit_soon(
        "started",
        _status(
            request.job_id,
            "training",
            done=0,
            total=job.total,
            message=f"training {len(trials)} trial(s) in isolation",
        ),
    )
    specs = [_run_spec(job, f"trial-{i:03d}", p) for i, p in enumerate(trials)]
    outcomes, data_failure = await _run_trials(job, specs)
    if data_failure is not None:
        # every trial reads the same data: the first to fail loading it speaks for all of them
        failed_summary = {"trials": [t.summary(None) for t in outcomes]}
        reason = data_failure.reason or "the training data could not be loaded"
        return _failed(request, "load", reason, {"training": failed_summary})
    metric = sweep.selection.metric if sweep and sweep.selection.metric else spec.metrics.primary
    summary: dict[str, Any] = {"trials": [t.summary(metric.value) for t in outcomes]}
    succeeded = [t for t in outcomes if t.ok]
    if not succeeded:
        return _failed(request, "training", _all_failed_reason(outcomes), {"training": summary})
    if sweep is None:
        chosen = succeeded[0]
        selected = [chosen.run_id]
    else:
        scores = [
            TrialScore(
                run_id=t.run_id, params=t.params, value=t.summary(metric.value)["score"] if t.ok else None
            )
            for t in outcomes
        ]
        try:
            picked = select(scores, sweep.selection, spec.metrics.primary)
        except ValueError as error:
            return _failed(request, "selection", str(error), {"training": summary})
        selected = list(picked.run_ids)
        by_id = {t.run_id: t for t in outcomes}
        if ensemble:
            inputs = [by_id[r].output_uri for r in selected]
            chosen = await _run(job, _run_spec(job, "ensemble", {}, kind="ensemble", inputs=inputs))
            outcomes.append(chosen)
            summary["ensemble"] = chosen.summary(metric.value)
            if not chosen.ok:
                return _failed(
                    request,
                    "ensemble",
                    f"the top-{len(selected)} ensemble failed: {chosen.reason}",
                    {"training": summary},
                )
        else:
            chosen = by_id[selected[0]]
        summary["selection"] = {
            "mode": sweep.selection.mode.value,
            "metric": metric.value,
            "k": sweep.selection.k,
            "ensemble": sweep.selection.ensemble.value if ensemble else None,
        }
    summary["selected"] = selected
    summary["strategy"] = sweep.strategy.value if sweep else None
    return await _stage(job, chosen, outcomes, summary)


async def _run_trials(job: _Job, specs: Sequence[RunSpec]) -> tuple[list[TrialOutcome], TrialOutcome | None]:
    """Run the trials in parallel; stop them all when one finds the training data unusable."""
    tasks = [asyncio.create_task(_run(job, spec)) for spec in specs]
    try:
        for finished in asyncio.as_completed(tasks):
            trial = await finished
            if not trial.ok and trial.result is not None and trial.result.stage == "load":
                done = [t.result() for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
                return done, trial
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [task.result() for task in tasks], None


def _all_failed_reason(outcomes: Sequence[TrialOutcome]) -> str:
    if len(outcomes) == 1:
        return outcomes[0].reason or "the run failed"
    reasons = dict.fromkeys(t.reason or "the run failed" for t in outcomes)
    first = next(iter(reasons))
    more = f" ({len(reasons) - 1} other distinct reason(s) in the job record)" if len(reasons) > 1 else ""
    return f"all {len(outcomes)} trials failed; {first}{more}"


async def _stage(
    job: _Job, chosen: TrialOutcome, outcomes: Sequence[TrialOutcome], summary: dict[str, Any]
) -> list[Event]:
    request, deps = job.request, job.deps
    result = chosen.result
    assert result is not None and result.sha256 is not None
    endpoint = deps.feature_store.endpoint_url
    data, reference = await asyncio.gather(
        asyncio.to_thread(runfiles.read_bytes, chosen.output_uri, MODEL_FILE, endpoint_url=endpoint),
        asyncio.to_thread(runfiles.read_bytes, chosen.output_uri, REFERENCE_FILE, endpoint_url=endpoint),
    )
    staged, stored_reference = await asyncio.gather(
        stage_model(deps.artifacts, request.job_id, data),
        deps.artifacts.put(reference_key(request.job_id), reference),
    )
    if staged.sha256 != result.sha256:
        reason = (
            f"the model written by {chosen.run_id} changed before staging (sha256 {result.sha256} reported, "
            f"{staged.sha256} read); train again"
        )
        return _failed(request, "staging", reason, {"training": summary})
    metrics = dict(result.metrics)
    if job.spec.sweep is not None:
        metrics["sweep"] = {
            "strategy": summary.get("strategy"),
            "selection": summary.get("selection"),
            "selected": summary["selected"],
            "trials": [
                {k: t[k] for k in ("run_id", "params", "metrics", "status", "reason", "duration_s")}
                for t in summary["trials"]
            ],
        }
    lineage = dict(result.lineage)
    if request.submitted_by:
        lineage["submitted_by"] = request.submitted_by
    trained = ModelTrained(
        job_id=request.job_id,
        model_name=request.model_name,
        feature_set=request.feature_set,
        artifact=staged,
        config=request.config,
        metrics=metrics,
        fairness=result.fairness,
        reference_uri=stored_reference.uri,
        lineage=lineage,
        framework=result.framework,
    )
    if deps.tracker is not None:
        summary["mlflow"] = await _track(deps.tracker, job, outcomes, summary["selected"], lineage)
    record = {"event": trained.model_dump(mode="json"), "summary": {"training": summary}}
    await deps.artifacts.put(record_key(request.job_id), json.dumps(record).encode())
    trained_status = _status(
        request.job_id,
        "trained",
        done=job.total,
        total=job.total,
        message=f"selected {', '.join(summary['selected'])}",
        result={"training": summary},
    )
    return [trained_status, trained]


async def _track(
    tracker: Tracker,
    job: _Job,
    outcomes: Sequence[TrialOutcome],
    selected: Sequence[str],
    lineage: dict[str, Any],
) -> dict[str, Any]:
    from pfactory.trainer.tracking import TrialRecord

    records = [
        TrialRecord(
            run_id=t.run_id,
            params=t.params,
            metrics={
                k: v
                for k, v in (t.result.metrics if t.result else {}).items()
                if isinstance(v, dict) and "value" in v
            },
            status="succeeded" if t.ok else "failed",
            reason=t.reason,
            duration_s=t.outcome.duration_s,
        )
        for t in outcomes
    ]
    try:
        runs = await asyncio.to_thread(
            lambda: tracker.log_job(
                job.request.job_id,
                job.request.model_name,
                str(job.request.feature_set),
                records,
                selected,
                lineage,
                config=job.request.config,
            )
        )
    except Exception as error:  # tracking is a mirror: its outage must not fail a trained model
        log.warning("MLflow tracking failed for job %s: %r", job.request.job_id, error)
        return {"error": f"{type(error).__name__}: {error}"[:500]}
    return {"runs": runs}
