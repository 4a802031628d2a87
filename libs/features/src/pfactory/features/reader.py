"""``FeatureReader``: which days of a feature-set version are good, and their rows as one Arrow table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from pfactory.features.filesystems import resolve, root_uri
from pfactory.features.layout import (
    DATA_FILE,
    FAILED_MARKER,
    GOOD_MARKER,
    ds_of,
    partition_path,
    version_path,
)

Status = Literal["good", "failed", "missing"]
"""good: ``_SUCCESS`` is there; failed: ``_FAILED`` is; missing: neither (never run, or half-written)."""

DS_COLUMN = "ds"

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class GoodPartition:
    """One validated day: its date, folder URI and the parsed ``_SUCCESS`` marker."""

    ds: date
    uri: str
    marker: dict[str, Any]
    entity: tuple[str, ...] | None = None
    """The feature set's entity key column(s), as the marker records them; None for an older marker."""
    timestamp: str | None = None
    """The feature set's event-time column (join metadata, not a feature); None for an older marker."""


@dataclass(frozen=True)
class DayStatus:
    """One day's state; ``marker`` is the parsed ``_SUCCESS`` of a good day, else None."""

    ds: date
    status: Status
    marker: dict[str, Any] | None = None


class FeatureReader:
    """Reads the materialiser's partitions under a store root (local folder, ``file://`` or ``s3://``).

    A day is trusted only when its ``_SUCCESS`` marker exists: a day being rewritten, quarantined or
    half-written is never read.
    """

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_workers: int = 8,
    ) -> None:
        """Point the reader at a store root.

        Args:
            root: the store root, e.g. ``/var/pf/store``, ``file:///var/pf/store`` or ``s3://bucket/pf``.
            endpoint_url: S3 endpoint override (moto_server, MinIO).
            region: S3 region.
            max_workers: concurrent object reads on S3, where each read is a round trip.
        """
        self.root = root_uri(root)
        self.fs, self.base = resolve(root, endpoint_url=endpoint_url, region=region)
        self._parallel = max_workers if not isinstance(self.fs, fs.LocalFileSystem) else 1

    def partition_uri(self, feature_set: str, version: str | int, ds: date) -> str:
        """The URI of a day's folder (whether or not it exists)."""
        return f"{self.root}/{partition_path(feature_set, version, ds)}"

    def status(self, feature_set: str, version: str | int, ds: date) -> Status:
        """Whether one day is good, failed validation, or missing."""
        return self._day(feature_set, version, ds).status

    def statuses(self, feature_set: str, version: str | int, start: date, end: date) -> list[DayStatus]:
        """Every day from ``start`` to ``end`` (inclusive) with its status, in date order.

        Args:
            feature_set: the feature set's ``metadata.name``.
            version: its ``spec.version``.
            start: first day.
            end: last day (inclusive).

        Returns:
            One entry per calendar day; days with no folder at all are ``missing``.
        """
        # one listing of the version folder tells which days have a folder; only those are opened
        present = self._day_folders(feature_set, version, start, end)
        found = {d.ds: d for d in self._map(lambda ds: self._day(feature_set, version, ds), present)}
        days = (start + timedelta(days=n) for n in range((end - start).days + 1))
        return [found.get(ds) or DayStatus(ds, "missing") for ds in days]

    def good_days(self, feature_set: str, version: str | int, start: date, end: date) -> list[GoodPartition]:
        """The validated days from ``start`` to ``end`` (inclusive), in date order.

        Args:
            feature_set: the feature set's ``metadata.name``.
            version: its ``spec.version``.
            start: first day.
            end: last day (inclusive).

        Returns:
            One ``GoodPartition`` per day whose ``_SUCCESS`` marker exists.
        """
        return [
            _good_partition(d.ds, self.partition_uri(feature_set, version, d.ds), d.marker)
            for d in self.statuses(feature_set, version, start, end)
            if d.marker is not None
        ]

    def read(
        self,
        feature_set: str,
        version: str | int,
        days: Iterable[date],
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The rows of the given good days as one table with a ``ds`` (date32) column added.

        Args:
            feature_set: the feature set's ``metadata.name``.
            version: its ``spec.version``.
            days: the days to read; each must be good.
            columns: feature columns to read (default: all); ``ds`` is always added.

        Returns:
            The days' ``part-0.parquet`` rows concatenated in date order (types widened where days
            differ, e.g. int32 and int64).

        Raises:
            LookupError: a requested day has no ``_SUCCESS`` marker (failed or missing).
            ValueError: a day lacks a requested column.
        """
        wanted = sorted(set(days))
        if not wanted:
            return pa.table({DS_COLUMN: pa.array([], pa.date32())})
        tables = self._map(lambda ds: self._read_day(feature_set, version, ds, columns), wanted)
        not_good = [
            f"{ds} ({status})" for ds, status in zip(wanted, tables, strict=True) if isinstance(status, str)
        ]
        if not_good:
            raise LookupError(
                f"{feature_set} v{version}: {len(not_good)} requested day(s) are not validated partitions "
                f"(no {GOOD_MARKER}): {', '.join(not_good[:10])}{' …' if len(not_good) > 10 else ''}; "
                "read only days that good_days() lists"
            )
        return pa.concat_tables([t for t in tables if isinstance(t, pa.Table)], promote_options="permissive")

    # ------------------------------------------------------------------ internals

    def _folder(self, feature_set: str, version: str | int, ds: date) -> str:
        return f"{self.base}/{partition_path(feature_set, version, ds)}"

    def _day_folders(self, feature_set: str, version: str | int, start: date, end: date) -> list[date]:
        selector = fs.FileSelector(f"{self.base}/{version_path(feature_set, version)}", allow_not_found=True)
        days = []
        for info in self.fs.get_file_info(selector):
            ds = ds_of(info.base_name)
            if ds is not None and start <= ds <= end and info.type == fs.FileType.Directory:
                days.append(ds)
        return sorted(days)

    def _day(self, feature_set: str, version: str | int, ds: date) -> DayStatus:
        folder = self._folder(feature_set, version, ds)
        marker = self._json(f"{folder}/{GOOD_MARKER}")
        if marker is not None:
            return DayStatus(ds, "good", marker)
        if self.fs.get_file_info(f"{folder}/{FAILED_MARKER}").type == fs.FileType.File:
            return DayStatus(ds, "failed")
        return DayStatus(ds, "missing")

    def _read_day(
        self, feature_set: str, version: str | int, ds: date, columns: Sequence[str] | None
    ) -> pa.Table | Status:
        day = self._day(feature_set, version, ds)
        if day.status != "good":
            return day.status
        path = f"{self._folder(feature_set, version, ds)}/{DATA_FILE}"
        wanted = None if columns is None else [c for c in columns if c != DS_COLUMN]
        try:
            table = pq.read_table(path, filesystem=self.fs, columns=wanted)
        except pa.ArrowInvalid as error:  # most likely a requested column the day lacks
            present = pq.read_schema(path, filesystem=self.fs).names
            lacking = [c for c in wanted or [] if c not in present]
            raise ValueError(
                f"{self.partition_uri(feature_set, version, ds)}/{DATA_FILE} "
                + (
                    f"has no column(s) {lacking}; it has {present}"
                    if lacking
                    else f"could not be read: {error}"
                )
            ) from error
        if DS_COLUMN in table.column_names:  # the folder's date is the truth
            table = table.drop_columns([DS_COLUMN])
        return table.append_column(DS_COLUMN, pa.repeat(pa.scalar(ds, pa.date32()), table.num_rows))

    def _json(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                data = json.loads(stream.read())
        except (FileNotFoundError, IsADirectoryError):
            return None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); rerun the day to rewrite it") from error
        return data if isinstance(data, dict) else {"value": data}

    def _map(self, function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        if self._parallel <= 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._parallel, len(items))) as pool:
            return list(pool.map(function, items))


def _good_partition(ds: date, uri: str, marker: dict[str, Any]) -> GoodPartition:
    """A good day with the join metadata its marker records (markers before it was recorded: None)."""
    entity, timestamp = marker.get("entity"), marker.get("timestamp")
    if entity is not None and not (
        isinstance(entity, list) and entity and all(isinstance(c, str) and c for c in entity)
    ):
        raise ValueError(
            f"{uri}/{GOOD_MARKER} records entity {entity!r}, not a list of column names; "
            "rerun the day to rewrite it"
        )
    if timestamp is not None and not (isinstance(timestamp, str) and timestamp):
        raise ValueError(
            f"{uri}/{GOOD_MARKER} records timestamp {timestamp!r}, not a column name; "
            "rerun the day to rewrite it"
        )
    return GoodPartition(ds, uri, marker, None if entity is None else tuple(entity), timestamp)
