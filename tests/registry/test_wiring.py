"""The registry's wiring point: backends chosen from settings, and which errors a worker retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from pfactory.bus.consumer import TRANSIENT_ERRORS, is_transient
from pfactory.registry.errors import ConcurrentUpdateError, VersionNotFoundError
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.model import PairKey
from pfactory.registry.sqlite import SqliteVersionIndex
from pfactory.registry.wiring import RegistrySettings, build_registry, transient_errors


async def test_embedded_backend_is_a_folder_and_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    registry = await build_registry(RegistrySettings(data_dir=tmp_path / "reg"))
    try:
        assert isinstance(registry.artifacts, LocalArtifactStore)
        assert isinstance(registry.index, SqliteVersionIndex)
        await registry.artifacts.put("models/x/model.skops", b"abc")
        assert (tmp_path / "reg" / "artifacts" / "models" / "x" / "model.skops").read_bytes() == b"abc"
        allocation = await registry.index.allocate(PairKey.of("credit", "features", "1"), "job-1")
        assert allocation.version == 1
        assert (tmp_path / "reg" / "registry.db").exists()
    finally:
        await registry.close()


async def test_aws_backend_without_its_bucket_and_table_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PF_REGISTRY_S3__BUCKET"):
        await build_registry(RegistrySettings(backend="aws", data_dir=tmp_path))
    assert not (tmp_path / "registry.db").exists()


def test_aws_outages_and_lost_races_are_retried_other_errors_are_not() -> None:
    retried = (*TRANSIENT_ERRORS, *transient_errors())
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), retried)
    assert is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), retried)
    assert is_transient(ConcurrentUpdateError("lost"), retried)
    assert not is_transient(VersionNotFoundError("no such version"), retried)
    assert not is_transient(ValueError("bad input"), retried)
