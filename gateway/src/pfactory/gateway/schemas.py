"""HTTP request and response models, in families (``XCreate``, ``XPublic``, ``XsPublic``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pfactory.contracts.events import JobKind, JobStatus


class JobCreate(BaseModel):
    """A config to run, as JSON: either the parsed document or its YAML text."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] | None = Field(default=None, description="The config document as a JSON object.")
    config_yaml: str | None = Field(
        default=None, description="The config as YAML text (errors carry line/column)."
    )
    filename: str | None = Field(default=None, description="File name reported in errors, e.g. 'model.yaml'.")
    start_ds: date | None = Field(default=None, description="FeatureSet only: first day to materialise.")
    end_ds: date | None = Field(
        default=None, description="FeatureSet only: last day to materialise (inclusive)."
    )

    @model_validator(mode="after")
    def _exactly_one_config(self) -> JobCreate:
        if (self.config is None) == (self.config_yaml is None):
            raise ValueError("send exactly one of 'config' (a JSON object) or 'config_yaml' (YAML text)")
        return self


class JobCreated(BaseModel):
    """The job was accepted and will be published; poll ``location`` for its state."""

    job_id: str = Field(description="The job's id (also the correlation id of every event of the job).")
    kind: JobKind = Field(description="materialise (FeatureSet) or train (Model).")
    name: str = Field(description="metadata.name of the submitted config.")
    status: JobStatus = Field(
        description="'accepted' at submission; a replayed request (same Idempotency-Key) shows the job's status now."
    )
    location: str = Field(description="URL of the job, same as the Location header.")
    replayed: bool = Field(
        default=False,
        description="True when an Idempotency-Key named a job that already existed (answer 200).",
    )


class ProgressPublic(BaseModel):
    """How far a long job has come."""

    done: int
    total: int | None = None
    unit: str = "steps"
    message: str = ""


class JobPublic(BaseModel):
    """A job's current state."""

    job_id: str
    kind: JobKind
    name: str
    status: JobStatus
    terminal: bool = Field(description="True once the job succeeded or failed; it will not change again.")
    stage: str = Field(description="The step the job is in, as reported by its worker ('' before it starts).")
    progress: ProgressPublic | None = None
    reason: str | None = Field(default=None, description="Why the job failed (or a worker's note).")
    result: dict[str, Any] = Field(
        default_factory=dict, description="What the job produced, when it succeeded."
    )
    submitted_by: str | None = Field(default=None, description="Name of the API key that submitted it.")
    request_event_id: str = Field(
        description="event_id of the request envelope (stable across re-publication)."
    )
    created_at: datetime
    updated_at: datetime


class JobsPublic(BaseModel):
    """A page of jobs, newest first."""

    data: list[JobPublic]
    count: int = Field(description="Number of jobs on this page.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class ApiKeyCreate(BaseModel):
    """A new API key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="A label for people, e.g. 'ci-pipeline'.")
    scopes: list[Literal["submit", "read", "admin"]] = Field(
        min_length=1, description="Granted scopes; 'admin' implies the others."
    )


class ApiKeyPublic(BaseModel):
    """An API key's metadata (never its secret)."""

    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked: bool


class ApiKeyCreated(ApiKeyPublic):
    """A key just created: ``key`` is shown this once and cannot be retrieved again."""

    key: str = Field(description="The raw key, pf_<key_id>_<secret>. Store it now.")


class ApiKeysPublic(BaseModel):
    """Every API key."""

    data: list[ApiKeyPublic]
    count: int


class ErrorPublic(BaseModel):
    """Any error answer."""

    detail: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Machine-readable kind, e.g. 'job_not_found', 'invalid_api_key'.")


class ScopeErrorPublic(ErrorPublic):
    """403: the key is valid but lacks a scope."""

    required_scope: str
    granted_scopes: list[str]


class ConfigIssuePublic(BaseModel):
    """One problem in a submitted config, located like a compiler diagnostic."""

    file: str | None = None
    line: int | None = Field(default=None, description="1-based; null for JSON bodies.")
    column: int | None = Field(default=None, description="1-based; null for JSON bodies.")
    path: str = Field(description="Dotted path to the offending value, e.g. spec.pipeline.estimator.import.")
    message: str
    expected: str | None = None
    suggestion: str | None = None
    code: str = "invalid"


class ValidationErrorPublic(ErrorPublic):
    """422: the request or its config was refused; nothing was stored or published."""

    summary: str = Field(description="One line: how many problems, where.")
    issues: list[ConfigIssuePublic]


BrokerState = Literal["connected", "unreachable", "unknown", "disabled"]


class HealthPublic(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class OutboxPublic(BaseModel):
    """Accepted events not yet confirmed by the broker."""

    pending: int
    oldest_pending_at: datetime | None
    last_error: str | None


class RegistryFeedPublic(BaseModel):
    """The registry feed: how far it has published the registry's change log."""

    cursor: int | None = Field(description="The last change published (None: not read yet).")
    last_published_at: datetime | None
    last_error: str | None = Field(description="Why the last attempt failed; None once it succeeds again.")


class ReadyPublic(BaseModel):
    """Readiness: the store answers. The broker may be down; the outbox then holds the events."""

    status: Literal["ready", "unavailable"]
    store: Literal["ok", "unreachable"]
    broker: BrokerState = Field(
        description="Last publish outcome: 'unknown' until the first publish; 'disabled' without a bus."
    )
    outbox: OutboxPublic | None
    registry_feed: RegistryFeedPublic | None = Field(
        default=None, description="The ModelVersionChanged feed; None without a bus."
    )
    detail: str = ""
