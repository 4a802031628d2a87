"""Feature partitions: layout, markers and readers shared by the services that read features."""

from pfactory.features.filesystems import resolve, root_uri, s3_filesystem
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
from pfactory.features.markers import query_hashes
from pfactory.features.reader import DayStatus, FeatureReader, GoodPartition, Status

__all__ = [
    "DATA_FILE",
    "FAILED_MARKER",
    "GOOD_MARKER",
    "QUARANTINE_MARKER",
    "STATS_FILE",
    "VALIDATION_FILE",
    "DayStatus",
    "FeatureReader",
    "GoodPartition",
    "Status",
    "partition_path",
    "quarantine_path",
    "query_hashes",
    "resolve",
    "root_uri",
    "s3_filesystem",
]
