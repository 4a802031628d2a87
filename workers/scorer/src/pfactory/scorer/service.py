"""The scorer's domain: how it answers a scoring request. No network imports.

This build cannot score yet, so it says so: the job is marked running at the ``received`` stage,
then failed with a reason that names the issue that brings scoring. It never reports a success it
did not earn.
"""

from __future__ import annotations

from pfactory.contracts.events import Event, JobStatus, JobStatusChanged, Progress, ScoringRequested

SERVICE = "scorer"
NOT_IMPLEMENTED_REASON = "scoring is not implemented in this build yet (issue #6: Scorer)"


def answer_scoring_request(request: ScoringRequested) -> list[Event]:
    """Return the events that answer one scoring request, in publishing order.

    Args:
        request: the accepted scoring request.

    Returns:
        ``JobStatusChanged`` running/received, then ``JobStatusChanged`` failed with the reason.
    """
    target = f"version {request.version}" if request.version is not None else f"alias {request.alias!r}"
    return [
        JobStatusChanged(
            job_id=request.job_id,
            status=JobStatus.RUNNING,
            stage="received",
            progress=Progress(
                done=0,
                total=1,
                unit="stages",
                message=f"scorer received {request.model_name!r} ({target}) for ds={request.ds}",
            ),
        ),
        JobStatusChanged(
            job_id=request.job_id, status=JobStatus.FAILED, stage="received", reason=NOT_IMPLEMENTED_REASON
        ),
    ]
