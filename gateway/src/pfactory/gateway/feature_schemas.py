"""HTTP models of the feature-set catalog and the source-column lineage join."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pfactory.gateway.registry_schemas import VersionSummaryPublic


class FeatureSetPublic(BaseModel):
    """A feature-set name and its versions."""

    name: str
    versions: list[str] = Field(description="Every catalogued version, oldest first (natural order).")
    latest_version: str
    registered_at: datetime = Field(description="When its first version was catalogued.")
    url: str


class FeatureSetsPublic(BaseModel):
    """A page of feature sets, by name."""

    data: list[FeatureSetPublic]
    count: int
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class FeaturePublic(BaseModel):
    """A declared feature."""

    name: str
    dtype: str | None = None
    description: str = ""
    source_columns: list[str] = Field(default_factory=list, description="Declared lineage.")


class PartitionsSummaryPublic(BaseModel):
    """What the materialisation events reported for a version."""

    good_days: int
    failed_days: int
    first_ds: date | None
    last_ds: date | None
    last_materialised_at: datetime | None


class FeatureSetVersionSummaryPublic(BaseModel):
    """A version as listed."""

    name: str
    version: str
    config_hash: str | None = Field(
        description="sha256 of name + spec; the `config_hash` of each partition's _SUCCESS marker."
    )
    registered_by: str | None
    registered_at: datetime
    partitions: PartitionsSummaryPublic
    url: str


class FeatureSetVersionsPublic(BaseModel):
    """Every version of a feature set, oldest first."""

    name: str
    data: list[FeatureSetVersionSummaryPublic]
    count: int


class FeatureSetVersionPublic(FeatureSetVersionSummaryPublic):
    """A version's config, features and partitions summary."""

    config: dict[str, Any] | None = Field(
        description="The normalised config first registered; null when only materialisation events told of it."
    )
    features: list[FeaturePublic]
    job_id: str | None = Field(description="The job that registered the version.")
    partitions_url: str
    lineage_url: str


class DayPublic(BaseModel):
    """One day of a version."""

    ds: date
    status: Literal["good", "failed", "missing"]
    uri: str | None = None
    rows: int | None = None
    validation: dict[str, Any] | None = Field(default=None, description="The validation summary.")
    reason: str | None = None
    job_id: str | None = None
    recorded_at: datetime | None = Field(default=None, description="When the reporting event occurred.")


class DaysPublic(BaseModel):
    """Every day of a range, good, failed or missing."""

    name: str
    version: str
    start_ds: date | None
    end_ds: date | None
    data: list[DayPublic]
    count: int
    good: int
    failed: int
    missing: int


class PartitionDetailPublic(BaseModel):
    """A day's statistics and validation report, read from the partition store."""

    name: str
    version: str
    ds: date
    status: Literal["good", "failed", "missing"] = Field(
        description="What the partition store shows (its markers); `recorded_status` is what events said."
    )
    recorded_status: Literal["good", "failed"] | None
    uri: str | None
    rows: int | None
    marker: dict[str, Any] | None = Field(description="The _SUCCESS or _FAILED marker.")
    statistics: dict[str, Any] | None = Field(description="_stats.json: rows; per column nulls/min/max/mean.")
    validation: dict[str, Any] | None = Field(description="_validation.json: the full GX report.")
    config_hash_matches: bool | None = Field(
        description="Whether the marker's config_hash is the registered config's (null: unknown)."
    )
    note: str | None = None


class FeatureLineagePublic(BaseModel):
    """The source columns one feature derives from."""

    feature: str
    source_columns: list[str]
    origin: Literal["derived", "declared"] = Field(
        description="derived: parsed from the rendered SQL by the materialiser; declared: from the config."
    )


class LineagePublic(BaseModel):
    """A version's column lineage."""

    name: str
    version: str
    data: list[FeatureLineagePublic]
    count: int
    note: str | None = None


class MaterialisationCreate(BaseModel):
    """Days to materialise from a registered version's config."""

    model_config = ConfigDict(extra="forbid")

    start_ds: date = Field(description="First day.")
    end_ds: date | None = Field(default=None, description="Last day (inclusive); default: start_ds.")


class FeatureUsePublic(BaseModel):
    """A feature-set version with the features deriving from the column, and the versions trained on it."""

    feature_set: str = Field(description="<name>@<version>")
    name: str
    version: str
    features: list[str]
    origin: Literal["derived", "declared"]
    model_versions: int = Field(description="How many registry versions in `data` consume this version.")


class SourceColumnLineagePublic(BaseModel):
    """Feature-set versions deriving from a source column, and the model versions consuming them."""

    column: str = Field(description="<source>.<column>")
    status: str = Field(description="The model version status looked for ('any' for all).")
    feature_sets: list[FeatureUsePublic]
    data: list[VersionSummaryPublic] = Field(description="Model versions trained on those feature sets.")
    count: int
    note: str | None = Field(description="Why the answer may be incomplete.")
