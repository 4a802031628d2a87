"""Every metric the platform emits: its name, type, unit, tags and meaning. No name is written elsewhere.

Code emits through the constants here (``metrics.emit(catalog.JOBS_SUBMITTED, kind="train")``); the
emitter refuses a metric that is not in this catalog and a tag set that differs from the declared one.
The Datadog dashboards and monitors in ``deploy/datadog/`` query these names; a test checks both ways
(every queried metric is here, every metric here is emitted somewhere).

Tags: ``service``, ``env`` and ``version`` (the service's own version, Datadog's unified service tags)
are added to every line by the emitter. The tags below are the ones a call site must give, exactly.
A model's version is tagged ``model_version`` so it never collides with the service's ``version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """DogStatsD metric types, by their wire letter."""

    COUNT = "c"
    GAUGE = "g"
    HISTOGRAM = "h"
    DISTRIBUTION = "d"


UNIFIED_TAGS = ("service", "env", "version")
"""Added by the emitter to every metric line."""


@dataclass(frozen=True)
class Metric:
    """One metric: what a dashboard can query and what a call site must tag it with."""

    name: str
    kind: Kind
    unit: str
    tags: tuple[str, ...]
    description: str
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The only values an enumerated tag takes (a dashboard filtering on another value sees nothing)."""


def _metric(
    name: str,
    kind: Kind,
    unit: str,
    tags: tuple[str, ...],
    description: str,
    values: Mapping[str, tuple[str, ...]] | None = None,
) -> Metric:
    unknown = set(values or {}) - set(tags)
    if unknown:
        raise ValueError(f"{name}: values given for undeclared tags {sorted(unknown)}")
    metric = Metric(name, kind, unit, tags, description, dict(values or {}))
    CATALOG[name] = metric
    return metric


JOB_KINDS = ("materialise", "train", "score")
FINAL_STATUSES = ("succeeded", "failed")
VERSION_STATUSES = ("candidate", "approved", "live", "archived", "rejected")
SEVERITIES = ("critical", "error", "warning", "info")


CATALOG: dict[str, Metric] = {}

# --- jobs (the gateway follows every job's lifecycle) -------------------------------------------------
JOBS_SUBMITTED = _metric(
    "pf.jobs.submitted",
    Kind.COUNT,
    "job",
    ("kind",),
    "Jobs accepted by the gateway (202), by job kind.",
    {"kind": JOB_KINDS},
)
JOBS_SUCCEEDED = _metric(
    "pf.jobs.succeeded",
    Kind.COUNT,
    "job",
    ("kind",),
    "Jobs that ended succeeded, by job kind.",
    {"kind": JOB_KINDS},
)
JOBS_FAILED = _metric(
    "pf.jobs.failed",
    Kind.COUNT,
    "job",
    ("kind",),
    "Jobs that ended failed (with a reason), by job kind.",
    {"kind": JOB_KINDS},
)
JOB_DURATION = _metric(
    "pf.jobs.duration",
    Kind.DISTRIBUTION,
    "millisecond",
    ("kind", "status"),
    "From acceptance to the final status, by job kind and final status.",
    {"kind": JOB_KINDS, "status": FINAL_STATUSES},
)
STAGE_DURATION = _metric(
    "pf.stage.duration",
    Kind.DISTRIBUTION,
    "millisecond",
    ("kind", "stage"),
    "Time a worker spent in one stage of a job (e.g. train/fit, materialise/validate, score/drift).",
    {"kind": JOB_KINDS},
)

# --- the bus (every consumer) ---------------------------------------------------------------------------
CONSUMER_LAG = _metric(
    "pf.bus.consumer_lag",
    Kind.GAUGE,
    "message",
    ("group", "topic", "partition"),
    "Records behind the end of one partition (high-water mark minus position), measured inside the "
    "consumer that owns it after each commit. Sum by group and topic for the group's lag; tagged per "
    "partition so two members of a group on one host never overwrite each other's value.",
)
MESSAGES_HANDLED = _metric(
    "pf.bus.handled",
    Kind.COUNT,
    "message",
    ("group", "topic", "outcome"),
    "Handler attempts by outcome: ok, retried (a transient failure, tried again) or dead_lettered.",
    {"outcome": ("ok", "retried", "dead_lettered")},
)
HANDLER_DURATION = _metric(
    "pf.bus.handler_duration",
    Kind.DISTRIBUTION,
    "millisecond",
    ("group", "topic"),
    "Time one record spent in its handler.",
)
DEAD_LETTERED = _metric(
    "pf.bus.dead_lettered",
    Kind.COUNT,
    "message",
    ("group", "topic"),
    "Records sent to the dead-letter topic (poison or out of retries).",
)

# --- features -------------------------------------------------------------------------------------------
ROWS_MATERIALISED = _metric(
    "pf.features.rows_materialised",
    Kind.COUNT,
    "row",
    ("feature_set",),
    "Rows written to feature partitions.",
)
PARTITIONS_MATERIALISED = _metric(
    "pf.features.partitions",
    Kind.COUNT,
    "partition",
    ("feature_set", "status"),
    "Daily feature partitions written, by validation status (good or failed). A monitor watches for "
    "a day without a good one.",
    {"status": ("good", "failed")},
)
VALIDATION_FAILURES = _metric(
    "pf.features.validation_failures",
    Kind.COUNT,
    "expectation",
    ("feature_set",),
    "Failed expectations in validated partitions.",
)

# --- scoring --------------------------------------------------------------------------------------------
SCORING_ROWS = _metric(
    "pf.scoring.rows",
    Kind.COUNT,
    "row",
    ("model", "feature_set", "model_version", "mode"),
    "Rows scored, batch or online.",
    {"mode": ("batch", "online")},
)
SCORING_LATENCY = _metric(
    "pf.scoring.latency",
    Kind.DISTRIBUTION,
    "millisecond",
    ("model", "feature_set", "model_version", "mode"),
    "Time to score one online request, or one batch day.",
    {"mode": ("batch", "online")},
)
SCORING_RUNS = _metric(
    "pf.scoring.runs",
    Kind.COUNT,
    "run",
    ("model", "feature_set", "model_version", "status"),
    "Batch scoring runs finished, by status. A monitor watches for a day without a succeeded one.",
    {"status": FINAL_STATUSES},
)
DRIFT_PSI = _metric(
    "pf.drift.psi",
    Kind.GAUGE,
    "index",
    ("model", "feature_set", "model_version", "feature"),
    "Population stability index of one input feature (or 'score') against the training reference.",
)
DRIFTED_FEATURES = _metric(
    "pf.drift.drifted_features",
    Kind.GAUGE,
    "feature",
    ("model", "feature_set", "model_version"),
    "Features whose PSI passed the model's threshold in the last scored day.",
)

# --- models and the registry ------------------------------------------------------------------------------
MODELS_REGISTERED = _metric(
    "pf.registry.registered",
    Kind.COUNT,
    "version",
    ("model", "feature_set"),
    "Model versions committed to the registry.",
)
REGISTRY_VERSIONS = _metric(
    "pf.registry.versions",
    Kind.GAUGE,
    "version",
    ("status",),
    "Model versions in the registry, by status (the registry's size).",
    {"status": VERSION_STATUSES},
)
DEPLOYMENTS = _metric(
    "pf.scheduler.deployments",
    Kind.COUNT,
    "version",
    ("model", "feature_set", "model_version", "action"),
    "Deployment steps taken by the scheduler: scheduled, live, archived.",
    {"action": ("scheduled", "live", "archived")},
)

# --- alerting --------------------------------------------------------------------------------------------
ALERTS = _metric(
    "pf.alerts.events",
    Kind.COUNT,
    "alert",
    ("check", "severity", "action"),
    "Alert events the router handled: action raised, resolved, suppressed (an open incident's "
    "repeat) or dropped (a routing rule says so).",
    {"severity": SEVERITIES, "action": ("raised", "resolved", "suppressed", "dropped")},
)
PAGERDUTY_REQUESTS = _metric(
    "pf.alerts.pagerduty_requests",
    Kind.COUNT,
    "request",
    ("action", "outcome"),
    "Events API v2 calls: action trigger/acknowledge/resolve, outcome accepted/retried/rejected/dropped.",
    {
        "action": ("trigger", "acknowledge", "resolve"),
        "outcome": ("accepted", "retried", "rejected", "dropped"),
    },
)
