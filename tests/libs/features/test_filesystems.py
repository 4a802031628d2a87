"""Resolving store roots and data paths to pyarrow filesystems."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs

from pfactory.features import resolve, root_uri, s3_filesystem


def test_local_paths_and_file_uris_resolve_to_the_same_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my store").mkdir()
    for given in ("my store/", str(tmp_path / "my store"), (tmp_path / "my store").as_uri()):
        filesystem, path = resolve(given)
        assert isinstance(filesystem, fs.LocalFileSystem)
        assert path == str(tmp_path / "my store")
    assert root_uri("my store") == (tmp_path / "my store").as_uri()  # spaces quoted as %20


def test_s3_uris_keep_bucket_and_prefix_and_share_one_filesystem_per_endpoint() -> None:
    filesystem, path = resolve("s3://bucket/pf/", endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert path == "bucket/pf"
    assert isinstance(filesystem, fs.S3FileSystem)
    assert filesystem is s3_filesystem("http://127.0.0.1:9", "eu-west-1")
    assert filesystem is not s3_filesystem("http://127.0.0.1:10", "eu-west-1")
    assert root_uri("s3://bucket/pf/") == "s3://bucket/pf"


def test_an_unsupported_scheme_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"unsupported scheme 'gs://'.*local path or s3://"):
        resolve("gs://bucket/x")
