"""Partition stores over pyarrow filesystems: ``LocalPartitionStore`` and ``S3PartitionStore``.

Both stage a day's files under ``<root>/_staging/<run id>/`` first, so a crash while writing
never touches the published day. Then:

* local: the staged folder (marker included) replaces the day's folder by ``rename``; the old
  folder is moved aside first and deleted after, so a reader sees the old day, no day, or the
  new day, never a mix.
* S3 (no rename): the old marker is deleted first (the day stops being trusted), the staged
  objects are copied into place, objects of the old partition that the new one lacks are deleted,
  and the marker is written last; a crash in between leaves a day without a marker, which readers
  ignore and a rerun repairs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from pfactory.materialiser.adapters.arrow_io import s3_filesystem
from pfactory.materialiser.storage import (
    DATA_FILE,
    FAILED_MARKER,
    GOOD_MARKER,
    QUARANTINE_MARKER,
    STATS_FILE,
    VALIDATION_FILE,
    PartitionContent,
    PartitionKey,
)

StepHook = Callable[[str], None]
"""Called with ``"staged"`` (all files in staging) and ``"published"`` (before the marker); tests crash here."""

_MARKERS = (GOOD_MARKER, FAILED_MARKER, QUARANTINE_MARKER)


class _FileSystemPartitionStore:
    """The shared part: layout, staging, reading. Subclasses publish a staged folder."""

    def __init__(
        self, filesystem: fs.FileSystem, base: str, uri_prefix: str, on_step: StepHook | None
    ) -> None:
        self.fs = filesystem
        self.base = base.rstrip("/")
        self.uri_prefix = uri_prefix.rstrip("/")
        self.on_step = on_step or (lambda _step: None)

    # ------------------------------------------------------------------ the PartitionStore role

    def write_good(
        self, key: PartitionKey, content: PartitionContent, marker: dict[str, Any], run_id: str
    ) -> str:
        """Replace the day with ``content``; ``_SUCCESS`` last."""
        files = _content_files(content)
        self._replace(key.path(), files, (GOOD_MARKER, _json_bytes(marker)), run_id)
        return self.uri(key.path())

    def write_quarantine(
        self, key: PartitionKey, content: PartitionContent, failure: dict[str, Any], run_id: str
    ) -> str:
        """Quarantine the output, then replace the day's features folder with a ``_FAILED`` marker."""
        quarantine_uri = self.uri(key.quarantine_path())
        record = _json_bytes({**failure, "quarantine_uri": quarantine_uri})
        self._replace(
            key.quarantine_path(), _content_files(content), (QUARANTINE_MARKER, record), f"{run_id}-q"
        )
        self._replace(key.path(), {}, (FAILED_MARKER, record), run_id)
        return quarantine_uri

    def good_marker(self, key: PartitionKey) -> dict[str, Any] | None:
        """``_SUCCESS`` of the day, or None."""
        return self.read_json(key, GOOD_MARKER)

    def read_json(self, key: PartitionKey, name: str, *, quarantine: bool = False) -> dict[str, Any] | None:
        """A JSON file of the day's (or its quarantine's) folder, or None."""
        folder = key.quarantine_path() if quarantine else key.path()
        try:
            with self.fs.open_input_stream(self._abs(f"{folder}/{name}")) as stream:
                data: dict[str, Any] = json.loads(stream.read())
                return data
        except FileNotFoundError:
            return None

    def read_table(self, key: PartitionKey) -> pa.Table:
        """The rows of a good day."""
        if self.good_marker(key) is None:
            raise LookupError(f"{self.uri(key.path())} is not a good partition (no {GOOD_MARKER})")
        return pq.read_table(self._abs(f"{key.path()}/{DATA_FILE}"), filesystem=self.fs)

    def partition_uri(self, key: PartitionKey) -> str:
        """The URI of the day's features folder."""
        return self.uri(key.path())

    def uri(self, relative: str) -> str:
        """The URI of a path under the store root."""
        return f"{self.uri_prefix}/{relative}"

    # ------------------------------------------------------------------ staging and publishing

    def _replace(
        self, relative: str, files: dict[str, bytes], marker: tuple[str, bytes], run_id: str
    ) -> None:
        staging = self._abs(f"_staging/{run_id}")
        self._make_dir(staging)
        for name, data in files.items():
            self._write(f"{staging}/{name}", data)
        self._stage_marker(staging, marker)
        self.on_step("staged")
        self._publish(staging, self._abs(relative), files, marker)

    def _make_dir(self, path: str) -> None:
        """Object stores have no folders; local ones need them."""

    def _stage_marker(self, staging: str, marker: tuple[str, bytes]) -> None:
        """Local stores put the marker in the staged folder; S3 writes it after the copy instead."""

    def _publish(self, staging: str, final: str, files: dict[str, bytes], marker: tuple[str, bytes]) -> None:
        raise NotImplementedError

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def _abs(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != fs.FileType.NotFound)


class LocalPartitionStore(_FileSystemPartitionStore):
    """Partitions in a local folder; a day is published by renaming its staged folder into place."""

    def __init__(self, root: str | Path, *, on_step: StepHook | None = None) -> None:
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        super().__init__(fs.LocalFileSystem(), str(path), path.as_uri(), on_step)

    def _make_dir(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def _stage_marker(self, staging: str, marker: tuple[str, bytes]) -> None:
        self._write(f"{staging}/{marker[0]}", marker[1])

    def _publish(self, staging: str, final: str, files: dict[str, bytes], marker: tuple[str, bytes]) -> None:
        self._make_dir(final.rsplit("/", 1)[0])
        aside = f"{staging}.old"
        had_old = self._exists(final)
        if had_old:
            self.fs.move(final, aside)
        self.on_step("published")
        self.fs.move(staging, final)
        if had_old:
            self.fs.delete_dir(aside)


class S3PartitionStore(_FileSystemPartitionStore):
    """Partitions under ``s3://bucket/prefix`` through pyarrow's S3FileSystem; marker written last."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        on_step: StepHook | None = None,
    ) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"an S3 store root must be an s3:// URI, not '{uri}'")
        base = uri.removeprefix("s3://").rstrip("/")
        super().__init__(s3_filesystem(endpoint_url, region), base, f"s3://{base}", on_step)

    def _publish(self, staging: str, final: str, files: dict[str, bytes], marker: tuple[str, bytes]) -> None:
        old = self._list(final)
        for name in _MARKERS:  # the day stops being trusted before any of its objects change
            if name in old:
                self.fs.delete_file(f"{final}/{name}")
        for name in files:
            self.fs.copy_file(f"{staging}/{name}", f"{final}/{name}")
        for name in old - set(files) - set(_MARKERS):
            self.fs.delete_file(f"{final}/{name}")
        self.on_step("published")
        self._write(f"{final}/{marker[0]}", marker[1])
        if files:
            self.fs.delete_dir(staging)  # pyarrow leaves an empty '_staging/' folder object: harmless

    def _list(self, folder: str) -> set[str]:
        infos = self.fs.get_file_info(fs.FileSelector(folder, allow_not_found=True))
        return {info.base_name for info in infos if info.type == fs.FileType.File}


def build_partition_store(
    root: str, *, endpoint_url: str | None = None, region: str | None = None
) -> LocalPartitionStore | S3PartitionStore:
    """The store for ``root``: ``s3://...`` → S3, anything else → a local folder."""
    if root.startswith("s3://"):
        return S3PartitionStore(root, endpoint_url=endpoint_url, region=region)
    return LocalPartitionStore(root.removeprefix("file://"))


def _content_files(content: PartitionContent) -> dict[str, bytes]:
    buffer = io.BytesIO()
    pq.write_table(content.table, buffer)
    return {
        DATA_FILE: buffer.getvalue(),
        VALIDATION_FILE: _json_bytes(content.validation),
        STATS_FILE: _json_bytes(content.statistics),
    }


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()
