"""Model registry: version records and lifecycle, artifact stores, version indexes, safe serialisation.

Backends with SDK imports (``s3``, ``dynamodb``) are imported from their modules, not from here.
"""

from pfactory.registry.artifacts import ArtifactStore, StoredObject
from pfactory.registry.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ConcurrentUpdateError,
    GateFailedError,
    IllegalTransitionError,
    NotAllocatedError,
    RegistryError,
    UntrustedTypeError,
    VersionNotFoundError,
)
from pfactory.registry.index import Allocation, ChangeBatch, VersionIndex, VersionLifecycle, VersionPage
from pfactory.registry.layout import VersionLayout
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.model import (
    LEGAL_TRANSITIONS,
    ArtifactInfo,
    AuditEntry,
    Lineage,
    MetricValue,
    ModelVersion,
    PairKey,
    VersionStatus,
)
from pfactory.registry.settings import DynamoDBVersionIndexSettings, S3ArtifactStoreSettings
from pfactory.registry.sqlite import SqliteVersionIndex

__all__ = [
    "LEGAL_TRANSITIONS",
    "Allocation",
    "ArtifactInfo",
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "AuditEntry",
    "ChangeBatch",
    "ConcurrentUpdateError",
    "DynamoDBVersionIndexSettings",
    "GateFailedError",
    "IllegalTransitionError",
    "Lineage",
    "LocalArtifactStore",
    "MetricValue",
    "ModelVersion",
    "NotAllocatedError",
    "PairKey",
    "RegistryError",
    "S3ArtifactStoreSettings",
    "SqliteVersionIndex",
    "StoredObject",
    "UntrustedTypeError",
    "VersionIndex",
    "VersionLayout",
    "VersionLifecycle",
    "VersionNotFoundError",
    "VersionPage",
    "VersionStatus",
]
