"""The registrar's domain: what it makes of a trained model. No network imports.

Registration (artifact store, version index, model card) lands in a later issue; this build only
acknowledges what it received, so an operator can see the event arrive in the log.
"""

from __future__ import annotations

from pfactory.contracts.events import ModelTrained

SERVICE = "registrar"


def describe_trained_model(event: ModelTrained) -> str:
    """Return the log line that acknowledges a trained model (registration is not built yet)."""
    return (
        f"received ModelTrained: model={event.model_name} feature_set={event.feature_set} "
        f"job={event.job_id} artifact={event.artifact.uri} sha256={event.artifact.sha256[:12]}… "
        "(registration is not implemented in this build yet; nothing was stored)"
    )
