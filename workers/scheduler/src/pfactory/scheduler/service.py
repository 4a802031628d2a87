"""The scheduler's domain: what it makes of a registered version. No network imports.

DAG generation and archiving land in a later issue; this build only acknowledges what it
received, so an operator can see the event arrive in the log.
"""

from __future__ import annotations

from pfactory.contracts.events import ModelRegistered

SERVICE = "scheduler"


def describe_registered_version(event: ModelRegistered) -> str:
    """Return the log line that acknowledges a registered version (scheduling is not built yet)."""
    return (
        f"received ModelRegistered: model={event.model_name} version={event.version} "
        f"feature_set={event.feature_set} status={event.status} job={event.job_id} "
        "(scheduling is not implemented in this build yet; no DAG was written)"
    )
