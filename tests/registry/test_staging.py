"""Staging keys, and staged-artifact URIs turned back into keys of the same store only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.s3 import S3ArtifactStore
from pfactory.registry.settings import S3ArtifactStoreSettings
from pfactory.registry.staging import StagedArtifactURIError, key_from_uri, stage_model, staging_key


def test_staging_key_names_the_job() -> None:
    assert staging_key("7f3a-42") == "staging/job=7f3a-42/model.skops"
    for bad in ("", "a/b", "..", "a\\b"):
        with pytest.raises(ValueError, match="cannot name a staging folder"):
            staging_key(bad)


class StagingContract:
    """What every store must support; subclasses provide ``store``."""

    async def test_a_staged_uri_maps_back_to_its_key(self, store: ArtifactStore) -> None:
        staged = await stage_model(store, "job 1@x", b"model bytes")

        key = key_from_uri(store, staged.uri)

        assert key == staging_key("job 1@x") and await store.read(key) == b"model bytes"
        assert staged.size_bytes == 11 and staged.format == "skops"

    async def test_uris_outside_the_store_are_refused(self, store: ArtifactStore) -> None:
        for uri in (
            "file:///etc/passwd",
            "s3://another-bucket/staging/job=j/model.skops",
            "https://example.org/model.skops",
            store.uri("staging") + "/../../secrets",
            store.uri(staging_key("j")) + "/../../../../escape",
        ):
            with pytest.raises(StagedArtifactURIError, match="not inside the registry's artifact store"):
                key_from_uri(store, uri)


class TestLocalStaging(StagingContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalArtifactStore:
        return LocalArtifactStore(tmp_path / "artifacts with space")

    def test_a_sibling_folder_with_the_same_prefix_is_outside(self, tmp_path: Path) -> None:
        store = LocalArtifactStore(tmp_path / "a")
        sibling = LocalArtifactStore(tmp_path / "ab")
        with pytest.raises(StagedArtifactURIError):
            key_from_uri(store, sibling.uri("staging/job=j/model.skops"))


@pytest.mark.integration
class TestS3Staging(StagingContract):
    @pytest.fixture
    async def store(self, moto: str) -> AsyncIterator[S3ArtifactStore]:
        settings = S3ArtifactStoreSettings(bucket="pf-staging", prefix="registry/", endpoint_url=moto)
        async with S3ArtifactStore(settings) as s3:
            await s3.create_bucket()
            yield s3

    def test_another_prefix_of_the_bucket_is_outside(self) -> None:
        store = S3ArtifactStore(S3ArtifactStoreSettings(bucket="b", prefix="registry/"))
        with pytest.raises(StagedArtifactURIError):
            key_from_uri(store, "s3://b/other/staging/job=j/model.skops")
        assert key_from_uri(store, "s3://b/registry/staging/job=j/model.skops") == "staging/job=j/model.skops"
