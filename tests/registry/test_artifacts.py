"""One contract suite for ``ArtifactStore``, run against the local folder and S3 (moto_server)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.errors import ArtifactNotFoundError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.s3 import S3ArtifactStore
from pfactory.registry.settings import S3ArtifactStoreSettings
from tests.registry.factories import PAIR

KEY = VersionLayout(PAIR, 1).model


async def _collect(store: ArtifactStore, key: str, chunk_size: int) -> list[bytes]:
    return [chunk async for chunk in store.open(key, chunk_size=chunk_size)]


class ArtifactStoreContract:
    """Behaviour every artifact store must show; subclasses provide the ``store`` fixture."""

    async def test_round_trip_reports_sha256_and_size(self, store: ArtifactStore) -> None:
        data = b"model bytes " * 1000
        stored = await store.put(KEY, data)
        assert (stored.sha256, stored.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
        assert stored.uri == store.uri(KEY)
        assert await store.read(KEY) == data
        assert await store.exists(KEY)

    async def test_open_streams_in_chunks(self, store: ArtifactStore) -> None:
        data = bytes(range(256)) * 40
        await store.put(KEY, data)
        chunks = await _collect(store, KEY, 1024)
        assert b"".join(chunks) == data
        assert len(chunks) >= 10 and all(len(chunk) <= 1024 for chunk in chunks)

    async def test_put_of_a_file_streams_it(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = tmp_path / "model.skops"
        source.write_bytes(b"x" * 300_000)
        stored = await store.put(KEY, source)
        assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert stored.size_bytes == 300_000
        assert await store.read(KEY) == source.read_bytes()

    async def test_overwrite_replaces_the_whole_object(self, store: ArtifactStore) -> None:
        await store.put(KEY, b"old" * 10_000)
        stored = await store.put(KEY, b"new")
        assert await store.read(KEY) == b"new"
        assert stored.size_bytes == 3

    async def test_concurrent_overwrites_leave_one_whole_version(self, store: ArtifactStore) -> None:
        payloads = [bytes([i]) * 200_000 for i in range(6)]
        await asyncio.gather(*(store.put(KEY, payload) for payload in payloads))
        assert await store.read(KEY) in payloads

    async def test_missing_key_is_a_clear_error(self, store: ArtifactStore) -> None:
        assert not await store.exists("models/nothing/here")
        with pytest.raises(ArtifactNotFoundError, match="models/nothing/here"):
            await store.read("models/nothing/here")
        with pytest.raises(ArtifactNotFoundError, match="models/nothing/here"):
            await _collect(store, "models/nothing/here", 1024)

    async def test_delete_removes_and_tolerates_missing(self, store: ArtifactStore) -> None:
        await store.put(KEY, b"abc")
        await store.delete(KEY)
        assert not await store.exists(KEY)
        await store.delete(KEY)

    async def test_keys_that_escape_the_store_are_refused(self, store: ArtifactStore) -> None:
        for key in ("../outside", "/absolute", "models//double", "models/./x"):
            with pytest.raises(ValueError, match="artifact key"):
                await store.put(key, b"x")


class TestLocalArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalArtifactStore:
        return LocalArtifactStore(tmp_path / "registry")

    async def test_layout_on_disk_and_no_temp_files_left(self, store: LocalArtifactStore) -> None:
        await store.put(KEY, b"abc")
        await store.put(KEY, b"abcd")
        folder = store.root / VersionLayout(PAIR, 1).prefix
        assert [p.name for p in folder.iterdir()] == ["model.skops"]
        assert store.uri(KEY).startswith("file://")


@pytest.mark.integration
class TestS3ArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    async def store(self, moto: str) -> AsyncIterator[S3ArtifactStore]:
        settings = S3ArtifactStoreSettings(
            bucket="pf-artifacts", prefix="registry/", endpoint_url=moto, multipart_threshold_bytes=5 * 2**20
        )
        async with S3ArtifactStore(settings) as store:
            await store.create_bucket()
            yield store

    async def test_objects_sit_under_the_prefix_with_their_sha256(self, store: S3ArtifactStore) -> None:
        stored = await store.put(KEY, b"abc")
        assert stored.uri == f"s3://pf-artifacts/registry/{KEY}"
        s3 = await store._s3()
        head = await s3.head_object(Bucket="pf-artifacts", Key=f"registry/{KEY}")
        assert head["Metadata"]["sha256"] == hashlib.sha256(b"abc").hexdigest()

    def test_settings_refuse_unknown_fields(self) -> None:
        with pytest.raises(ValueError, match="extra"):
            S3ArtifactStoreSettings(bucket="b", endpoint="http://x")  # type: ignore[call-arg]
