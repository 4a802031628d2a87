"""Where feature partitions live, what readers may trust, and the ``PartitionStore`` role.

Layout under a store root (a local folder or ``s3://bucket/prefix``)::

    features/feature_set=<name>/version=<v>/ds=<date>/part-0.parquet
                                                      _validation.json   GX report
                                                      _stats.json        rows; per column nulls/min/max/mean
                                                      _SUCCESS           written last: rows, schema,
                                                                         validation summary, config hash,
                                                                         entity and timestamp columns
    features/feature_set=<name>/version=<v>/ds=<date>/_FAILED           instead, when the day failed validation
    quarantine/feature_set=<name>/version=<v>/ds=<date>/part-0.parquet, _validation.json, _stats.json,
                                                      _QUARANTINED

Readers trust a day only when ``_SUCCESS`` is there. A rerun replaces the whole day folder (one
``part-0.parquet``), so it never duplicates rows. A day that fails validation is quarantined and its
features folder is replaced by a ``_FAILED`` marker alone: a previous good partition of that day is
removed rather than left looking current, so nobody trains or scores on data the latest run
rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

DATA_FILE = "part-0.parquet"
GOOD_MARKER = "_SUCCESS"
FAILED_MARKER = "_FAILED"
QUARANTINE_MARKER = "_QUARANTINED"
VALIDATION_FILE = "_validation.json"
STATS_FILE = "_stats.json"


@dataclass(frozen=True)
class PartitionKey:
    """One day of one feature-set version."""

    feature_set: str
    version: str
    ds: date

    def path(self) -> str:
        """The day's folder under the store root."""
        return f"features/feature_set={self.feature_set}/version={self.version}/ds={self.ds.isoformat()}"

    def quarantine_path(self) -> str:
        """Where the day's rejected output goes."""
        return f"quarantine/feature_set={self.feature_set}/version={self.version}/ds={self.ds.isoformat()}"


@dataclass(frozen=True)
class PartitionContent:
    """What a day's folder holds besides its marker."""

    table: pa.Table
    validation: dict[str, Any]
    statistics: dict[str, Any]


class PartitionStore(Protocol):
    """Writes feature partitions atomically and tells readers which days are good."""

    def write_good(
        self, key: PartitionKey, content: PartitionContent, marker: dict[str, Any], run_id: str
    ) -> str:
        """Replace the day with ``content``; ``_SUCCESS`` (holding ``marker``) becomes visible last.

        Args:
            key: the day.
            content: the output table, validation report and statistics.
            marker: what ``_SUCCESS`` records (rows, schema, validation summary, config hash, ...).
            run_id: unique per attempt; names the staging area.

        Returns:
            The partition's URI.
        """
        ...

    def write_quarantine(
        self, key: PartitionKey, content: PartitionContent, failure: dict[str, Any], run_id: str
    ) -> str:
        """Quarantine the day's output and mark the day failed (any good partition of it goes).

        Args:
            key: the day.
            content: the rejected table with its validation report and statistics.
            failure: what ``_QUARANTINED`` and ``_FAILED`` record (reason, failing expectations).
            run_id: unique per attempt.

        Returns:
            The quarantine folder's URI.
        """
        ...

    def good_marker(self, key: PartitionKey) -> dict[str, Any] | None:
        """The day's ``_SUCCESS`` content, or None when the day is not good (missing, failed, half-written)."""
        ...

    def read_json(self, key: PartitionKey, name: str, *, quarantine: bool = False) -> dict[str, Any] | None:
        """A JSON file of the day's folder (``_validation.json``, ``_stats.json``, ``_FAILED``...), or None."""
        ...

    def read_table(self, key: PartitionKey) -> pa.Table:
        """The day's rows; only a good day can be read (``LookupError`` otherwise)."""
        ...

    def partition_uri(self, key: PartitionKey) -> str:
        """The URI of the day's features folder."""
        ...


def column_statistics(table: pa.Table) -> dict[str, Any]:
    """Row count and, per column, type, null fraction, and min/max/mean where they are defined."""
    rows = table.num_rows
    columns: dict[str, Any] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        stats: dict[str, Any] = {
            "type": str(column.type),
            "null_fraction": (column.null_count / rows) if rows else 0.0,
        }
        kind = column.type
        orderable = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind)
        if rows and orderable:
            bounds = pc.min_max(column).as_py()
            stats["min"], stats["max"] = _plain(bounds["min"]), _plain(bounds["max"])
        if rows and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            stats["mean"] = _plain(pc.mean(column).as_py())
        columns[name] = stats
    return {"rows": rows, "columns": columns}


def table_schema(table: pa.Table) -> list[dict[str, str]]:
    """The table's columns as ``[{name, type}]`` (Arrow type names)."""
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
