"""Committing real model versions to a registry, as the registrar would, for loader and scorer tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.layout import VersionLayout
from pfactory.registry.loading import LoaderIndex
from pfactory.registry.model import ArtifactInfo, Lineage, ModelVersion, PairKey, VersionStatus
from pfactory.registry.serialization import dump_model


async def commit_version(
    index: LoaderIndex,
    artifacts: ArtifactStore,
    pair: PairKey,
    estimator: object,
    *,
    reference: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    live: bool = False,
) -> ModelVersion:
    """Store the skops binary (and reference) under the version's folder and commit the record."""
    job_id = str(uuid.uuid4())
    allocation = await index.allocate(pair, job_id)
    layout = VersionLayout(pair, allocation.version)
    stored = await artifacts.put(layout.model, dump_model(estimator))
    reference_uri = None
    if reference is not None:
        reference_uri = (await artifacts.put(layout.reference, json.dumps(reference).encode())).uri
    record = await index.commit(
        ModelVersion(
            model_name=pair.model_name,
            feature_set=pair.feature_set,
            version=allocation.version,
            allocation_key=job_id,
            artifact=ArtifactInfo(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes),
            framework="scikit-learn",
            config=config or {"kind": "Model", "spec": {"task": "binary_classification"}},
            reference_uri=reference_uri,
            lineage=Lineage(feature_set_version=pair.feature_set.version),
            created_by="test",
        )
    )
    if live:
        await index.transition(pair, record.version, VersionStatus.APPROVED, actor="test")
        record = await index.transition(pair, record.version, VersionStatus.LIVE, actor="test")
    return record
