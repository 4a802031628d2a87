"""The event envelope and every event of the flow, each beside its topic.

Events are past-tense facts (``ModelTrained``); requests end in ``Requested``. Each event class
names its ``TOPIC``, ``EVENT_TYPE`` and ``SCHEMA_VERSION``. On the wire every event travels inside
an :class:`Envelope` serialised as JSON.
"""

from __future__ import annotations

import builtins
import enum
import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pfactory.contracts import topics

E = TypeVar("E", bound="Event")


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Return a new random identifier (uuid4 hex with dashes)."""
    return str(uuid.uuid4())


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    TOPIC: ClassVar[str]
    EVENT_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    def partition_key(self) -> str | None:
        """Return the key that orders related events on one partition (job, then model)."""
        for attr in ("job_id", "model_name", "feature_set_name"):
            value = getattr(self, attr, None)
            if value:
                return str(value)
        return None


EVENT_TYPES: dict[str, type[Event]] = {}


def _register(cls: type[E]) -> type[E]:
    if cls.EVENT_TYPE in EVENT_TYPES:
        raise RuntimeError(f"event type {cls.EVENT_TYPE!r} registered twice")
    EVENT_TYPES[cls.EVENT_TYPE] = cls
    return cls


class UnknownEventError(ValueError):
    """The envelope names an event type or schema version this build does not know."""


class Envelope(BaseModel):
    """What travels on the bus: metadata around one event payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=new_id, description="Unique id; handlers dedupe on it.")
    type: str = Field(description="The event type, e.g. 'ModelTrained'.")
    schema_version: int = Field(ge=1, description="Version of the payload schema for this type.")
    occurred_at: datetime = Field(default_factory=_now, description="When the fact happened (UTC).")
    correlation_id: str = Field(description="Ties every event of one job/flow together (the job id).")
    causation_id: str | None = Field(default=None, description="event_id of the event that caused this.")
    producer: str = Field(description="The service that published it, e.g. 'gateway'.")
    payload: dict[str, Any] = Field(description="The event itself, shaped by its type.")

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        producer: str,
        correlation_id: str | None = None,
        cause: Envelope | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """Wrap an event for publishing.

        Args:
            event: the payload.
            producer: the publishing service's name.
            correlation_id: the flow id; defaults to the cause's, then the event's job id, then a new id.
            cause: the envelope being handled when this event was produced (sets causation_id).
            event_id: a fixed id, for deterministic re-publication (outbox, redelivery).

        Returns:
            The envelope.
        """
        correlation = (
            correlation_id
            or (cause.correlation_id if cause else None)
            or getattr(event, "job_id", None)
            or new_id()
        )
        return cls(
            event_id=event_id or new_id(),
            type=event.EVENT_TYPE,
            schema_version=event.SCHEMA_VERSION,
            correlation_id=correlation,
            causation_id=cause.event_id if cause else None,
            producer=producer,
            payload=event.model_dump(mode="json"),
        )

    def open(self) -> Event:
        """Parse the payload into its event class.

        Raises:
            UnknownEventError: unknown type or schema version.
            pydantic.ValidationError: the payload does not match its type.
        """
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise UnknownEventError(f"unknown event type {self.type!r}; known: {sorted(EVENT_TYPES)}")
        if self.schema_version != cls.SCHEMA_VERSION:
            raise UnknownEventError(
                f"{self.type} schema version {self.schema_version} is not supported "
                f"(this build reads version {cls.SCHEMA_VERSION})"
            )
        return cls.model_validate(self.payload)

    def open_as(self, cls: builtins.type[E]) -> E:
        """Parse the payload as ``cls``; a different type is an :class:`UnknownEventError`."""
        event = self.open()
        if not isinstance(event, cls):
            raise UnknownEventError(f"expected {cls.EVENT_TYPE}, got {self.type}")
        return event

    def to_bytes(self) -> bytes:
        """Serialise for the wire (UTF-8 JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse wire bytes; raises ``pydantic.ValidationError`` on anything malformed."""
        return cls.model_validate_json(raw)


# ---------------------------------------------------------------- shared value objects


class JobKind(enum.StrEnum):
    """What a job does."""

    MATERIALISE = "materialise"
    TRAIN = "train"
    SCORE = "score"


class JobStatus(enum.StrEnum):
    """Job lifecycle. ``succeeded`` and ``failed`` are terminal."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for succeeded and failed."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class FeatureSetRef(BaseModel):
    """A feature set by name and version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Progress(BaseModel):
    """How far a long job has come."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    done: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)
    unit: str = "steps"
    message: str = ""


class StagedArtifact(BaseModel):
    """A model binary written by the trainer, awaiting registration."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    format: str = "skops"


class Severity(enum.StrEnum):
    """Alert severity, mapped onto PagerDuty's levels by the alert router."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# ---------------------------------------------------------------- materialisation


@_register
class MaterialisationRequested(Event):
    """A feature set should be materialised for one day or a range of days."""

    TOPIC: ClassVar[str] = topics.MATERIALISATION_REQUESTED
    EVENT_TYPE: ClassVar[str] = "MaterialisationRequested"
    job_id: str
    feature_set: FeatureSetRef
    config: dict[str, Any]
    start_ds: date | None = None
    end_ds: date | None = None
    submitted_by: str | None = None


@_register
class FeaturesMaterialised(Event):
    """A validated feature partition was written."""

    TOPIC: ClassVar[str] = topics.FEATURES_MATERIALISED
    EVENT_TYPE: ClassVar[str] = "FeaturesMaterialised"
    job_id: str
    feature_set: FeatureSetRef
    ds: date
    uri: str
    rows: int
    columns: list[str]
    validation: dict[str, Any] = Field(default_factory=dict)
    lineage: list[dict[str, Any]] = Field(default_factory=list)


@_register
class MaterialisationFailed(Event):
    """A materialisation failed, or its partition failed validation and was quarantined."""

    TOPIC: ClassVar[str] = topics.MATERIALISATION_FAILED
    EVENT_TYPE: ClassVar[str] = "MaterialisationFailed"
    job_id: str
    feature_set: FeatureSetRef
    ds: date | None = None
    reason: str
    quarantine_uri: str | None = None
    failing_expectations: list[dict[str, Any]] = Field(default_factory=list)


# ---------------------------------------------------------------- training and registry


@_register
class TrainRequested(Event):
    """A model config was accepted for training."""

    TOPIC: ClassVar[str] = topics.TRAIN_REQUESTED
    EVENT_TYPE: ClassVar[str] = "TrainRequested"
    job_id: str
    model_name: str
    feature_set: FeatureSetRef
    config: dict[str, Any]
    submitted_by: str | None = None


@_register
class ModelTrained(Event):
    """A model was fitted and evaluated; its artifact is staged for the registrar."""

    TOPIC: ClassVar[str] = topics.MODEL_TRAINED
    EVENT_TYPE: ClassVar[str] = "ModelTrained"
    job_id: str
    model_name: str
    feature_set: FeatureSetRef
    artifact: StagedArtifact
    config: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    fairness: dict[str, Any] = Field(default_factory=dict)
    reference_uri: str | None = None
    lineage: dict[str, Any] = Field(default_factory=dict)
    framework: dict[str, str] = Field(default_factory=dict)


@_register
class TrainingFailed(Event):
    """A training job failed."""

    TOPIC: ClassVar[str] = topics.TRAINING_FAILED
    EVENT_TYPE: ClassVar[str] = "TrainingFailed"
    job_id: str
    model_name: str
    stage: str
    reason: str


@_register
class ModelRegistered(Event):
    """A model version was allocated and stored in the registry."""

    TOPIC: ClassVar[str] = topics.MODEL_REGISTERED
    EVENT_TYPE: ClassVar[str] = "ModelRegistered"
    job_id: str | None = None
    model_name: str
    feature_set: FeatureSetRef
    version: int = Field(ge=1)
    artifact_uri: str
    sha256: str
    status: str


@_register
class RegistrationFailed(Event):
    """The registrar refused a trained model (corrupt artifact, bad metadata)."""

    TOPIC: ClassVar[str] = topics.REGISTRATION_FAILED
    EVENT_TYPE: ClassVar[str] = "RegistrationFailed"
    job_id: str
    model_name: str
    reason: str


@_register
class ModelVersionChanged(Event):
    """A registered version's status or aliases changed (the registry's webhook feed)."""

    TOPIC: ClassVar[str] = topics.MODEL_VERSION_CHANGED
    EVENT_TYPE: ClassVar[str] = "ModelVersionChanged"
    model_name: str
    feature_set: FeatureSetRef
    version: int = Field(ge=1)
    action: str = Field(description="'registered', 'status', 'alias_set', 'alias_removed' or 'archived'.")
    from_status: str | None = None
    to_status: str | None = None
    alias: str | None = None
    actor: str
    reason: str | None = None
    override: bool = False


# ---------------------------------------------------------------- scheduling


@_register
class DeploymentScheduled(Event):
    """A version's daily scoring was scheduled; it goes live on ``live_from``."""

    TOPIC: ClassVar[str] = topics.DEPLOYMENT_SCHEDULED
    EVENT_TYPE: ClassVar[str] = "DeploymentScheduled"
    model_name: str
    feature_set: FeatureSetRef
    version: int
    dag_id: str
    cron: str
    timezone: str
    live_from: date
    replaces_version: int | None = None


@_register
class VersionArchived(Event):
    """A version was archived because its successor went live."""

    TOPIC: ClassVar[str] = topics.VERSION_ARCHIVED
    EVENT_TYPE: ClassVar[str] = "VersionArchived"
    model_name: str
    feature_set: FeatureSetRef
    version: int
    replaced_by: int | None = None


# ---------------------------------------------------------------- scoring


@_register
class ScoringRequested(Event):
    """Score one day's feature partition with a version (or alias) of a model."""

    TOPIC: ClassVar[str] = topics.SCORING_REQUESTED
    EVENT_TYPE: ClassVar[str] = "ScoringRequested"
    job_id: str
    model_name: str
    feature_set: FeatureSetRef | None = Field(
        default=None, description="Which feature-set pair of the model; None when the model has only one."
    )
    version: int | None = None
    alias: str | None = None
    ds: date


@_register
class ScoringCompleted(Event):
    """A day's predictions were written."""

    TOPIC: ClassVar[str] = topics.SCORING_COMPLETED
    EVENT_TYPE: ClassVar[str] = "ScoringCompleted"
    job_id: str
    model_name: str
    version: int
    ds: date
    rows: int
    predictions_uri: str
    drift: dict[str, float] = Field(default_factory=dict)


@_register
class ScoringFailed(Event):
    """A scoring run failed."""

    TOPIC: ClassVar[str] = topics.SCORING_FAILED
    EVENT_TYPE: ClassVar[str] = "ScoringFailed"
    job_id: str
    model_name: str
    version: int | None = None
    ds: date
    reason: str


@_register
class DriftDetected(Event):
    """Population stability above the model's threshold on one or more inputs or the score."""

    TOPIC: ClassVar[str] = topics.DRIFT_DETECTED
    EVENT_TYPE: ClassVar[str] = "DriftDetected"
    model_name: str
    version: int
    ds: date
    threshold: float
    feature_psi: dict[str, float]
    score_psi: float | None = None


# ---------------------------------------------------------------- alerts and jobs


@_register
class AlertRaised(Event):
    """A check failed; the alert router opens (or keeps open) one incident per dedup key."""

    TOPIC: ClassVar[str] = topics.ALERTS
    EVENT_TYPE: ClassVar[str] = "AlertRaised"
    dedup_key: str = Field(description="One incident per key, e.g. 'validation:credit_features'.")
    check: str
    severity: Severity
    summary: str
    source: str
    model_name: str | None = None
    feature_set_name: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)

    def partition_key(self) -> str | None:
        """Alerts with one dedup key stay ordered on one partition."""
        return self.dedup_key


@_register
class AlertResolved(Event):
    """A check passed again; the incident with this dedup key is resolved."""

    TOPIC: ClassVar[str] = topics.ALERTS
    EVENT_TYPE: ClassVar[str] = "AlertResolved"
    dedup_key: str
    check: str
    source: str
    summary: str = ""

    def partition_key(self) -> str | None:
        """Alerts with one dedup key stay ordered on one partition."""
        return self.dedup_key


@_register
class JobStatusChanged(Event):
    """A job moved through its lifecycle or reported progress; the gateway's job view follows it."""

    TOPIC: ClassVar[str] = topics.JOB_STATUS
    EVENT_TYPE: ClassVar[str] = "JobStatusChanged"
    job_id: str
    status: JobStatus
    stage: str = ""
    progress: Progress | None = None
    reason: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


@_register
class DeadLettered(Event):
    """A message no handler could process, kept with the reason and its original bytes."""

    TOPIC: ClassVar[str] = topics.DEAD_LETTER
    EVENT_TYPE: ClassVar[str] = "DeadLettered"
    original_topic: str
    partition: int | None = None
    offset: int | None = None
    group_id: str | None = None
    error_type: str
    error: str
    attempts: int = Field(ge=0)
    original_key_b64: str | None = None
    original_value_b64: str
    headers: dict[str, str] = Field(default_factory=dict)

    def partition_key(self) -> str | None:
        """Dead letters from one topic stay together."""
        return self.original_topic
