"""Reading sources and reaching S3 through pyarrow: Spark here has no hadoop-aws, pyarrow does S3."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
from pyarrow import fs

from pfactory.materialiser.engine import EngineError, SourceTable


def s3_filesystem(endpoint_url: str | None = None, region: str | None = None) -> fs.S3FileSystem:
    """An S3 filesystem; ``endpoint_url`` (``http://127.0.0.1:5000``) points it at moto_server or MinIO."""
    options: dict[str, Any] = {}
    if endpoint_url:
        scheme, _, host = endpoint_url.rpartition("://")
        options.update(endpoint_override=host or endpoint_url, scheme=scheme or "https")
    if region:
        options["region"] = region
    return fs.S3FileSystem(**options)


def arrow_format(source: SourceTable, *, csv_header_default: bool) -> Any:
    """The pyarrow dataset format of a source, honouring its CSV ``header``/``sep`` options."""
    if source.format == "parquet":
        return "parquet"
    if source.format == "csv":
        options = {k.lower(): str(v) for k, v in source.options.items()}
        header = options.get("header", str(csv_header_default)).lower() == "true"
        delimiter = options.get("sep") or options.get("delimiter") or ","
        return pa_ds.CsvFileFormat(
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            read_options=pa_csv.ReadOptions(autogenerate_column_names=not header),
        )
    raise EngineError(f"source '{source.name}': format '{source.format}' cannot be read through pyarrow")


def read_s3_source(source: SourceTable, filesystem: fs.S3FileSystem, *, csv_header_default: bool) -> pa.Table:
    """Read a source under ``s3://`` whole (a partitioned one with Hive discovery of ``ds``).

    Raises:
        EngineError: nothing there, or unreadable.
    """
    path = source.location.removeprefix("s3://").rstrip("/")
    try:
        dataset = pa_ds.dataset(
            path,
            filesystem=filesystem,
            format=arrow_format(source, csv_header_default=csv_header_default),
            partitioning="hive" if source.partitioned else None,
        )
        return dataset.to_table()
    except (OSError, pa.ArrowException) as error:
        raise EngineError(
            f"source '{source.name}' could not be read from {source.location}: {error}"
        ) from error
