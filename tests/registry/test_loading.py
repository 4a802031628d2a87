"""``VersionLoader`` on the embedded registry: resolution by number, alias or live; safe, cached loads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from pfactory.contracts.events import FeatureSetRef
from pfactory.features.drift import build_reference
from pfactory.registry.errors import ArtifactIntegrityError, VersionNotFoundError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.loading import VersionLoader
from pfactory.registry.model import PairKey
from pfactory.registry.wiring import Registry, RegistrySettings, build_registry
from tests.workers.scorer.registered import commit_version

PAIR = PairKey.of("credit-default", "credit-features", "1")
OTHER = PairKey.of("credit-default", "credit-features", "2")


def _fitted(seed: int) -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 300), "age": rng.integers(18, 80, 300)})
    target = (frame["income"] + rng.normal(0, 5, 300) > 50).astype(int)
    return LogisticRegression().fit(frame, target), frame


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    registry = await build_registry(RegistrySettings(data_dir=tmp_path / "registry"))
    yield registry
    await registry.close()


async def test_versions_resolve_by_number_alias_and_live_and_load_with_their_reference(
    registry: Registry,
) -> None:
    model, frame = _fitted(1)
    reference = build_reference(frame, model.predict_proba(frame)[:, 1])
    first = await commit_version(
        registry.index, registry.artifacts, PAIR, model, reference=reference, live=True
    )
    second = await commit_version(registry.index, registry.artifacts, PAIR, _fitted(2)[0])
    await registry.index.move_alias(PAIR, "challenger", second.version, actor="test")
    loader = VersionLoader(registry.index, registry.artifacts)

    assert (await loader.resolve("credit-default", feature_set=None, version=None, alias=None)).version == 1
    assert (await loader.resolve("credit-default", feature_set=None, version=2, alias=None)).version == 2
    by_alias = await loader.resolve(
        "credit-default", feature_set=PAIR.feature_set, version=None, alias="challenger"
    )
    assert by_alias.version == 2

    loaded = await loader.load(first)
    assert loaded.reference == reference
    assert loaded.feature_names == ["income", "age"]
    np.testing.assert_allclose(loaded.estimator.predict_proba(frame), model.predict_proba(frame))
    plain = await loader.load(by_alias)
    assert plain.reference is None and plain.signature == []


async def test_a_second_load_is_served_from_the_cache_and_the_oldest_is_evicted(
    registry: Registry, tmp_path: Path
) -> None:
    records = [
        await commit_version(registry.index, registry.artifacts, PAIR, _fitted(s)[0]) for s in (1, 2, 3)
    ]
    loader = VersionLoader(registry.index, registry.artifacts, cache_size=2)
    first = await loader.load(records[0])
    # were it read again, the now-corrupt binary would be refused: a cache hit reads nothing
    model_file = tmp_path / "registry" / "artifacts" / VersionLayout(PAIR, 1).model
    model_file.write_bytes(b"corrupted")
    assert await loader.load(records[0]) is first

    await loader.load(records[1])
    await loader.load(records[2])  # evicts version 1, the least recently used
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        await loader.load(records[0])


async def test_unknown_names_say_what_exists(registry: Registry) -> None:
    await commit_version(registry.index, registry.artifacts, PAIR, _fitted(1)[0])
    loader = VersionLoader(registry.index, registry.artifacts)

    with pytest.raises(
        VersionNotFoundError, match=r"no model 'nope' is registered; registered models: credit-default"
    ):
        await loader.resolve("nope", feature_set=None, version=None, alias=None)
    with pytest.raises(VersionNotFoundError, match=r"has no version 7; it has versions 1 \(candidate\)"):
        await loader.resolve("credit-default", feature_set=None, version=7, alias=None)
    with pytest.raises(VersionNotFoundError, match="no version holds the alias 'champion'"):
        await loader.resolve("credit-default", feature_set=None, version=None, alias="champion")
    with pytest.raises(VersionNotFoundError, match=r"has no live version.*promote a version to live"):
        await loader.resolve("credit-default", feature_set=None, version=None, alias=None)
    missing = FeatureSetRef(name="credit-features", version="9")
    with pytest.raises(
        VersionNotFoundError, match=r"no version on feature set credit-features@9.*credit-features@1"
    ):
        await loader.resolve("credit-default", feature_set=missing, version=1, alias=None)
    with pytest.raises(ValueError, match="not both"):
        await loader.resolve("credit-default", feature_set=None, version=1, alias="champion")


async def test_a_model_on_two_feature_sets_needs_the_feature_set_named(registry: Registry) -> None:
    await commit_version(registry.index, registry.artifacts, PAIR, _fitted(1)[0])
    await commit_version(registry.index, registry.artifacts, OTHER, _fitted(2)[0])
    loader = VersionLoader(registry.index, registry.artifacts)

    with pytest.raises(
        VersionNotFoundError, match=r"on 2 feature sets \(credit-features@1, credit-features@2\)"
    ):
        await loader.resolve("credit-default", feature_set=None, version=1, alias=None)
    chosen = await loader.resolve("credit-default", feature_set=OTHER.feature_set, version=1, alias=None)
    assert chosen.pair == OTHER
