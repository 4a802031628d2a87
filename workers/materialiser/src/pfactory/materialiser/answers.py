"""The events that answer a materialisation request, built from day results. No network imports.

Each answer carries a stable label; the app derives the event id from the request's event id and
the label, so a redelivered request re-publishes the same ids (consumers de-duplicate).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pfactory.contracts.events import (
    Event,
    FeatureSetRef,
    FeaturesMaterialised,
    JobStatus,
    JobStatusChanged,
    MaterialisationFailed,
    MaterialisationRequested,
    Progress,
)
from pfactory.materialiser.service import DayResult

STAGE = "materialising"
Answer = tuple[str, Event]


def window(request: MaterialisationRequested, today: date) -> tuple[date, date]:
    """The days a request asks for: both bounds None → today; one bound → that single day."""
    start = request.start_ds or request.end_ds or today
    end = request.end_ds or request.start_ds or today
    return start, end


def started(request: MaterialisationRequested, total: int, start: date, end: date) -> Answer:
    """``running`` with progress 0 of ``total`` days."""
    message = f"materialising {request.feature_set} for {start}..{end}"
    progress = Progress(done=0, total=total, unit="days", message=message)
    return "started", JobStatusChanged(
        job_id=request.job_id, status=JobStatus.RUNNING, stage=STAGE, progress=progress
    )


def rejected(request: MaterialisationRequested, reason: str) -> list[Answer]:
    """The config could not be loaded: the job fails with the reason, nothing is computed."""
    failed = MaterialisationFailed(job_id=request.job_id, feature_set=request.feature_set, reason=reason)
    status = JobStatusChanged(job_id=request.job_id, status=JobStatus.FAILED, stage="received", reason=reason)
    return [("rejected", failed), ("finished", status)]


def day_answers(request: MaterialisationRequested, result: DayResult, done: int, total: int) -> list[Answer]:
    """The day's outcome event, then the job's progress."""
    ref = FeatureSetRef(name=result.feature_set, version=result.version)
    label = result.ds.isoformat()
    outcome: Event
    if result.good:
        outcome = FeaturesMaterialised(
            job_id=request.job_id,
            feature_set=ref,
            ds=result.ds,
            uri=result.uri or "",
            rows=result.rows,
            columns=result.columns,
            validation=result.validation,
            lineage=[{"feature": name, "sources": sources} for name, sources in result.lineage.items()],
        )
    else:
        outcome = MaterialisationFailed(
            job_id=request.job_id,
            feature_set=ref,
            ds=result.ds,
            reason=result.reason or result.status,
            quarantine_uri=result.quarantine_uri,
            failing_expectations=result.failures,
        )
    verb = "already good" if result.skipped else result.status
    progress = Progress(done=done, total=total, unit="days", message=f"{result.ds} {verb}")
    status = JobStatusChanged(job_id=request.job_id, status=JobStatus.RUNNING, stage=STAGE, progress=progress)
    return [(f"{label}/outcome", outcome), (f"{label}/progress", status)]


def finished(request: MaterialisationRequested, results: Sequence[DayResult]) -> Answer:
    """``succeeded`` when every day is good, else ``failed`` naming the failed days and the first failure."""
    failed = [r for r in results if not r.good]
    failed_days = [r.ds.isoformat() for r in failed]
    summary = {
        "days": len(results),
        "good": len(results) - len(failed),
        "skipped": sum(r.skipped for r in results),
        "failed_days": failed_days,
        "rows": sum(r.rows for r in results if r.good),
        "partitions": [r.uri for r in results if r.good],
    }
    if not failed:
        event = JobStatusChanged(
            job_id=request.job_id, status=JobStatus.SUCCEEDED, stage=STAGE, result=summary
        )
        return "finished", event
    first = failed[0]
    reason = (
        f"{len(failed)} of {len(results)} days failed: {', '.join(failed_days)}; "
        f"first: {first.ds}: {first.reason or first.status}"
    )
    event = JobStatusChanged(
        job_id=request.job_id, status=JobStatus.FAILED, stage=STAGE, reason=reason, result=summary
    )
    return "finished", event
