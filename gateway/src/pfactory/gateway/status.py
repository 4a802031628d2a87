"""Following job status events: the gateway's job view moves only forward."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from pfactory.contracts.events import Envelope, JobStatusChanged, UnknownEventError
from pfactory.gateway.store import JobStore, StatusOutcome

log = logging.getLogger("pfactory.gateway.status")


async def apply_status_envelope(jobs: JobStore, envelope: Envelope) -> StatusOutcome | None:
    """Apply one ``JobStatusChanged``; other or unreadable events are skipped (None).

    Idempotent: a duplicate or older event is reported ``stale`` and changes nothing.
    """
    try:
        event = envelope.open_as(JobStatusChanged)
    except (UnknownEventError, ValidationError) as error:
        log.warning("ignoring %s %s on the job status topic: %s", envelope.type, envelope.event_id, error)
        return None
    outcome = await jobs.apply_status(event, envelope.occurred_at)
    log.debug("job %s -> %s: %s", event.job_id, event.status, outcome)
    return outcome
