"""Where feature partitions live under a store root, and the files a day's folder holds.

The materialiser writes this layout; readers (trainer, scorer, gateway) depend only on it::

    features/feature_set=<name>/version=<v>/ds=<date>/part-0.parquet
                                                      _validation.json   GX report
                                                      _stats.json        rows; per column statistics
                                                      _SUCCESS           written last (JSON marker)
    features/feature_set=<name>/version=<v>/ds=<date>/_FAILED           instead, when validation failed
    quarantine/feature_set=<name>/version=<v>/ds=<date>/...              the rejected day's files

Readers trust a day only when ``_SUCCESS`` is there.
"""

from __future__ import annotations

from datetime import date

DATA_FILE = "part-0.parquet"
GOOD_MARKER = "_SUCCESS"
FAILED_MARKER = "_FAILED"
QUARANTINE_MARKER = "_QUARANTINED"
VALIDATION_FILE = "_validation.json"
STATS_FILE = "_stats.json"

DS_PREFIX = "ds="


def version_path(feature_set: str, version: str | int) -> str:
    """The folder holding every day of one feature-set version, relative to the store root."""
    return f"features/feature_set={feature_set}/version={version}"


def partition_path(feature_set: str, version: str | int, ds: date) -> str:
    """A day's folder relative to the store root."""
    return f"{version_path(feature_set, version)}/{DS_PREFIX}{ds.isoformat()}"


def quarantine_path(feature_set: str, version: str | int, ds: date) -> str:
    """Where a rejected day's files go, relative to the store root."""
    return f"quarantine/feature_set={feature_set}/version={version}/{DS_PREFIX}{ds.isoformat()}"


def ds_of(folder_name: str) -> date | None:
    """The date of a ``ds=YYYY-MM-DD`` folder name, or None for anything else."""
    if not folder_name.startswith(DS_PREFIX):
        return None
    try:
        return date.fromisoformat(folder_name.removeprefix(DS_PREFIX))
    except ValueError:
        return None
