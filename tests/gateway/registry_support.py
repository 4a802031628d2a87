"""Seeding the registry the way the registrar does: allocate, store the artifact, commit the record."""

from __future__ import annotations

import hashlib
from typing import Any

from pfactory.contracts import topics
from pfactory.contracts.events import ModelVersionChanged
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import ArtifactInfo, ModelVersion, PairKey, VersionStatus
from pfactory.registry.wiring import Registry
from tests.gateway.support import RecordingSink
from tests.registry.factories import make_version

PAIR = PairKey.of("credit_default", "credit_features", "3")
BUREAU_PAIR = PairKey.of("credit_default", "bureau_features", "1")
LIMIT_PAIR = PairKey.of("credit_limit", "credit_features", "4")


def artifact_bytes(pair: PairKey, key: str, size: int = 2048) -> bytes:
    """Deterministic, distinct content per version."""
    seed = hashlib.sha256(f"{pair}/{key}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def seed(
    registry: Registry, pair: PairKey, key: str, *, content: bytes | None = None, **overrides: Any
) -> ModelVersion:
    """Register one candidate version with a real artifact (its sha256 recorded)."""
    allocation = await registry.index.allocate(pair, key)
    data = content if content is not None else artifact_bytes(pair, key)
    stored = await registry.artifacts.put(VersionLayout(pair, allocation.version).model, data)
    artifact = ArtifactInfo(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes)
    record = make_version(pair, allocation.version, key, artifact=artifact, **overrides)
    return await registry.index.commit(record)


async def make_live(registry: Registry, pair: PairKey, version: int) -> ModelVersion:
    """Approve then put a version live, as an admin and the scheduler would."""
    await registry.index.transition(pair, version, VersionStatus.APPROVED, actor="seed")
    return await registry.index.transition(pair, version, VersionStatus.LIVE, actor="seed")


def changes(sink: RecordingSink) -> list[ModelVersionChanged]:
    """The ModelVersionChanged events the relay published, in order (each on its topic)."""
    found = []
    for envelope, topic, key in sink.published:
        if envelope.type == ModelVersionChanged.EVENT_TYPE:
            event = envelope.open_as(ModelVersionChanged)
            assert topic == topics.MODEL_VERSION_CHANGED and key == event.model_name
            found.append(event)
    return found
