"""HTTP models of the registry API, in families (``ModelPublic``, ``VersionPublic``, ``VersionUpdate``…)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pfactory.gateway.schemas import ErrorPublic
from pfactory.registry.model import ArtifactInfo, AuditEntry, Lineage, MetricValue, VersionStatus


class PairPublic(BaseModel):
    """A registered pair: the model on one feature set (name@version), with its newest and live versions."""

    pair: str = Field(description="model=<name>/feature_set=<fs>@<fs version>")
    feature_set: str = Field(
        description="<fs name>@<fs version>; pass it as ?feature_set= to choose the pair."
    )
    latest_version: int | None = Field(description="The highest committed version number.")
    live_version: int | None = Field(description="The live version (the newest one, if several are live).")
    versions_url: str


class ModelPublic(BaseModel):
    """A model name and every pair it is registered on."""

    name: str
    pairs: list[PairPublic]


class ModelsPublic(BaseModel):
    """A page of models, by name."""

    data: list[ModelPublic]
    count: int = Field(description="Number of models on this page.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class VersionSummaryPublic(BaseModel):
    """One version, as listed: status, aliases, gates, metrics and artifact."""

    model_name: str
    feature_set: str = Field(description="<fs name>@<fs version>")
    pair: str
    version: int
    status: VersionStatus
    aliases: list[str]
    failed_gates: list[str] = Field(
        description="Gates failed; approving needs an admin override with a reason."
    )
    metrics: dict[str, MetricValue]
    artifact: ArtifactInfo
    created_by: str
    created_at: datetime
    updated_at: datetime
    url: str = Field(description="Path of the version's detail.")


class VersionPublic(VersionSummaryPublic):
    """Everything the registry holds about a version, its audit trail included."""

    allocation_key: str = Field(description="The idempotency key the number was allocated under (job id).")
    framework: str
    library_versions: dict[str, str]
    config: dict[str, Any] = Field(description="The exact model config that produced the version.")
    fairness: dict[str, Any]
    gates: dict[str, bool]
    reference_uri: str | None
    lineage: Lineage
    audit: list[AuditEntry] = Field(description="Every change, oldest first.")
    artifact_url: str = Field(description="Path of the streamed artifact download.")
    card_url: str = Field(description="Path of the model card (JSON, Markdown or HTML).")


class VersionsPublic(BaseModel):
    """A page of versions."""

    data: list[VersionSummaryPublic]
    count: int = Field(description="Number of versions on this page.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class VersionUpdate(BaseModel):
    """A status change. Only legal transitions are accepted."""

    model_config = ConfigDict(extra="forbid")

    status: VersionStatus = Field(
        description="approved, live, rejected or archived (candidate is only the start)."
    )
    reason: str | None = Field(default=None, max_length=2000, description="Why; recorded in the audit trail.")
    override: bool = Field(
        default=False,
        description="Let a version that failed its gates become approved or live; needs a non-empty reason.",
    )

    @model_validator(mode="after")
    def _override_needs_a_reason(self) -> VersionUpdate:
        if self.override and not (self.reason and self.reason.strip()):
            raise ValueError(
                "an admin override needs a non-empty 'reason' (it is recorded in the audit trail)"
            )
        return self


class AliasUpdate(BaseModel):
    """Point an alias at a version (taking it from the version that held it)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="The version to hold the alias.")


class AmbiguousFeatureSetPublic(ErrorPublic):
    """409: the model is registered on several feature sets; choose one with ?feature_set=."""

    feature_sets: list[str]


class TransitionErrorPublic(ErrorPublic):
    """409: the lifecycle refused the change."""

    from_status: str
    to_status: str
    allowed: list[str] = Field(description="The statuses the version may move to from where it is.")
    failed_gates: list[str]


class IntegrityErrorPublic(ErrorPublic):
    """409: the stored artifact's sha256 is not the registered one; it is not served."""

    expected_sha256: str
    actual_sha256: str
