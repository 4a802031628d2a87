"""Read a job's request event back from the bus (``submit`` and the demo show it)."""

from __future__ import annotations

from collections.abc import Collection

from pfactory.bus.reading import SeenEnvelope, read_envelopes
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics

REQUEST_TOPICS = {"materialise": topics.MATERIALISATION_REQUESTED, "train": topics.TRAIN_REQUESTED}


async def find_job_events(
    bootstrap_servers: str, topic: str, job_ids: Collection[str], *, timeout_s: float = 15.0
) -> dict[str, SeenEnvelope]:
    """Read ``topic`` from the beginning until an envelope of each job (by payload ``job_id``) is seen.

    Args:
        bootstrap_servers: the broker.
        topic: the topic to read.
        job_ids: the jobs to look for.
        timeout_s: how long to keep reading.

    Returns:
        The first envelope found for each job id (missing ids were not seen in time).
    """
    wanted = set(job_ids)
    seen = await read_envelopes(
        BusSettings(bootstrap_servers=bootstrap_servers),
        topic,
        keep=lambda envelope: envelope.payload.get("job_id") in wanted,
        count=len(wanted),
        timeout_s=timeout_s,
    )
    found: dict[str, SeenEnvelope] = {}
    for item in seen:
        found.setdefault(str(item.envelope.payload["job_id"]), item)
    return found
