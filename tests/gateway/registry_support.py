"""Seeding the registry the way the registrar does: allocate, store the artifact, commit the record."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ModelVersionChanged
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


def expected_event_id(pair: PairKey, version: int, entry: int) -> str:
    """The event id the registry feed must give the ``entry``-th audit entry of a version."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:registry/{pair}/{version}/{entry}"))


def change_envelopes(sink: RecordingSink) -> list[Envelope]:
    """Every ModelVersionChanged envelope published, re-publications included (each on its topic)."""
    found = []
    for envelope, topic, key in sink.published:
        if envelope.type == ModelVersionChanged.EVENT_TYPE:
            assert topic == topics.MODEL_VERSION_CHANGED and key == envelope.payload["model_name"]
            found.append(envelope)
    return found


def distinct_envelopes(sink: RecordingSink) -> list[Envelope]:
    """The ModelVersionChanged envelopes as a consumer deduping on event_id keeps them, first seen first.

    A re-published envelope must be the same one (payload and all), not just carry the same id.
    """
    seen: dict[str, Envelope] = {}
    for envelope in change_envelopes(sink):
        assert seen.setdefault(envelope.event_id, envelope) == envelope, envelope.event_id
    return list(seen.values())


def changes(
    sink: RecordingSink, *, pair: PairKey | None = None, version: int | None = None
) -> list[ModelVersionChanged]:
    """The distinct ModelVersionChanged events published, first seen first, optionally of one version."""
    events = [envelope.open_as(ModelVersionChanged) for envelope in distinct_envelopes(sink)]
    return [
        event
        for event in events
        if (pair is None or (event.model_name, event.feature_set) == (pair.model_name, pair.feature_set))
        and (version is None or event.version == version)
    ]
