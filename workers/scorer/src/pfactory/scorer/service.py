"""The scorer's domain: how it answers a scoring request. No network imports.

A request is resolved to a version (by number, alias or the live one), the version is loaded
(cached; sha256-checked, trusted types only), the day is scored in record batches
(:mod:`pfactory.scorer.batch`), and the answer is published: ``ScoringCompleted`` with the drift
summary, ``DriftDetected`` when a PSI passes the model's threshold, and the job's status. A bad
request (unknown model, no such day...) ends the job failed with a reason; transient registry
errors propagate so the consumer retries. Event labels are fixed, so a redelivered request, which
rewrites the same day, republishes the same event ids.

Alerts (:mod:`pfactory.scorer.alerts`) go out before the job's final status: a failed run raises
the model's scoring alert and a succeeded one resolves it; a day whose drift passes the threshold
raises its drift alert and a day measured without drift resolves it (a version without a
reference measures nothing and says nothing). Metrics (batch rows, the day's time,
runs by status, PSI per input and the score, stage times) go to ``ScorerDeps.metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pfactory.contracts.events import (
    AlertRaised,
    DriftDetected,
    Event,
    JobStatus,
    JobStatusChanged,
    Progress,
    ScoringCompleted,
    ScoringFailed,
    ScoringRequested,
)
from pfactory.registry.loading import VersionLoader
from pfactory.scorer import alerts
from pfactory.scorer.batch import ScoredDay, Store, score_day
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics, TagValue

SERVICE = "scorer"
STAGES = 3

log = logging.getLogger("pfactory.scorer")

Emit = Callable[[str, Event], Awaitable[None]]
"""Publishes an event under a label that is stable across redeliveries (it derives the event id)."""


@dataclass
class ScorerDeps:
    """What answering needs: the version loader, the store, the batch size, which errors to retry,
    where metrics go, and the gateway URL alerts link to (None: alerts name the job in their details)."""

    loader: VersionLoader
    store: Store
    batch_rows: int
    transient: tuple[type[BaseException], ...] = ()
    metrics: Metrics = field(default_factory=lambda: Metrics.disabled(SERVICE))
    gateway_url: str | None = None


def drift_summary(report: dict[str, Any] | None) -> dict[str, float]:
    """``{feature: psi, ..., "score": psi}`` for ``ScoringCompleted`` (empty without a reference)."""
    if report is None:
        return {}
    summary = {str(name): float(value) for name, value in report["features"].items()}
    if report["score"] is not None:
        summary["score"] = float(report["score"])
    return summary


async def answer_scoring_request(request: ScoringRequested, deps: ScorerDeps, emit: Emit) -> None:
    """Score the requested day and publish the outcome (see the module docstring).

    Args:
        request: the accepted scoring request.
        deps: loader, store and settings.
        emit: publishes one event under a stable label.
    """
    target = (
        f"version {request.version}"
        if request.version is not None
        else (f"alias {request.alias!r}" if request.alias is not None else "the live version")
    )
    await emit(
        "running-resolve",
        _running(request, 0, f"resolving {request.model_name} ({target}) for ds={request.ds}"),
    )
    version: int | None = None
    feature_set = request.feature_set
    try:
        started = time.perf_counter()
        record = await deps.loader.resolve(
            request.model_name, feature_set=request.feature_set, version=request.version, alias=request.alias
        )
        version, feature_set = record.version, record.feature_set
        loaded = await deps.loader.load(record)
        loading = time.perf_counter() - started
        await emit("running-score", _running(request, 1, f"scoring ds={request.ds} with {record.label}"))
        started = time.perf_counter()
        scored = await asyncio.to_thread(
            score_day, loaded, request.ds, deps.store, batch_rows=deps.batch_rows
        )
        day = time.perf_counter() - started
    except deps.transient:
        raise
    except Exception as error:  # any other failure ends the job with its reason instead of hanging it
        log.warning(
            "scoring job %s failed: %s", request.job_id, error, exc_info=not isinstance(error, LookupError)
        )
        reason = (
            str(error) if isinstance(error, (LookupError, ValueError)) else f"{type(error).__name__}: {error}"
        )
        await emit(
            "failed",
            ScoringFailed(
                job_id=request.job_id,
                model_name=request.model_name,
                version=version,
                ds=request.ds,
                reason=reason,
            ),
        )
        deps.metrics.emit(
            catalog.SCORING_RUNS,
            model=request.model_name,
            feature_set=str(feature_set) if feature_set else None,
            model_version=version,
            status="failed",
        )
        run = alerts.RunContext(request, version, feature_set, deps.gateway_url)
        await emit("alert-scoring", alerts.scoring_failed(run, reason))
        await emit(
            "status-failed",
            JobStatusChanged(job_id=request.job_id, status=JobStatus.FAILED, stage="scoring", reason=reason),
        )
        return
    _measure(deps.metrics, request, record.version, str(record.feature_set), scored, loading, day)
    run = alerts.RunContext(request, record.version, record.feature_set, deps.gateway_url)
    await _publish_outcome(request, record.version, scored, emit, run)


def _measure(
    metrics: Metrics,
    request: ScoringRequested,
    version: int,
    feature_set: str,
    scored: ScoredDay,
    loading: float,
    day: float,
) -> None:
    """A succeeded run's metrics: stage times, the day's rows and time, the run, and its drift."""
    model = request.model_name
    metrics.emit(catalog.STAGE_DURATION, loading * 1000, kind="score", stage="load")
    for stage, seconds in scored.seconds.items():
        metrics.emit(catalog.STAGE_DURATION, seconds * 1000, kind="score", stage=stage)
    metrics.emit(
        catalog.SCORING_ROWS,
        scored.rows,
        model=model,
        feature_set=feature_set,
        model_version=version,
        mode="batch",
    )
    pair: dict[str, TagValue] = {"model": model, "feature_set": feature_set, "model_version": version}
    metrics.emit(catalog.SCORING_LATENCY, day * 1000, mode="batch", **pair)
    metrics.emit(catalog.SCORING_RUNS, status="succeeded", **pair)
    report = scored.drift
    if report is None:
        return
    for feature, psi in drift_summary(report).items():
        metrics.emit(catalog.DRIFT_PSI, psi, feature=feature, **pair)
    metrics.emit(catalog.DRIFTED_FEATURES, len(report["drifted"]), **pair)


async def _publish_outcome(
    request: ScoringRequested,
    version: int,
    scored: ScoredDay,
    emit: Emit,
    run: alerts.RunContext,
) -> None:
    drift = drift_summary(scored.drift)
    await emit(
        "completed",
        ScoringCompleted(
            job_id=request.job_id,
            model_name=request.model_name,
            version=version,
            ds=request.ds,
            rows=scored.rows,
            predictions_uri=scored.predictions_uri,
            drift=drift,
        ),
    )
    report = scored.drift
    if report is not None and (report["drifted"] or report["score_drifted"]):
        moved = {name: float(report["features"][name]) for name in report["drifted"]}
        log.warning("drift on %s v%s ds=%s: %s", request.model_name, version, request.ds, moved)
        await emit(
            "drift",
            DriftDetected(
                model_name=request.model_name,
                version=version,
                ds=request.ds,
                threshold=float(report["threshold"]),
                feature_psi=moved,
                score_psi=report["score"],
            ),
        )
    if report is not None:
        drift_alert = alerts.drift_measured(run, report, drift)
        label = "alert-drift" if isinstance(drift_alert, AlertRaised) else "alert-drift-resolved"
        await emit(label, drift_alert)
    await emit("alert-scoring-resolved", alerts.scoring_succeeded(run, scored.rows))
    result = {
        "predictions_uri": scored.predictions_uri,
        "rows": scored.rows,
        "drift": drift,
        "drift_threshold": float(report["threshold"]) if report is not None else None,
        "drifted": list(report["drifted"]) if report is not None else [],
        "version": version,
    }
    await emit(
        "status-succeeded",
        JobStatusChanged(job_id=request.job_id, status=JobStatus.SUCCEEDED, stage="scored", result=result),
    )


def _running(request: ScoringRequested, done: int, message: str) -> JobStatusChanged:
    return JobStatusChanged(
        job_id=request.job_id,
        status=JobStatus.RUNNING,
        stage="scoring" if done else "received",
        progress=Progress(done=done, total=STAGES, unit="stages", message=message),
    )
