"""Reading feature partitions' JSON files (markers, statistics, validation reports) over pyarrow filesystems.

The layout is the materialiser's (``features/feature_set=<name>/version=<v>/ds=<date>/`` holding
``_SUCCESS`` or ``_FAILED``, ``_stats.json``, ``_validation.json``; a rejected day's files under
``quarantine/…``). The gateway only reads; it never imports the materialiser.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pyarrow import fs

GOOD_MARKER = "_SUCCESS"
FAILED_MARKER = "_FAILED"
STATS_FILE = "_stats.json"
VALIDATION_FILE = "_validation.json"


def partition_path(name: str, version: str, ds: date) -> str:
    """A day's folder relative to a store root."""
    return f"features/feature_set={name}/version={version}/ds={ds.isoformat()}"


def quarantine_uri_of(uri: str) -> str:
    """The quarantine folder matching a features folder URI."""
    head, sep, tail = uri.rpartition("/features/feature_set=")
    return f"{head}/quarantine/feature_set={tail}" if sep else uri


@dataclass(frozen=True)
class PartitionFiles:
    """What a day's folder (and, for a failed day, its quarantine folder) holds."""

    uri: str
    status: Literal["good", "failed", "missing"]
    marker: dict[str, Any] | None
    statistics: dict[str, Any] | None
    validation: dict[str, Any] | None


class PartitionReader:
    """Reads partition JSON files from local folders (``file://`` or a path) or S3 (``s3://``)."""

    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._s3: fs.FileSystem | None = None

    def _resolve(self, uri: str) -> tuple[fs.FileSystem, str]:
        if uri.startswith("s3://"):
            if self._s3 is None:
                options: dict[str, Any] = {}
                if self.endpoint_url:
                    scheme, _, host = self.endpoint_url.rpartition("://")
                    options.update(endpoint_override=host or self.endpoint_url, scheme=scheme or "https")
                if self.region:
                    options["region"] = self.region
                self._s3 = fs.S3FileSystem(**options)
            return self._s3, uri.removeprefix("s3://").rstrip("/")
        if uri.startswith("file://"):
            return fs.LocalFileSystem(), unquote(urlparse(uri).path).rstrip("/")
        return fs.LocalFileSystem(), uri.rstrip("/")

    def read_json(self, folder_uri: str, name: str) -> dict[str, Any] | None:
        """``<folder>/<name>`` parsed, or None when it is absent."""
        filesystem, base = self._resolve(folder_uri)
        try:
            with filesystem.open_input_stream(f"{base}/{name}") as stream:
                data = json.loads(stream.read())
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data if isinstance(data, dict) else {"value": data}

    def read_day(self, uri: str) -> PartitionFiles:
        """The day's marker, statistics and validation report; a failed day's come from quarantine."""
        good = self.read_json(uri, GOOD_MARKER)
        if good is not None:
            return PartitionFiles(
                uri, "good", good, self.read_json(uri, STATS_FILE), self.read_json(uri, VALIDATION_FILE)
            )
        failed = self.read_json(uri, FAILED_MARKER)
        if failed is not None:
            quarantine = str(failed.get("quarantine_uri") or quarantine_uri_of(uri))
            return PartitionFiles(
                uri,
                "failed",
                failed,
                self.read_json(quarantine, STATS_FILE),
                self.read_json(quarantine, VALIDATION_FILE),
            )
        return PartitionFiles(uri, "missing", None, None, None)

    async def read_day_async(self, uri: str) -> PartitionFiles:
        """:meth:`read_day` on a worker thread (pyarrow I/O blocks)."""
        return await asyncio.to_thread(self.read_day, uri)


def join_root(root: str, relative: str) -> str:
    """``root`` (a path, ``file://`` or ``s3://`` URI) joined with a relative path."""
    return f"{root.rstrip('/')}/{relative}"
