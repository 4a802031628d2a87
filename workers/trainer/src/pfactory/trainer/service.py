"""The trainer's domain: how it answers a training request. No network imports.

This build cannot train yet, so it says so: the job is marked running at the ``received`` stage,
then failed with a reason that names the issue that brings training. It never reports a success
it did not earn.
"""

from __future__ import annotations

from pfactory.contracts.events import Event, JobStatus, JobStatusChanged, Progress, TrainRequested

SERVICE = "trainer"
NOT_IMPLEMENTED_REASON = "training is not implemented in this build yet (issue #5: Trainer)"


def answer_train_request(request: TrainRequested) -> list[Event]:
    """Return the events that answer one training request, in publishing order.

    Args:
        request: the accepted training request.

    Returns:
        ``JobStatusChanged`` running/received, then ``JobStatusChanged`` failed with the reason.
    """
    return [
        JobStatusChanged(
            job_id=request.job_id,
            status=JobStatus.RUNNING,
            stage="received",
            progress=Progress(
                done=0,
                total=1,
                unit="stages",
                message=f"trainer received model {request.model_name!r} on {request.feature_set}",
            ),
        ),
        JobStatusChanged(
            job_id=request.job_id, status=JobStatus.FAILED, stage="received", reason=NOT_IMPLEMENTED_REASON
        ),
    ]
