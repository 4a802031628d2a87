"""Writes feature partitions in the materialiser's exact layout, through any pyarrow filesystem.

Mirrors ``pfactory.materialiser`` (``storage.py`` layout, ``service.py`` marker content) without
importing it, so reader tests do not depend on Spark or GX; ``test_reader`` also checks that the
materialiser's own store is read the same way.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from pfactory.features.layout import (
    DATA_FILE,
    FAILED_MARKER,
    GOOD_MARKER,
    QUARANTINE_MARKER,
    STATS_FILE,
    VALIDATION_FILE,
    partition_path,
    quarantine_path,
)


def good_marker(
    feature_set: str,
    version: str,
    ds: date,
    table: pa.Table,
    *,
    config_hash: str = "cfg-hash-1",
    sql_hashes: dict[str, str] | None = None,
    entity: list[str] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """What the materialiser's ``_SUCCESS`` holds for a good day.

    ``entity`` and ``timestamp`` (the feature set's join columns) are left out when None, as in
    markers written before the materialiser recorded them.
    """
    join: dict[str, Any] = {"entity": entity} if entity is not None else {}
    join |= {"timestamp": timestamp} if timestamp is not None else {}
    return {
        "feature_set": feature_set,
        "version": version,
        "ds": ds.isoformat(),
        "config_hash": config_hash,
        "run_id": f"run-{ds.isoformat()}",
        "written_at": datetime.now(UTC).isoformat(),
        "rows": table.num_rows,
        "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "validation": {"success": True, "evaluated": 3, "failed": 0},
        "lineage": {name: [] for name in table.column_names},
        "sql_hashes": sql_hashes if sql_hashes is not None else {"features": "sha-features-1"},
        **join,
    }


class PartitionWriter:
    """Writes days under ``base`` (a path inside ``filesystem``: ``/tmp/store`` or ``bucket/prefix``)."""

    def __init__(self, filesystem: fs.FileSystem, base: str, feature_set: str = "fs", version: str = "1"):
        self.fs = filesystem
        self.base = base.rstrip("/")
        self.feature_set = feature_set
        self.version = version

    def good(self, ds: date, table: pa.Table, **marker_options: Any) -> dict[str, Any]:
        """A validated day: data, reports, then ``_SUCCESS``; returns the marker."""
        marker = good_marker(self.feature_set, self.version, ds, table, **marker_options)
        folder = self._folder(partition_path(self.feature_set, self.version, ds))
        self._data(folder, table)
        self._write(f"{folder}/{GOOD_MARKER}", _json(marker))
        return marker

    def failed(self, ds: date, table: pa.Table) -> None:
        """A day that failed validation: rows in quarantine, ``_FAILED`` alone in the features folder."""
        quarantine = self._folder(quarantine_path(self.feature_set, self.version, ds))
        record = _json({"reason": "validation failed: 1 of 3 expectations", "quarantine_uri": quarantine})
        self._data(quarantine, table)
        self._write(f"{quarantine}/{QUARANTINE_MARKER}", record)
        folder = self._folder(partition_path(self.feature_set, self.version, ds))
        self._write(f"{folder}/{FAILED_MARKER}", record)

    def unmarked(self, ds: date, table: pa.Table) -> None:
        """A day whose writer died before the marker: data present, no ``_SUCCESS``."""
        self._data(self._folder(partition_path(self.feature_set, self.version, ds)), table)

    def raw(self, ds: date, name: str, data: bytes) -> None:
        """Any file in a day's folder (e.g. a corrupt marker)."""
        folder = self._folder(partition_path(self.feature_set, self.version, ds))
        self._write(f"{folder}/{name}", data)

    def _folder(self, relative: str) -> str:
        folder = f"{self.base}/{relative}"
        if isinstance(self.fs, fs.LocalFileSystem):  # object stores have no folders
            self.fs.create_dir(folder, recursive=True)
        return folder

    def _data(self, folder: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write(f"{folder}/{DATA_FILE}", buffer.getvalue())
        self._write(f"{folder}/{VALIDATION_FILE}", _json({"success": True}))
        self._write(f"{folder}/{STATS_FILE}", _json({"rows": table.num_rows, "columns": {}}))

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()
