"""The training set of one Model spec: labels joined point-in-time with validated feature partitions.

Each label ``(entity, label date)`` takes its entity's row from the latest good partition with
``label date - lookback_days <= ds <= label date``; a partition after the label date is never used,
so the model never sees features computed after the outcome's reference date. Labels without such
a row are dropped and counted. The split is by time by default (the latest label dates are the test
set, never cutting one date in two), or a seeded random one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
from pyarrow import fs as pa_fs

from pfactory.contracts.configs.featureset import SourceFormat
from pfactory.contracts.configs.metrics import Task
from pfactory.contracts.configs.model import Labels, ModelSpec, Split, SplitStrategy
from pfactory.features.filesystems import resolve
from pfactory.features.layout import DATA_FILE, partition_path
from pfactory.features.markers import query_hashes
from pfactory.features.reader import DS_COLUMN, FeatureReader, GoodPartition

log = logging.getLogger(__name__)

_DATE = "__pf_label_date"
_LABEL = "__pf_label"


class TrainingDataError(ValueError):
    """The training set cannot be built; the message says what is missing and how to fix it."""


@dataclass
class TrainingSet:
    """Features and targets split for fitting and holdout evaluation, with the lineage of the data."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray[Any, Any]
    y_test: np.ndarray[Any, Any]
    test_dates: np.ndarray[Any, Any]
    """Label date (``datetime64[D]``) of each test row, aligned with ``X_test``."""
    feature_columns: list[str]
    lineage: dict[str, Any]
    """The registry's ``Lineage`` fields: feature_set_version, start_ds, end_ds, partitions, ...."""


def build_training_set(
    spec: ModelSpec,
    reader: FeatureReader,
    *,
    labels_endpoint_url: str | None = None,
    labels_region: str | None = None,
) -> TrainingSet:
    """Join the spec's labels with its feature set as of each label date, then split.

    Args:
        spec: the validated Model spec (feature set, labels, task, training window, lookback, split).
        reader: reads the feature store the materialiser wrote.
        labels_endpoint_url: S3 endpoint override for an ``s3://`` labels path.
        labels_region: S3 region of the labels bucket.

    Returns:
        The training set; ``X_*`` hold every feature column (entity, ``ds``, the feature set's
        timestamp column, label and date dropped).

    Raises:
        TrainingDataError: labels or partitions missing, no label matched, or a split that cannot
            train or test (the message says which setting to change).
    """
    name, version = spec.feature_set.name, str(spec.feature_set.version)
    window, lookback = spec.training.window, spec.training.lookback_days
    first = window.start - timedelta(days=lookback)
    labels, null_rows = _load_labels(
        spec.labels, window.start, window.end, labels_endpoint_url, labels_region
    )
    good = reader.good_days(name, version, first, window.end)
    if not good:
        raise TrainingDataError(
            f"no validated partitions of {name} v{version} between {first} and {window.end}"
            f"{_census(reader, name, version, first, window.end)}{_lookback_note(spec)}; materialise them "
            f"first: pfactory submit <{name} feature set YAML> --start-ds {first} --end-ds {window.end}"
        )
    features = _read_partitions(reader, name, version, good)
    entity = list(spec.labels.entity)
    labels = _align_entity(labels, features, entity, spec.labels, name, version)
    # the event-time column is join metadata (one value per day), never a model input
    join_only = {*entity, DS_COLUMN, spec.labels.date_column, *_timestamp_columns(good, name, version)}
    columns = [c for c in features.column_names if c not in join_only]
    matched, dates = _as_of_join(labels, features, entity, lookback, columns)
    if matched.empty:
        raise TrainingDataError(
            f"none of the {labels.num_rows} labels from {spec.labels.path} matched a feature row: no row "
            f"of {name} v{version} for the label's {', '.join(entity)} on its label date"
            f"{f' or up to {lookback} days before' if lookback else ''} (read {len(good)} validated "
            f"partitions from {good[0].ds} to {good[-1].ds}{_census(reader, name, version, first, window.end)}); "
            f"check that spec.labels.entity values match the feature set's entity, or raise "
            f"spec.training.lookback_days if features are materialised on other days than labels"
        )
    unmatched = labels.num_rows - len(matched)
    if unmatched:
        log.info("%d of %d labels have no features within the lookback; dropped", unmatched, labels.num_rows)
    y = _target(spec, matched[_LABEL])
    train, test = _split(dates, spec.training.split)
    X = matched[columns]
    if spec.task != Task.REGRESSION:
        _require_classes(y[train], dates[train], spec.labels.label_column)
    counts = {"labels": labels.num_rows, "matched": len(matched), "unmatched_labels": unmatched}
    counts |= {"train": int(train.sum()), "test": int(test.sum())}
    if spec.task == Task.BINARY_CLASSIFICATION:
        counts |= {"positive_train": int(y[train].sum()), "positive_test": int(y[test].sum())}
    if null_rows:
        counts["null_labels"] = null_rows
    return TrainingSet(
        X_train=X[train].reset_index(drop=True),
        X_test=X[test].reset_index(drop=True),
        y_train=y[train],
        y_test=y[test],
        test_dates=dates[test],
        feature_columns=columns,
        lineage={
            "feature_set_version": version,
            "start_ds": good[0].ds.isoformat(),
            "end_ds": good[-1].ds.isoformat(),
            "partitions": [g.uri for g in good],
            "label_source": spec.labels.path,
            "row_counts": counts,
            "query_hashes": query_hashes(good),
        },
    )


# ---------------------------------------------------------------------- features


def _read_partitions(reader: FeatureReader, name: str, version: str, good: list[GoodPartition]) -> pa.Table:
    """The good days' rows in date order with their ``ds``, as ``FeatureReader.read`` returns them.

    Read straight from each day's file: ``good_days`` has just read the markers (``read`` would read
    them again), and a plain Parquet file read costs a third of ``pq.read_table``'s dataset set-up,
    which dominates at small sizes. Remote files are fetched concurrently, as the reader does.
    """
    local = isinstance(reader.fs, pa_fs.LocalFileSystem)

    def read_day(day: GoodPartition) -> pa.Table:
        path = f"{reader.base}/{partition_path(name, version, day.ds)}/{DATA_FILE}"
        try:
            with reader.fs.open_input_file(path) as source:
                table = pq.ParquetFile(source, pre_buffer=not local).read(use_threads=not local)
        except (OSError, pa.ArrowException) as error:
            raise TrainingDataError(
                f"{day.uri}/{DATA_FILE} of {name} v{version} could not be read ({error}); rematerialise "
                f"the day: pfactory submit <{name} feature set YAML> --start-ds {day.ds} --end-ds {day.ds}"
            ) from error
        if DS_COLUMN in table.column_names:  # the folder's date is the truth
            table = table.drop_columns([DS_COLUMN])
        return table.append_column(DS_COLUMN, pa.repeat(pa.scalar(day.ds, pa.date32()), table.num_rows))

    if local or len(good) == 1:
        tables = [read_day(day) for day in good]
    else:  # each remote read is a round trip
        with ThreadPoolExecutor(max_workers=min(8, len(good))) as pool:
            tables = list(pool.map(read_day, good))
    return pa.concat_tables(tables, promote_options="permissive")


def _timestamp_columns(good: list[GoodPartition], name: str, version: str) -> list[str]:
    """The event-time column the partitions' markers name (none for markers that predate it).

    Raises:
        TrainingDataError: two partitions name different columns (one feature-set version writes
            one name, so the store was written by mixed writers or edited).
    """
    first: dict[str, GoodPartition] = {}
    for partition in good:
        if partition.timestamp is not None:
            first.setdefault(partition.timestamp, partition)
    if len(first) > 1:
        named = "; ".join(f"'{column}' from {p.ds} ({p.uri})" for column, p in first.items())
        raise TrainingDataError(
            f"the validated partitions of {name} v{version} disagree on the feature set's timestamp "
            f"column: {named}; one version always writes one name, so the store was written by different "
            f"feature set configs under the same version: rematerialise the range with the current config "
            f"(pfactory submit <{name} feature set YAML> --start-ds {good[0].ds} --end-ds {good[-1].ds}) "
            "or give the changed config a new spec.version"
        )
    return list(first)


# ---------------------------------------------------------------------- labels


def _load_labels(
    labels: Labels, start: date, end: date, endpoint_url: str | None, region: str | None
) -> tuple[pa.Table, int]:
    """The label rows dated within the window (entity, date, label), and how many had nulls."""
    filesystem, path = resolve(labels.path, endpoint_url=endpoint_url, region=region)
    file_format = pa_ds.CsvFileFormat() if labels.format == SourceFormat.CSV else "parquet"
    if filesystem.get_file_info(path).type == pa_fs.FileType.NotFound:
        raise TrainingDataError(
            f"the label table {path} (spec.labels.path: {labels.path}) does not exist; point spec.labels.path "
            "at your labels (a relative path is read from the folder the trainer runs in), or, for the "
            "example, generate its data first: python examples/credit/generate_data.py --out data/raw"
        )
    try:
        dataset = pa_ds.dataset(path, filesystem=filesystem, format=file_format, partitioning="hive")
        files = dataset.files
    except (OSError, pa.ArrowException) as error:
        raise TrainingDataError(
            f"labels could not be read from {labels.path} (spec.labels.path, format {labels.format}): {error}"
        ) from error
    if not files:
        raise TrainingDataError(f"no {labels.format} label files under {labels.path} (spec.labels.path)")
    fields = {c: "spec.labels.entity" for c in labels.entity}
    fields |= {labels.date_column: "spec.labels.date_column", labels.label_column: "spec.labels.label_column"}
    present = dataset.schema.names
    lacking = [f"'{c}' ({field})" for c, field in fields.items() if c not in present]
    if lacking:
        raise TrainingDataError(
            f"labels file {files[0]} has no column {', '.join(lacking)}; columns present: {', '.join(present)}"
        )
    try:
        table = dataset.to_table(columns=list(fields))
    except (OSError, pa.ArrowException) as error:
        raise TrainingDataError(f"labels under {labels.path} could not be read: {error}") from error
    table = table.set_column(
        table.column_names.index(labels.date_column), labels.date_column, _dates(table, labels)
    )
    dates = table.column(labels.date_column)
    in_window = pc.and_(
        pc.greater_equal(dates, pa.scalar(start, pa.date32())),
        pc.less_equal(dates, pa.scalar(end, pa.date32())),
    )
    windowed = table.filter(in_window)  # a null date is never in the window
    selected = windowed.drop_null()
    nulls = windowed.num_rows - selected.num_rows + dates.null_count
    if selected.num_rows == 0:
        bounds = pc.min_max(dates).as_py()
        raise TrainingDataError(
            f"no labels in {labels.path} dated between {start} and {end} (spec.training.window); its "
            f"{table.num_rows} rows are dated from {bounds['min']} to {bounds['max']} in "
            f"'{labels.date_column}'" + (f" ({nulls} with a null entity, date or label)" if nulls else "")
        )
    return selected.rename_columns([*labels.entity, _DATE, _LABEL]), nulls


def _dates(table: pa.Table, labels: Labels) -> pa.ChunkedArray:
    column = table.column(labels.date_column)
    kind = column.type
    try:
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            return column.cast(pa.date32())
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.strptime(column, format="%Y-%m-%d", unit="s").cast(pa.date32())
    except pa.ArrowInvalid as error:
        raise TrainingDataError(
            f"label dates in '{labels.date_column}' (spec.labels.date_column) of {labels.path} are not "
            f"YYYY-MM-DD dates: {error}"
        ) from error
    raise TrainingDataError(
        f"'{labels.date_column}' (spec.labels.date_column) of {labels.path} holds {kind}, not dates; "
        "point spec.labels.date_column at a date, timestamp or YYYY-MM-DD string column"
    )


# ---------------------------------------------------------------------- join, target, split


def _align_entity(
    labels: pa.Table, features: pa.Table, entity: list[str], spec: Labels, name: str, version: str
) -> pa.Table:
    """Cast the labels' entity columns to the features' types (e.g. CSV int ids vs string ids)."""
    lacking = [c for c in entity if c not in features.column_names]
    if lacking:
        raise TrainingDataError(
            f"{name} v{version} has no entity column {', '.join(map(repr, lacking))} (spec.labels.entity); "
            f"its columns: {', '.join(features.column_names)}"
        )
    if spec.label_column in features.column_names:
        raise TrainingDataError(
            f"{name} v{version} has a column '{spec.label_column}' named like the label "
            "(spec.labels.label_column): training on it would leak the target; rename one of them"
        )
    for column in entity:
        wanted = features.schema.field(column).type
        index = labels.column_names.index(column)
        if labels.schema.field(column).type != wanted:
            try:
                labels = labels.set_column(index, column, labels.column(column).cast(wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise TrainingDataError(
                    f"entity '{column}' is {labels.schema.field(column).type} in the labels but {wanted} in "
                    f"{name} v{version}, and cannot be converted: {error}"
                ) from error
    return labels


def _as_of_join(
    labels: pa.Table, features: pa.Table, entity: list[str], lookback: int, columns: list[str]
) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """Each label with its entity's latest feature row in ``[date - lookback, date]``; unmatched dropped.

    Returns the matched rows (the label as ``_LABEL`` and the feature ``columns``) ordered by label
    date (labels of one date keep their order), and their label dates as ``datetime64[D]``. Where an
    entity has several rows on the chosen day, the last one read is taken (as ``pd.merge_asof`` does).
    """
    label_keys, feature_keys = _entity_codes(labels, features, entity)
    label_days = _days(labels.column(_DATE))
    feature_days = _days(features.column(DS_COLUMN))
    usable = np.flatnonzero(feature_keys >= 0)  # a feature row with a null entity never matches
    found = np.zeros(labels.num_rows, dtype=bool)
    rows = np.zeros(labels.num_rows, dtype=np.int64)
    if len(usable):
        # one sortable key per row, the entity first and then the day: the row for a label is the last
        # feature row at or before the label's key, if it has the label's entity and is recent enough
        lowest = min(int(label_days.min()), int(feature_days.min()))
        span = max(int(label_days.max()), int(feature_days.max())) - lowest + 1
        keyed = feature_keys[usable] * span + (feature_days[usable] - lowest)
        order = np.argsort(keyed, kind="stable")
        at = np.searchsorted(keyed[order], label_keys * span + (label_days - lowest), side="right") - 1
        rows = usable[order[np.maximum(at, 0)]]
        found = (at >= 0) & (feature_keys[rows] == label_keys) & (label_days - feature_days[rows] <= lookback)
    by_date = np.argsort(label_days, kind="stable")
    kept = by_date[found[by_date]]
    table = features.select(columns).take(rows[kept]).append_column(_LABEL, labels.column(_LABEL).take(kept))
    matched = table.to_pandas(date_as_object=False)
    return matched, label_days[kept].astype("datetime64[D]")


def _days(column: pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """A date32 column as days since the epoch (int64)."""
    return np.asarray(column.cast(pa.int32()).to_numpy(), dtype=np.int64)


def _entity_codes(
    labels: pa.Table, features: pa.Table, entity: list[str]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """One integer per row and entity (equal entities, equal codes), for labels and features; -1 for null."""
    n = labels.num_rows
    codes: np.ndarray[Any, Any] | None = None
    for column in entity:
        both = pa.concat_arrays([*labels.column(column).chunks, *features.column(column).chunks])
        encoded = both.dictionary_encode()
        indices = np.asarray(encoded.indices.fill_null(-1).to_numpy(), dtype=np.int64)
        if codes is None:
            codes = indices
        else:  # combine, then number the combinations again so the codes stay small
            combined = np.where((codes < 0) | (indices < 0), -1, codes * len(encoded.dictionary) + indices)
            _, renumbered = np.unique(combined, return_inverse=True)
            codes = np.where(combined < 0, -1, renumbered.reshape(-1))
    assert codes is not None  # an entity has at least one column
    return codes[:n], codes[n:]


def _target(spec: ModelSpec, values: pd.Series) -> np.ndarray[Any, Any]:
    column, positive = spec.labels.label_column, spec.labels.positive_class
    if spec.task == Task.REGRESSION:
        try:
            return np.asarray(pd.to_numeric(values), dtype=float)
        except (TypeError, ValueError) as error:
            raise TrainingDataError(
                f"regression needs numeric labels; '{column}' holds e.g. {values.iloc[0]!r}: {error}"
            ) from error
    if spec.task == Task.MULTICLASS_CLASSIFICATION:
        return np.asarray(values.to_numpy())
    classes = sorted(pd.unique(values).tolist(), key=str)
    if len(classes) > 2:
        raise TrainingDataError(
            f"binary_classification needs two label values; '{column}' holds {len(classes)}: "
            f"{classes[:10]}; set task: multiclass_classification or map the labels to two values"
        )
    if positive is None:
        if not set(classes) <= {0, 1}:
            raise TrainingDataError(
                f"'{column}' holds {classes}, not 0/1 or false/true: set spec.labels.positive_class "
                "to the value that counts as positive"
            )
        return np.asarray(values.astype(int).to_numpy(), dtype=np.int64)
    if positive in classes:
        return np.asarray((values == positive).to_numpy(), dtype=np.int64)
    if str(positive) in {str(c) for c in classes}:  # e.g. positive_class "1" with integer labels
        return np.asarray((values.astype(str) == str(positive)).to_numpy(), dtype=np.int64)
    raise TrainingDataError(
        f"spec.labels.positive_class {positive!r} is not among the values of '{column}': {classes}"
    )


def _split(dates: np.ndarray[Any, Any], split: Split) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Boolean train and test masks; ``dates`` are sorted ascending."""
    n = len(dates)
    if split.strategy == SplitStrategy.RANDOM:
        if n < 2:
            raise TrainingDataError(f"a random split needs at least 2 matched labels, found {n}")
        n_test = min(max(round(n * split.test_fraction), 1), n - 1)
        test = np.zeros(n, dtype=bool)
        test[np.random.default_rng(split.seed).permutation(n)[:n_test]] = True
        return ~test, test
    days, counts = np.unique(dates, return_counts=True)
    if len(days) < 2:
        raise TrainingDataError(
            f"a time split needs matched labels on at least two dates; all {n} fall on {days[0] if n else '-'}: "
            "widen spec.training.window or set spec.training.split.strategy: random"
        )
    test_rows = n - np.cumsum(counts)[:-1]  # test size when the test set starts at days[1:]
    cut = days[1 + int(np.argmin(np.abs(test_rows - split.test_fraction * n)))]
    test = dates >= cut
    return ~test, test


def _require_classes(y_train: np.ndarray[Any, Any], dates: np.ndarray[Any, Any], column: str) -> None:
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise TrainingDataError(
            f"the training split holds one class only ({column} = {classes.tolist()}, {len(y_train)} rows "
            f"dated {dates.min()} to {dates.max()}); a classifier needs both: widen spec.training.window "
            "or change spec.training.split"
        )


# ---------------------------------------------------------------------- advice


def _census(reader: FeatureReader, name: str, version: str, start: date, end: date) -> str:
    statuses = [s.status for s in reader.statuses(name, version, start, end)]
    failed, missing = statuses.count("failed"), statuses.count("missing")
    parts = [f"{failed} days failed validation"] if failed else []
    parts += [f"{missing} missing"] if missing else []
    return f" ({', '.join(parts)})" if parts else ""


def _lookback_note(spec: ModelSpec) -> str:
    window, lookback = spec.training.window, spec.training.lookback_days
    if not lookback:
        return ""
    return f" (spec.training.window {window.start}..{window.end} and lookback_days {lookback} before it)"
