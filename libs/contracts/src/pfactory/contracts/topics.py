"""Kafka topic names and their specs: the one place a topic is named."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic the platform owns.

    Args:
        name: the topic name (``pf.`` prefix).
        partitions: partition count; the unit of parallelism for a consumer group.
        retention_ms: how long the broker keeps records.
        description: what flows on it.
    """

    name: str
    partitions: int
    retention_ms: int
    description: str


MATERIALISATION_REQUESTED = "pf.materialisation.requested"
FEATURES_MATERIALISED = "pf.features.materialised"
MATERIALISATION_FAILED = "pf.materialisation.failed"
TRAIN_REQUESTED = "pf.train.requested"
MODEL_TRAINED = "pf.model.trained"
TRAINING_FAILED = "pf.training.failed"
MODEL_REGISTERED = "pf.model.registered"
REGISTRATION_FAILED = "pf.registration.failed"
MODEL_VERSION_CHANGED = "pf.model.version.changed"
DEPLOYMENT_SCHEDULED = "pf.deployment.scheduled"
VERSION_ARCHIVED = "pf.version.archived"
SCORING_REQUESTED = "pf.scoring.requested"
SCORING_COMPLETED = "pf.scoring.completed"
SCORING_FAILED = "pf.scoring.failed"
DRIFT_DETECTED = "pf.drift.detected"
ALERTS = "pf.alerts"
JOB_STATUS = "pf.jobs.status"
DEAD_LETTER = "pf.deadletter"

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(MATERIALISATION_REQUESTED, 6, 7 * DAY_MS, "feature set materialisation requests"),
    TopicSpec(FEATURES_MATERIALISED, 6, 7 * DAY_MS, "a validated feature partition was written"),
    TopicSpec(MATERIALISATION_FAILED, 3, 14 * DAY_MS, "a materialisation failed or was quarantined"),
    TopicSpec(TRAIN_REQUESTED, 6, 7 * DAY_MS, "model training requests"),
    TopicSpec(MODEL_TRAINED, 6, 7 * DAY_MS, "a model was fitted and its artifact staged"),
    TopicSpec(TRAINING_FAILED, 3, 14 * DAY_MS, "a training job failed"),
    TopicSpec(MODEL_REGISTERED, 6, 30 * DAY_MS, "a model version was registered"),
    TopicSpec(REGISTRATION_FAILED, 3, 14 * DAY_MS, "a registration was refused"),
    TopicSpec(MODEL_VERSION_CHANGED, 6, 30 * DAY_MS, "a registered version's status or aliases changed"),
    TopicSpec(DEPLOYMENT_SCHEDULED, 3, 30 * DAY_MS, "a version's scoring DAG was scheduled"),
    TopicSpec(VERSION_ARCHIVED, 3, 30 * DAY_MS, "a version was archived when its successor went live"),
    TopicSpec(SCORING_REQUESTED, 6, 7 * DAY_MS, "batch scoring requests"),
    TopicSpec(SCORING_COMPLETED, 6, 7 * DAY_MS, "a day's predictions were written"),
    TopicSpec(SCORING_FAILED, 3, 14 * DAY_MS, "a scoring run failed"),
    TopicSpec(DRIFT_DETECTED, 3, 30 * DAY_MS, "input or score drift above the model's threshold"),
    TopicSpec(ALERTS, 3, 30 * DAY_MS, "alerts raised and resolved, routed to PagerDuty/Datadog"),
    TopicSpec(JOB_STATUS, 6, 7 * DAY_MS, "job lifecycle: started, progress, succeeded, failed"),
    TopicSpec(DEAD_LETTER, 1, 30 * DAY_MS, "messages no handler could process, with the reason"),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in ALL_TOPICS}
