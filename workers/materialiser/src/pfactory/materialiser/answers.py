"""The events that answer a materialisation request, built from day results. No network imports.

Each answer carries a stable label; the app derives the event id from the request's event id and
the label, so a redelivered request re-publishes the same ids (consumers de-duplicate).

Alerts (:class:`ValidationAlerts`): a day that fails validation raises ``validation:<set>@<version>``
(one incident per feature-set version, however many days or retries fail); a later day of the set
that validates good resolves it. The partition store keeps only per-day markers, so whether an
incident is open is not known here: each job resolves at its first freshly validated good day, and
again after any day of the job that failed (the router ignores a resolve with no open incident).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any
from urllib.parse import quote

from pfactory.contracts.events import (
    AlertRaised,
    AlertResolved,
    Event,
    FeatureSetRef,
    FeaturesMaterialised,
    JobStatus,
    JobStatusChanged,
    MaterialisationFailed,
    MaterialisationRequested,
    Progress,
    Severity,
)
from pfactory.materialiser.service import SERVICE, DayResult

STAGE = "materialising"
Answer = tuple[str, Event]
VALIDATION_CHECK = "feature_validation"
SUMMARY_MAX = 1000
"""PagerDuty keeps 1024 characters of a summary."""


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


def validation_key(feature_set: str, version: str) -> str:
    """The incident key of a feature-set version's validation: ``validation:<name>@<version>``."""
    return f"validation:{feature_set}@{version}"


class ValidationAlerts:
    """The alert answers of one job's days: raised on a failed validation, resolved by a later good day."""

    def __init__(self, request: MaterialisationRequested, gateway_url: str | None) -> None:
        """Alerts for ``request``'s days; links point at ``gateway_url`` (None: the job id in details only)."""
        self.request = request
        self.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        self._resolve = True

    def after(self, result: DayResult) -> list[Answer]:
        """The alert event the day calls for, if any (labelled by day, so a redelivery repeats its id)."""
        label = result.ds.isoformat()
        key = validation_key(result.feature_set, result.version)
        if result.status == "quarantined":
            self._resolve = True
            return [(f"{label}/alert-raised", self._raised(result, key))]
        if result.good and not result.skipped and self._resolve:
            self._resolve = False
            summary = (
                f"feature set {result.feature_set}@{result.version} validated good on {result.ds} "
                f"(job {self.request.job_id})"
            )
            resolved = AlertResolved(dedup_key=key, check=VALIDATION_CHECK, source=SERVICE, summary=summary)
            return [(f"{label}/alert-resolved", resolved)]
        return []

    def _raised(self, result: DayResult, key: str) -> AlertRaised:
        evaluated = result.validation.get("evaluated", len(result.failures))
        failed = ", ".join(_expectation(f) for f in result.failures)
        summary = (
            f"feature set {result.feature_set}@{result.version} failed validation on {result.ds}: "
            f"{len(result.failures)} of {evaluated} expectations failed: {failed}"
        )
        if len(summary) > SUMMARY_MAX:
            summary = summary[: SUMMARY_MAX - 1] + "…"
        details: dict[str, Any] = {
            "job_id": self.request.job_id,
            "feature_set": result.feature_set,
            "version": result.version,
            "ds": result.ds.isoformat(),
            "rows": result.rows,
            "quarantine_uri": result.quarantine_uri,
            "evaluated": evaluated,
            "failed_expectations": result.failures,
        }
        return AlertRaised(
            dedup_key=key,
            check=VALIDATION_CHECK,
            severity=Severity.ERROR,
            summary=summary,
            source=SERVICE,
            feature_set_name=result.feature_set,
            links=self._links(result),
            details=details,
        )

    def _links(self, result: DayResult) -> dict[str, str]:
        if self.gateway_url is None:
            return {}
        name, version = quote(result.feature_set, safe=""), quote(result.version, safe="")
        return {
            "job": f"{self.gateway_url}/v1/jobs/{quote(self.request.job_id, safe='')}",
            "partition": f"{self.gateway_url}/v1/feature-sets/{name}/versions/{version}/partitions/{result.ds}",
        }


def _expectation(failure: dict[str, Any]) -> str:
    """``feature 'age': between (2 unexpected)`` from a failed expectation's JSON form."""
    text = str(failure.get("origin") or failure.get("expectation"))
    if failure.get("unexpected_count") is not None:
        text += f" ({failure['unexpected_count']} unexpected)"
    elif failure.get("error"):
        text += " (could not be evaluated)"
    return text
