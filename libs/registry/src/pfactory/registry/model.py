"""The registry's records: a model version, its pair key, lifecycle and audit trail. No I/O."""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.errors import GateFailedError, IllegalTransitionError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
"""Model names, feature set names and versions, and alias names: safe in keys and paths."""
_NAME = re.compile(NAME_PATTERN)
_PAIR = re.compile(r"^model=(?P<model>[^/]+)/feature_set=(?P<fs>[^@/]+)@(?P<fsv>[^@/]+)$")


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it matches :data:`NAME_PATTERN`, else raise ``ValueError`` naming ``what``."""
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must match {NAME_PATTERN}")
    return value


class VersionStatus(enum.StrEnum):
    """Lifecycle of a committed version."""

    CANDIDATE = "candidate"
    APPROVED = "approved"
    LIVE = "live"
    ARCHIVED = "archived"
    REJECTED = "rejected"


LEGAL_TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    VersionStatus.CANDIDATE: frozenset(
        {VersionStatus.APPROVED, VersionStatus.REJECTED, VersionStatus.ARCHIVED}
    ),
    VersionStatus.APPROVED: frozenset({VersionStatus.LIVE, VersionStatus.REJECTED, VersionStatus.ARCHIVED}),
    VersionStatus.LIVE: frozenset({VersionStatus.ARCHIVED}),
    # an archived version can be approved again to roll back to it
    VersionStatus.ARCHIVED: frozenset({VersionStatus.APPROVED}),
    VersionStatus.REJECTED: frozenset(),
}
"""Status → the statuses it may move to. ``rejected`` is terminal."""

GATED_STATUSES = frozenset({VersionStatus.APPROVED, VersionStatus.LIVE})
"""Statuses a version whose gates failed reaches only through an admin override with a reason.

``live`` is reached only from ``approved``: a version approved by an override goes live on its
schedule without a second one (the override that approved it is on record); one approved any other
way while its gates failed cannot go live without an override."""


class PairKey(BaseModel):
    """A registered model: a model name and the feature set (name@version) it consumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str
    feature_set: FeatureSetRef

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return check_name(value, "model name")

    @field_validator("feature_set")
    @classmethod
    def _feature_set(cls, value: FeatureSetRef) -> FeatureSetRef:
        check_name(value.name, "feature set name")
        check_name(value.version, "feature set version")
        return value

    @classmethod
    def of(cls, model_name: str, feature_set_name: str, feature_set_version: str | int) -> PairKey:
        """Build a pair from its three parts."""
        ref = FeatureSetRef(name=feature_set_name, version=str(feature_set_version))
        return cls(model_name=model_name, feature_set=ref)

    @classmethod
    def parse(cls, text: str) -> PairKey:
        """Parse ``model=<name>/feature_set=<fs_name>@<fs_version>``."""
        match = _PAIR.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a pair key 'model=<name>/feature_set=<fs_name>@<fs_version>'")
        return cls.of(match["model"], match["fs"], match["fsv"])

    def __str__(self) -> str:
        return f"model={self.model_name}/feature_set={self.feature_set.name}@{self.feature_set.version}"


class ArtifactInfo(BaseModel):
    """Where a version's model binary is stored, and how to check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    format: Literal["skops"] = "skops"


class MetricValue(BaseModel):
    """One evaluation metric with its confidence interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


class Lineage(BaseModel):
    """What data trained the version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    feature_set_version: str
    start_ds: date | None = None
    end_ds: date | None = None
    partitions: list[str] = Field(default_factory=list, description="URIs of the partitions read.")
    label_source: str | None = None
    row_counts: dict[str, int] = Field(default_factory=dict, description="e.g. train/test/positive rows.")
    query_hashes: dict[str, str] = Field(default_factory=dict, description="SQL model name → sha256.")


class AuditEntry(BaseModel):
    """One change to a version: who did what, from which state to which, and why."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )
    at: datetime
    actor: str
    action: str = Field(description="registered, transition, override, alias_set or alias_removed.")
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason: str | None = None


class ModelVersion(BaseModel):
    """One registered version of a pair: artifact, provenance, evaluation, status and history."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str
    feature_set: FeatureSetRef
    version: int = Field(ge=1)
    allocation_key: str = Field(description="The idempotency key the number was allocated under (job id).")
    artifact: ArtifactInfo
    framework: str = Field(description="e.g. 'scikit-learn'.")
    library_versions: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(description="The exact model config that produced the version.")
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    fairness: dict[str, Any] = Field(default_factory=dict, description="The fairness report.")
    gates: dict[str, bool] = Field(
        default_factory=dict, description="Gate name (fairness, validation) → passed."
    )
    reference_uri: str | None = Field(default=None, description="Reference distributions for drift checks.")
    lineage: Lineage
    status: VersionStatus = VersionStatus.CANDIDATE
    aliases: frozenset[str] = frozenset()
    created_by: str
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    audit: tuple[AuditEntry, ...] = ()

    @property
    def pair(self) -> PairKey:
        """The pair this version belongs to."""
        return PairKey(model_name=self.model_name, feature_set=self.feature_set)

    @property
    def label(self) -> str:
        """``<pair>/version=<n>``, for messages."""
        return f"{self.pair}/version={self.version}"

    @property
    def failed_gates(self) -> list[str]:
        """Names of the gates the version failed."""
        return sorted(name for name, passed in self.gates.items() if not passed)


def transition(
    record: ModelVersion,
    to: VersionStatus,
    *,
    actor: str,
    reason: str | None = None,
    override: bool = False,
    at: datetime | None = None,
) -> ModelVersion:
    """Move a version to another status, or refuse.

    Args:
        record: the version as stored.
        to: the status to move to.
        actor: who asks (recorded in the audit trail).
        reason: why; required with ``override``.
        override: an admin override letting a version whose gates failed become approved or live.
        at: the time of the change (defaults to now).

    Returns:
        The changed version with an audit entry appended.

    Raises:
        IllegalTransitionError: the lifecycle does not allow ``record.status → to``.
        GateFailedError: the version failed a gate and no override with a reason was given.
    """
    current = record.status
    if to not in LEGAL_TRANSITIONS[current]:
        allowed = ", ".join(sorted(LEGAL_TRANSITIONS[current])) or "nothing (terminal)"
        raise IllegalTransitionError(
            f"{record.label}: cannot move from {current} to {to}; {current} may move to {allowed}"
        )
    if override and not (reason and reason.strip()):
        raise GateFailedError(f"{record.label}: an admin override needs a reason")
    failed = record.failed_gates
    if to in GATED_STATUSES and failed and not override and not _live_after_override(record, to):
        raise GateFailedError(
            f"{record.label} failed its gates ({', '.join(failed)}); becoming {to} needs an admin "
            "override with a reason"
        )
    now = at or utc_now()
    action = "override" if override and failed and to in GATED_STATUSES else "transition"
    entry = AuditEntry(at=now, actor=actor, action=action, from_=current.value, to=to.value, reason=reason)
    return record.model_copy(update={"status": to, "updated_at": now, "audit": (*record.audit, entry)})


def _live_after_override(record: ModelVersion, to: VersionStatus) -> bool:
    """Whether ``record`` goes live from an approval an admin override gave it (its last move to approved)."""
    if to is not VersionStatus.LIVE or record.status is not VersionStatus.APPROVED:
        return False
    approvals = [entry for entry in record.audit if entry.to == VersionStatus.APPROVED.value]
    return bool(approvals) and approvals[-1].action == "override"


def set_alias(record: ModelVersion, alias: str, *, actor: str, at: datetime | None = None) -> ModelVersion:
    """Give a version an alias (the index removes it from the version that held it).

    Raises:
        IllegalTransitionError: the version is rejected, or the alias name is malformed.
    """
    try:
        check_name(alias, "alias")
    except ValueError as error:
        raise IllegalTransitionError(f"{record.label}: {error}") from None
    if record.status is VersionStatus.REJECTED:
        raise IllegalTransitionError(f"{record.label} is rejected; it cannot take the alias {alias!r}")
    if alias in record.aliases:
        return record
    now = at or utc_now()
    entry = AuditEntry(at=now, actor=actor, action="alias_set", to=alias)
    aliases = record.aliases | {alias}
    return record.model_copy(update={"aliases": aliases, "updated_at": now, "audit": (*record.audit, entry)})


def remove_alias(
    record: ModelVersion, alias: str, *, actor: str, reason: str | None = None, at: datetime | None = None
) -> ModelVersion:
    """Take an alias away from a version (no change if it does not hold it)."""
    if alias not in record.aliases:
        return record
    now = at or utc_now()
    entry = AuditEntry(at=now, actor=actor, action="alias_removed", from_=alias, reason=reason)
    aliases = record.aliases - {alias}
    return record.model_copy(update={"aliases": aliases, "updated_at": now, "audit": (*record.audit, entry)})


def registered(record: ModelVersion, *, at: datetime | None = None) -> ModelVersion:
    """The version as first committed: a ``registered`` audit entry unless it already has history."""
    if record.audit:
        return record
    now = at or utc_now()
    entry = AuditEntry(at=now, actor=record.created_by, action="registered", to=record.status.value)
    return record.model_copy(update={"audit": (entry,)})


def check_committable(record: ModelVersion) -> None:
    """Refuse a first commit that skips the lifecycle (a status past candidate, or aliases)."""
    if record.status not in (VersionStatus.CANDIDATE, VersionStatus.REJECTED):
        raise IllegalTransitionError(
            f"{record.label}: a version is committed as candidate or rejected, not {record.status}"
        )
    if record.aliases:
        raise IllegalTransitionError(f"{record.label}: aliases are set with move_alias after commit")
