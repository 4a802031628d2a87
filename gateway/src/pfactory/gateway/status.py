"""Following job status events: the gateway's job view moves only forward, and a job's end is counted once."""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import ValidationError

from pfactory.contracts.events import Envelope, JobKind, JobStatus, JobStatusChanged, UnknownEventError
from pfactory.gateway.store import JobRecord, JobStore, StatusOutcome
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.gateway.status")


class JobMetrics:
    """The job lifecycle as metrics: accepted (202), and once at its final status with its duration."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def submitted(self, kind: JobKind) -> None:
        """Count a newly accepted job (not a replayed one)."""
        self.metrics.emit(catalog.JOBS_SUBMITTED, kind=kind.value)

    def finished(self, job: JobRecord, at: datetime) -> None:
        """Count a job that just reached its final status ``job.status`` at ``at`` (the worker's clock)."""
        ended = catalog.JOBS_SUCCEEDED if job.status is JobStatus.SUCCEEDED else catalog.JOBS_FAILED
        self.metrics.emit(ended, kind=job.kind.value)
        # the worker's clock may run a little behind the gateway's: never a negative duration
        elapsed_ms = max((at - job.created_at).total_seconds() * 1000, 0.0)
        self.metrics.emit(catalog.JOB_DURATION, elapsed_ms, kind=job.kind.value, status=job.status.value)


class JobStatusFollower:
    """Applies ``JobStatusChanged`` envelopes to the job store and reports jobs that end."""

    def __init__(self, jobs: JobStore, job_metrics: JobMetrics) -> None:
        self.jobs = jobs
        self.job_metrics = job_metrics

    async def apply(self, envelope: Envelope) -> StatusOutcome | None:
        """Apply one ``JobStatusChanged``; other or unreadable events are skipped (None).

        Idempotent: a duplicate or older event is reported ``stale`` (``already_terminal`` once the job
        ended) and changes nothing, so only the transition into a final status is counted.
        """
        try:
            event = envelope.open_as(JobStatusChanged)
        except (UnknownEventError, ValidationError) as error:
            log.warning("ignoring %s %s on the job status topic: %s", envelope.type, envelope.event_id, error)
            return None
        outcome = await self.jobs.apply_status(event, envelope.occurred_at)
        log.debug("job %s -> %s: %s", event.job_id, event.status, outcome)
        if outcome is StatusOutcome.APPLIED and event.status.terminal:
            job = await self.jobs.get_job(event.job_id)  # once per job: its kind and acceptance time
            if job is not None:
                self.job_metrics.finished(job, envelope.occurred_at)
        return outcome
