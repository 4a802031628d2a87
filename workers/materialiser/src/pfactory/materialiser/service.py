"""The materialiser's domain: how it answers a materialisation request. No network imports.

This build cannot materialise yet, so it says so: the job is marked running at the ``received``
stage, then failed with a reason that names the issue that brings materialisation. It never
reports a success it did not earn.
"""

from __future__ import annotations

from pfactory.contracts.events import Event, JobStatus, JobStatusChanged, MaterialisationRequested, Progress

SERVICE = "materialiser"
NOT_IMPLEMENTED_REASON = "materialisation is not implemented in this build yet (issue #4: Materialiser)"


def answer_materialisation_request(request: MaterialisationRequested) -> list[Event]:
    """Return the events that answer one materialisation request, in publishing order.

    Args:
        request: the accepted materialisation request.

    Returns:
        ``JobStatusChanged`` running/received, then ``JobStatusChanged`` failed with the reason.
    """
    window = f" for {request.start_ds}..{request.end_ds}" if request.start_ds or request.end_ds else ""
    return [
        JobStatusChanged(
            job_id=request.job_id,
            status=JobStatus.RUNNING,
            stage="received",
            progress=Progress(
                done=0,
                total=1,
                unit="stages",
                message=f"materialiser received feature set {request.feature_set}{window}",
            ),
        ),
        JobStatusChanged(
            job_id=request.job_id, status=JobStatus.FAILED, stage="received", reason=NOT_IMPLEMENTED_REASON
        ),
    ]
