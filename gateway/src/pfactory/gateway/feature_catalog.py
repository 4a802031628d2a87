"""The feature-set catalog: versions registered at submission, days and lineage learnt from events.

A feature-set version is immutable: the first config registered under ``name`` + ``version`` is
kept, and a different one is refused. "Different" means a different content hash: sha256 of the
name and the spec, the same digest the materialiser writes into each partition's ``_SUCCESS``
marker (``config_hash``), so metadata-only edits (owner, description) are not a new version.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from pfactory.contracts.events import Envelope, FeaturesMaterialised, MaterialisationFailed, UnknownEventError

log = logging.getLogger("pfactory.gateway.feature_catalog")

PartitionStatus = Literal["good", "failed"]
LineageOrigin = Literal["derived", "declared"]


def config_hash(name: str, spec: dict[str, Any]) -> str:
    """sha256 of what determines a partition's content (the materialiser's ``config_hash``)."""
    payload = {"name": name, "spec": spec}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions naturally: ``2 < 10``, ``1.2.0 < 1.10.0``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in version.split("."))


@dataclass(frozen=True)
class FeatureSetRegistration:
    """A feature-set version as submitted: its normalised config and the parts lineage needs."""

    name: str
    version: str
    config: dict[str, Any]
    config_hash: str
    features: list[dict[str, Any]]
    """``[{name, dtype, description, source_columns}]`` as declared."""
    registered_by: str | None
    registered_at: datetime
    job_id: str

    @classmethod
    def from_document(
        cls, document: dict[str, Any], *, registered_by: str | None, registered_at: datetime, job_id: str
    ) -> FeatureSetRegistration:
        """Build from a FeatureSet document the contracts loader accepted."""
        spec = document["spec"]
        name = str(document["metadata"]["name"])
        features = [
            {
                "name": feature["name"],
                "dtype": feature.get("dtype"),
                "description": feature.get("description", ""),
                "source_columns": list(feature.get("source_columns", [])),
            }
            for feature in spec.get("features", [])
        ]
        return cls(
            name=name,
            version=str(spec["version"]),
            config=document,
            config_hash=config_hash(name, spec),
            features=features,
            registered_by=registered_by,
            registered_at=registered_at,
            job_id=job_id,
        )

    def declared_lineage(self) -> dict[str, list[str]]:
        """feature → the ``source_columns`` the config declares (features declaring none left out)."""
        return {f["name"]: list(f["source_columns"]) for f in self.features if f["source_columns"]}


@dataclass(frozen=True)
class FeatureSetVersionRecord:
    """A catalogued feature-set version. ``config`` is None when only events told of it."""

    name: str
    version: str
    config: dict[str, Any] | None
    config_hash: str | None
    features: list[dict[str, Any]]
    registered_by: str | None
    registered_at: datetime
    job_id: str | None
    good_days: int = 0
    failed_days: int = 0
    first_ds: date | None = None
    last_ds: date | None = None
    last_materialised_at: datetime | None = None


@dataclass(frozen=True)
class FeatureSetSummaryRecord:
    """A feature-set name with its versions."""

    name: str
    versions: list[str]
    registered_at: datetime


class RegistrationOutcome(enum.StrEnum):
    """What registering a version did."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # the same config was already registered
    CONFLICT = "conflict"  # a different config holds this name + version


@dataclass(frozen=True)
class RegistrationResult:
    """The outcome and the version as stored afterwards (the first-registered one on a conflict)."""

    outcome: RegistrationOutcome
    record: FeatureSetVersionRecord


@dataclass(frozen=True)
class PartitionRecord:
    """One day of a feature-set version as the events reported it (the newest event wins)."""

    name: str
    version: str
    ds: date
    status: PartitionStatus
    uri: str | None
    rows: int | None
    columns: list[str]
    validation: dict[str, Any]
    reason: str | None
    job_id: str
    event_id: str
    occurred_at: datetime
    failing_expectations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class LineageMatch:
    """A feature of a feature-set version deriving from a source column."""

    name: str
    version: str
    feature: str
    origin: LineageOrigin


class FeatureCatalogStore(Protocol):
    """Feature-set versions, their days and their column lineage."""

    async def register_feature_set(self, registration: FeatureSetRegistration) -> RegistrationResult:
        """Insert the version unless present; a present one with another config hash is a conflict.

        A version first seen through an event (no config) takes the registration's config.
        """

    async def record_partition(self, record: PartitionRecord, lineage: dict[str, list[str]] | None) -> bool:
        """Record a day (and, for a good day, the version's derived lineage) unless a newer event did.

        Returns:
            False when the record is older than the one held (nothing changed).
        """

    async def list_feature_sets(self, *, limit: int, after_name: str | None) -> list[FeatureSetSummaryRecord]:
        """Feature-set names in order, after ``after_name`` (keyset)."""

    async def list_feature_set_versions(self, name: str) -> list[FeatureSetVersionRecord]:
        """Every version of a feature set (unordered)."""

    async def get_feature_set_version(self, name: str, version: str) -> FeatureSetVersionRecord | None:
        """One version, or None."""

    async def list_partitions(
        self, name: str, version: str, *, start: date | None, end: date | None
    ) -> list[PartitionRecord]:
        """Recorded days of a version, by ds, within ``start``..``end`` when given."""

    async def get_partition(self, name: str, version: str, ds: date) -> PartitionRecord | None:
        """One recorded day, or None."""

    async def feature_lineage(self, name: str, version: str) -> dict[str, tuple[LineageOrigin, list[str]]]:
        """feature → (origin, source columns): derived lineage when any day recorded it, else declared."""

    async def features_on_source_column(self, column: str) -> list[LineageMatch]:
        """Every feature deriving from ``column`` (derived lineage preferred per version)."""


async def apply_feature_envelope(store: FeatureCatalogStore, envelope: Envelope) -> bool | None:
    """Record one ``FeaturesMaterialised`` (good day + lineage) or day-level ``MaterialisationFailed``.

    Idempotent: a redelivered or older event changes nothing. Other and unreadable events, and
    failures without a day (the config was rejected), are skipped (None).
    """
    try:
        event = envelope.open()
    except (UnknownEventError, ValidationError) as error:
        log.warning("ignoring %s %s on a feature topic: %s", envelope.type, envelope.event_id, error)
        return None
    if isinstance(event, FeaturesMaterialised):
        record = PartitionRecord(
            name=event.feature_set.name,
            version=event.feature_set.version,
            ds=event.ds,
            status="good",
            uri=event.uri or None,
            rows=event.rows,
            columns=list(event.columns),
            validation=dict(event.validation),
            reason=None,
            job_id=event.job_id,
            event_id=envelope.event_id,
            occurred_at=envelope.occurred_at,
        )
        return await store.record_partition(record, lineage_of(event.lineage))
    if isinstance(event, MaterialisationFailed) and event.ds is not None:
        record = PartitionRecord(
            name=event.feature_set.name,
            version=event.feature_set.version,
            ds=event.ds,
            status="failed",
            uri=None,
            rows=None,
            columns=[],
            validation={},
            reason=event.reason,
            job_id=event.job_id,
            event_id=envelope.event_id,
            occurred_at=envelope.occurred_at,
            failing_expectations=list(event.failing_expectations),
        )
        return await store.record_partition(record, None)
    return None


def lineage_of(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The event's ``[{feature, sources}]`` as feature → sorted source columns."""
    lineage: dict[str, list[str]] = {}
    for item in items:
        feature = item.get("feature")
        sources = item.get("sources") or []
        if isinstance(feature, str):
            columns = sources if isinstance(sources, list) else [sources]
            lineage[feature] = sorted({str(column) for column in columns})
    return lineage
