"""Batch scoring of one day: stream the feature partition through a version, write predictions, count drift.

Memory stays flat in the partition's size: rows flow in record batches of ``batch_rows`` from the
Parquet reader through ``predict_proba`` into a streaming Parquet writer, and drift is counted in
reference buckets (:class:`pfactory.features.drift.DriftAccumulator`) on a helper thread while the
model predicts, and a batch is written on another while the next is read. The day's file is written
aside and moved into place, so readers see the old day or the new one, and a rerun replaces the day.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pyarrow import fs as pa_fs

from pfactory.features.drift import DriftAccumulator
from pfactory.features.filesystems import resolve, root_uri
from pfactory.features.layout import DATA_FILE, partition_path
from pfactory.features.reader import FeatureReader
from pfactory.registry.loading import LoadedModel
from pfactory.scorer.labels import DayLabels, day_labels, entity_columns

PREDICTIONS_FILE = "part-0.parquet"


class ScoringInputError(LookupError):
    """The day cannot be scored as asked (partition not validated, columns missing); the message says why."""


@dataclass(frozen=True)
class Store:
    """The store root holding ``features/`` and ``predictions/`` (local folder, ``file://`` or ``s3://``)."""

    root: str
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class ScoredDay:
    """What one run wrote: rows, the day's predictions folder, and the drift report (None without reference)."""

    rows: int
    predictions_uri: str
    drift: dict[str, Any] | None
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent per stage: score (the model), write (predictions), drift (counting and the report).
    The stages overlap (each batch's drift and write run on helper threads while the next is scored),
    so they add up to more than the day's wall time."""


def predictions_path(model_name: str, version: int, ds: date) -> str:
    """``predictions/model=<name>/version=<n>/ds=<date>``, relative to the store root."""
    return f"predictions/model={model_name}/version={version}/ds={ds.isoformat()}"


def drift_threshold(config: dict[str, Any]) -> float:
    """``spec.scoring.drift.psi_threshold`` of a stored model config (0.2 when it has no scoring section)."""
    scoring = config.get("spec", {}).get("scoring") or {}
    return float((scoring.get("drift") or {}).get("psi_threshold", 0.2))


def scores_of(estimator: Any, frame: Any, task: str) -> NDArray[np.float64]:
    """One score per row: the positive-class probability (binary), the top probability (multiclass), else predict."""
    if task == "regression" or not hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict(frame), dtype=np.float64)
    proba = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
    if task == "multiclass_classification":  # the trainer's reference records the top probability too
        return np.asarray(proba.max(axis=1), dtype=np.float64)
    classes = np.asarray(getattr(estimator, "classes_", []))
    positive = int(np.flatnonzero(classes == 1)[0]) if (classes == 1).any() else proba.shape[1] - 1
    return np.asarray(proba[:, positive], dtype=np.float64)


def score_day(
    loaded: LoadedModel,
    ds: date,
    store: Store,
    *,
    batch_rows: int,
    on_batch: Callable[[int], None] | None = None,
) -> ScoredDay:
    """Score one day's validated feature partition with a loaded version.

    Args:
        loaded: the version (its config names the entity and labels; its signature the inputs).
        ds: the day.
        store: where the features are and the predictions go.
        batch_rows: rows per record batch.
        on_batch: called with the rows done so far after each batch (from this thread).

    Returns:
        The rows written, the predictions folder URI, and the drift report.

    Raises:
        ScoringInputError: the day is not a validated partition, or lacks an input or entity column.
        ValueError: the version records no input signature or entity.
    """
    record = loaded.record
    config = record.config
    feature_set = record.feature_set
    features = loaded.feature_names
    if not features:
        raise ValueError(
            f"{record.label} records no input signature (no reference.json): the scorer cannot tell its "
            "input columns; retrain it with the current trainer"
        )
    entity = entity_columns(config)
    reader = FeatureReader(store.root, endpoint_url=store.endpoint_url, region=store.region)
    status = reader.status(feature_set.name, feature_set.version, ds)
    if status != "good":
        raise ScoringInputError(
            f"the feature partition {reader.partition_uri(feature_set.name, feature_set.version, ds)} is "
            f"{'a failed validation' if status == 'failed' else 'missing'} (no _SUCCESS marker), so "
            f"{record.model_name} cannot be scored for {ds}; materialise that day first: "
            f"pfactory submit <{feature_set.name} feature set config> --start-ds {ds} --end-ds {ds}, "
            "then score again"
        )
    source_path = f"{reader.base}/{partition_path(feature_set.name, feature_set.version, ds)}/{DATA_FILE}"
    with reader.fs.open_input_file(source_path) as handle:
        # pre_buffer would read the whole file ahead and hold it: memory would grow with the partition
        source = pq.ParquetFile(handle, pre_buffer=False)
        present = set(source.schema_arrow.names)
        lacking = [c for c in dict.fromkeys([*entity, *features]) if c not in present]
        if lacking:
            raise ScoringInputError(
                f"{source_path} lacks column(s) {lacking} that {record.label} needs (inputs and "
                f"spec.labels.entity); it has {sorted(present)}: was the feature set changed without a new version?"
            )
        key_types = {c: source.schema_arrow.field(c).type for c in entity}
        labels, label_type = day_labels(
            config, ds, key_types, endpoint_url=store.endpoint_url, region=store.region
        )
        return _stream(loaded, ds, store, source, entity, labels, label_type, batch_rows, on_batch)


def _stream(
    loaded: LoadedModel,
    ds: date,
    store: Store,
    source: pq.ParquetFile,
    entity: list[str],
    labels: DayLabels | None,
    label_type: pa.DataType,
    batch_rows: int,
    on_batch: Callable[[int], None] | None,
) -> ScoredDay:
    record, features = loaded.record, loaded.feature_names
    task = str(record.config.get("spec", {}).get("task", "binary_classification"))
    accumulator = DriftAccumulator(loaded.reference) if loaded.reference is not None else None
    schema = pa.schema(
        [
            *(source.schema_arrow.field(c) for c in entity),
            pa.field("score", pa.float64()),
            pa.field("label", label_type),
            pa.field("version", pa.int64()),
            pa.field("ds", pa.date32()),
        ]
    )
    # the columns every row shares, built once for a full batch and sliced (no copy) to each batch
    longest = min(batch_rows, source.metadata.num_rows)
    constant = [
        pa.nulls(longest, label_type),
        pa.array(np.full(longest, record.version, dtype=np.int64)),
        pa.repeat(pa.scalar(ds, pa.date32()), longest),
    ]
    out_fs, base = resolve(store.root, endpoint_url=store.endpoint_url, region=store.region)
    relative = predictions_path(record.model_name, record.version, ds)
    folder = f"{base}/{relative}"
    if isinstance(out_fs, pa_fs.LocalFileSystem):
        out_fs.create_dir(folder, recursive=True)
    # a leading dot keeps the half-written file out of dataset readers of the folder
    aside = f"{folder}/.{PREDICTIONS_FILE}.{uuid.uuid4().hex}.tmp"
    rows = 0
    # each stage's time is added up by the one thread that runs it
    seconds = {"score": 0.0, "write": 0.0, "drift": 0.0}

    def write(keys: pa.RecordBatch, scores: NDArray[np.float64]) -> int:
        """Write one batch's predictions (on the writing thread, so in batch order)."""
        started = time.perf_counter()
        n = int(keys.num_rows)
        label, version, day = (column.slice(0, n) for column in constant)
        if labels is not None:
            label = labels.of(keys)
        writer.write_batch(
            pa.record_batch([*keys.columns, pa.array(scores), label, version, day], schema=schema)
        )
        seconds["write"] += time.perf_counter() - started
        return n

    def count(inputs: pa.RecordBatch) -> None:
        """Add one batch's inputs to the drift buckets (on the counting thread)."""
        started = time.perf_counter()
        if accumulator is not None:
            accumulator.add(inputs)
        seconds["drift"] += time.perf_counter() - started

    try:
        # dictionary pages only for the repeated columns: keys and scores are (nearly) all distinct, and
        # trying a dictionary on them, again in every row group, was most of the write's time
        repeated = ["label", "version", "ds"]
        # Two helper threads (Arrow, numpy and the estimators release the GIL): one counts a batch's
        # drift while this thread predicts it, the other writes a batch's predictions while this one
        # reads the next. Only the batch being scored is held in full (the write keeps its keys and
        # scores), so memory stays that of one batch whatever the day's size.
        with (
            out_fs.open_output_stream(aside) as sink,
            pq.ParquetWriter(sink, schema, use_dictionary=repeated) as writer,
            ThreadPoolExecutor(1, thread_name_prefix="pfactory-scorer-drift") as counting,
            ThreadPoolExecutor(1, thread_name_prefix="pfactory-scorer-write") as writing,
        ):
            written: Future[int] | None = None
            columns = list(dict.fromkeys([*entity, *features]))
            for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
                inputs = batch.select(features)
                counted = counting.submit(count, inputs) if accumulator is not None else None
                started = time.perf_counter()
                scores = scores_of(loaded.estimator, inputs.to_pandas(), task)
                seconds["score"] += time.perf_counter() - started
                if counted is not None and accumulator is not None:
                    counted.result()
                    started = time.perf_counter()
                    accumulator.add_scores(scores)
                    seconds["drift"] += time.perf_counter() - started
                if written is not None:
                    rows += written.result()
                    if on_batch is not None:
                        on_batch(rows)
                written = writing.submit(write, batch.select(entity), scores)
                del batch, inputs  # let the next read reuse this batch's memory
            if written is not None:
                rows += written.result()
                if on_batch is not None:
                    on_batch(rows)
            closing = time.perf_counter()  # closing the writer writes the last row group and the footer
        out_fs.move(aside, f"{folder}/{PREDICTIONS_FILE}")
        seconds["write"] += time.perf_counter() - closing
    except BaseException:
        if out_fs.get_file_info(aside).type != pa_fs.FileType.NotFound:
            out_fs.delete_file(aside)
        raise
    started = time.perf_counter()
    drift = accumulator.report(drift_threshold(record.config)) if accumulator is not None and rows else None
    if accumulator is None:
        del seconds["drift"]  # no reference: drift was not measured
    else:
        seconds["drift"] += time.perf_counter() - started
    return ScoredDay(rows, f"{root_uri(store.root)}/{relative}", drift, seconds)
