"""HTTP models of scoring runs (``ScoringRunCreate``, ``ScoringRunCreated``, ``ScoringRunPublic``, …).

A scoring run is a job of kind ``score``; these models show it in the words of a scheduler.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pfactory.contracts.events import JobStatus
from pfactory.gateway.schemas import ProgressPublic

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$"


class ScoringRunCreate(BaseModel):
    """Score one day's feature partition with a version, an alias, or (neither) the live version."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="The registered model's name.", examples=["credit_default"])
    ds: date = Field(description="The day whose feature partition is scored (YYYY-MM-DD).")
    version: int | None = Field(
        default=None, ge=1, description="Score with this version number (not together with 'alias')."
    )
    alias: str | None = Field(
        default=None, min_length=1, description="Score with the version holding this alias, e.g. 'champion'."
    )
    feature_set: str | None = Field(
        default=None,
        description="The pair's feature set as <name>@<version>; needed when the model is registered on several.",
        examples=["credit_features@3"],
    )
    run_id: str | None = Field(
        default=None,
        pattern=RUN_ID_PATTERN,
        description="Client-chosen run id (e.g. the Airflow run id): posting the same id again returns "
        "that run instead of starting a second one. Alternative to the Idempotency-Key header.",
    )

    def both_version_and_alias(self) -> str | None:
        """Why the body is refused when it names both a version and an alias (None when it does not)."""
        if self.version is not None and self.alias is not None:
            return (
                f"pick one of 'version' ({self.version}) or 'alias' ({self.alias!r}), not both; "
                "send neither to score with the live version"
            )
        return None

    def request_document(self) -> dict[str, Any]:
        """What the run asked for, as stored with the job (idempotent replays are compared on it)."""
        return {
            "kind": "ScoringRun",
            "model": self.model,
            "ds": self.ds.isoformat(),
            "version": self.version,
            "alias": self.alias,
            "feature_set": self.feature_set,
        }


class ScoringRunCreated(BaseModel):
    """The run was accepted (or, for a repeated id or Idempotency-Key, found); poll ``location``."""

    run_id: str = Field(description="The run's id (also its job id and the correlation id of its events).")
    model: str
    feature_set: str = Field(description="The pair's feature set the run scores, <name>@<version>.")
    ds: date
    status: JobStatus = Field(description="'accepted' for a new run; the current status for a replay.")
    replayed: bool = Field(description="True when the id or Idempotency-Key named an existing run.")
    location: str = Field(description="URL of the run, same as the Location header.")


class ScoringRunPublic(BaseModel):
    """A scoring run's current state."""

    run_id: str
    model: str
    feature_set: str | None = Field(description="<name>@<version> of the pair scored.")
    ds: date
    version: int | None = Field(description="The requested version (None: alias or live).")
    alias: str | None = Field(description="The requested alias (None: version or live).")
    status: JobStatus
    terminal: bool = Field(description="True once the run succeeded or failed; it will not change again.")
    stage: str = Field(description="The step the scorer is in ('' before it starts).")
    progress: ProgressPublic | None = None
    reason: str | None = Field(default=None, description="Why the run failed (or a worker's note).")
    result: dict[str, Any] = Field(
        default_factory=dict,
        description="Set by the scorer when the run succeeded: predictions_uri, rows, drift, version.",
    )
    submitted_by: str | None = None
    created_at: datetime
    updated_at: datetime


class ScoringRunsPublic(BaseModel):
    """A page of scoring runs, newest first."""

    data: list[ScoringRunPublic]
    count: int
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class UnknownModelPublic(BaseModel):
    """404: the model (or its feature set, version or alias) is not registered."""

    detail: str
    code: Literal["model_not_found", "feature_set_not_found", "version_not_found", "alias_not_found"]
    models: list[str] | None = Field(default=None, description="Registered models (model_not_found).")
    feature_sets: list[str] | None = Field(default=None, description="The model's feature sets.")
