"""The known labels of one day, from the model config's label table, for the predictions' ``label`` column."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
from pyarrow import fs as pa_fs

from pfactory.features.filesystems import resolve

log = logging.getLogger("pfactory.scorer")


def entity_columns(config: dict[str, Any]) -> list[str]:
    """``spec.labels.entity`` of a stored model config, as a list (it may be written as one name)."""
    labels = config.get("spec", {}).get("labels") or {}
    entity = labels.get("entity")
    if isinstance(entity, str):
        return [entity]
    if isinstance(entity, list) and entity:
        return [str(column) for column in entity]
    raise ValueError(
        "the version's model config has no spec.labels.entity, so predictions cannot name their rows; "
        "retrain it from a config that declares the entity key column(s)"
    )


class DayLabels:
    """One day's labels, one per entity (the last written wins), looked up by key batch after batch.

    The key index is built once, so each batch costs a hash lookup of its own keys only (a join per
    batch would hash the whole label table again every time).
    """

    def __init__(self, table: pa.Table, entity: list[str]) -> None:
        """Index ``table`` (the entity columns, typed as the partition's, and ``label``) on its keys."""
        index = _key_index(table.select(entity))
        last = ~index.duplicated(keep="last")
        self._index = index[last]
        self._labels = table.column("label").filter(pa.array(last)).combine_chunks()

    def of(self, keys: pa.RecordBatch | pa.Table) -> pa.Array:
        """The label of each key row, in order (null where the day has none).

        Args:
            keys: the entity columns of a batch, in the order the labels were indexed on.
        """
        positions = self._index.get_indexer(_key_index(keys))
        return self._labels.take(pa.array(positions, mask=positions < 0))


def _key_index(keys: pa.RecordBatch | pa.Table) -> pd.Index:
    if keys.num_columns == 1:
        return pd.Index(keys.column(0).to_pandas())
    return pd.MultiIndex.from_frame(keys.to_pandas())


def day_labels(
    config: dict[str, Any],
    ds: date,
    key_types: dict[str, pa.DataType],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> tuple[DayLabels | None, pa.DataType]:
    """The labels dated ``ds``, one per entity, and the label type.

    Labels are optional on a scoring day (they usually arrive months later): a missing table or
    day gives ``(None, pa.null())`` and the predictions' ``label`` column stays null.

    Args:
        config: the version's model config (``spec.labels``: path, format, entity, date_column, label_column).
        ds: the scored day.
        key_types: the feature partition's entity column types (label keys are cast to them).
        endpoint_url: S3 endpoint override for an ``s3://`` label path.
        region: S3 region of the label bucket.
    """
    spec = config.get("spec", {}).get("labels") or {}
    path, date_column, label_column = spec.get("path"), spec.get("date_column"), spec.get("label_column")
    if not (path and date_column and label_column):
        return None, pa.null()
    entity = list(key_types)
    try:
        filesystem, base = resolve(str(path), endpoint_url=endpoint_url, region=region)
        if filesystem.get_file_info(base).type == pa_fs.FileType.NotFound:
            log.info("no label table at %s (spec.labels.path); label column left null", path)
            return None, pa.null()
        file_format = pa_ds.CsvFileFormat() if spec.get("format") == "csv" else "parquet"
        dataset = pa_ds.dataset(base, filesystem=filesystem, format=file_format, partitioning="hive")
        label_type = dataset.schema.field(label_column).type
        table = dataset.to_table(
            columns=[*entity, date_column, label_column], filter=_on_day(dataset, date_column, ds)
        )
        keys = [table.column(c).cast(key_types[c]) for c in entity]
    except (OSError, KeyError, pa.ArrowException) as error:
        log.warning(
            "labels for %s could not be read from %s (spec.labels): %s; label column left null",
            ds,
            path,
            error,
        )
        return None, pa.null()
    labels = DayLabels(pa.table([*keys, table.column(label_column)], names=[*entity, "label"]), entity)
    return labels, label_type


def _on_day(dataset: pa_ds.Dataset, column: str, ds: date) -> pc.Expression:
    kind = dataset.schema.field(column).type
    field = pc.field(column)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return field == ds.isoformat()
    if pa.types.is_timestamp(kind):
        return field.cast(pa.date32()) == pa.scalar(ds, pa.date32())
    return field == pa.scalar(ds, pa.date32())
