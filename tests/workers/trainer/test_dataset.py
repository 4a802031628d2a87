"""The training set: point-in-time join of labels with validated partitions, targets, splits, lineage."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
import pytest
import yaml
from pyarrow import fs

from pfactory.contracts.configs.model import ModelConfig, ModelSpec
from pfactory.features import FeatureReader
from pfactory.registry.model import Lineage
from pfactory.trainer.dataset import TrainingDataError, build_training_set
from tests.examples.conftest import EXAMPLES, GENERATOR
from tests.libs.features.partitions import PartitionWriter


def day(n: int) -> dt.date:
    """2024-03-<n>."""
    return dt.date(2024, 3, n)


TASKS = {
    "binary_classification": ("roc_auc", "sklearn.linear_model.LogisticRegression"),
    "multiclass_classification": ("accuracy", "sklearn.linear_model.LogisticRegression"),
    "regression": ("rmse", "sklearn.linear_model.Ridge"),
}


def model_spec(
    labels_path: str | Path,
    *,
    task: str = "binary_classification",
    entity: str | list[str] = "id",
    start: dt.date = day(1),
    end: dt.date = day(10),
    lookback: int = 0,
    split: dict[str, Any] | None = None,
    positive_class: Any = None,
    label_format: str = "parquet",
) -> ModelSpec:
    metric, estimator = TASKS[task]
    labels: dict[str, Any] = {
        "path": str(labels_path),
        "format": label_format,
        "entity": entity,
        "date_column": "label_date",
        "label_column": "y",
    }
    if positive_class is not None:
        labels["positive_class"] = positive_class
    config = ModelConfig.model_validate(
        {
            "apiVersion": "pfactory.io/v1",
            "kind": "Model",
            "metadata": {"name": "m", "owner": "ds@example.com"},
            "spec": {
                "feature_set": {"name": "fs", "version": 1},
                "labels": labels,
                "task": task,
                "training": {
                    "window": {"start": start.isoformat(), "end": end.isoformat()},
                    "lookback_days": lookback,
                    "split": split or {},
                },
                "pipeline": {"estimator": {"import": estimator}},
                "metrics": {"primary": metric},
                "card": {"intended_use": "tests", "contact": "ds@example.com"},
            },
        }
    )
    return config.spec


def features(ids: list[str], x: list[float], **extra: list[Any]) -> pa.Table:
    return pa.table({"id": ids, "x": x, **extra})


def write_labels(
    path: Path, rows: list[tuple[Any, ...]], names: tuple[str, ...] = ("id", "label_date", "y")
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    pq.write_table(pa.table(columns), path / "part-0.parquet")
    return path


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """``examples/credit/generate_data.py``, imported from its file (the examples' own name and cache)."""
    name = "pfactory_examples_credit_generate_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GENERATOR)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture
def store(tmp_path: Path) -> tuple[PartitionWriter, FeatureReader]:
    base = tmp_path / "store"
    return PartitionWriter(fs.LocalFileSystem(), str(base)), FeatureReader(str(base))


# ---------------------------------------------------------------------- point-in-time correctness


def test_a_label_never_takes_features_from_after_its_date(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a", "b"], [1.0, 10.0]))
    writer.failed(day(2), features(["a", "b"], [-2.0, -20.0]))  # rejected: never read
    writer.good(day(3), features(["a", "b"], [3.0, 30.0]))
    writer.unmarked(day(4), features(["a", "b"], [-4.0, -40.0]))  # half-written: never read
    writer.good(day(6), features(["a", "b"], [6.0, 60.0]))
    labels = write_labels(
        tmp_path / "labels",
        [
            ("a", day(2), 1),  # day 3 and day 6 exist but are later: day 1 it is
            ("b", day(2), 0),
            ("a", day(3), 0),  # same-day partition counts (ds <= label date)
            ("b", day(5), 1),  # day 6 is later, day 4 is not good: day 3
            ("a", day(9), 1),  # day 6 is 3 days back: beyond lookback 2 → unmatched
            ("b", day(7), 0),
        ],
    )
    data = build_training_set(
        model_spec(labels, lookback=2, split={"strategy": "random", "test_fraction": 0.2}), reader
    )
    got = sorted(
        zip(
            [*data.X_train["x"], *data.X_test["x"]],
            [*data.y_train, *data.y_test],
            strict=True,
        )
    )
    assert got == [(1.0, 1), (3.0, 0), (10.0, 0), (30.0, 1), (60.0, 0)]
    assert data.lineage["row_counts"]["unmatched_labels"] == 1
    assert data.lineage["row_counts"]["matched"] == 5


def test_lookback_zero_uses_the_label_days_partition_only(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2, 4):
        writer.good(day(n), features(["a", "b"], [float(n), float(n) * 10]))
    labels = write_labels(
        tmp_path / "labels",
        [("a", day(1), 0), ("b", day(2), 1), ("a", day(3), 1), ("b", day(4), 0), ("zz", day(4), 1)],
    )
    data = build_training_set(model_spec(labels), reader)
    assert list(data.X_train["x"]) == [1.0, 20.0] and list(data.X_test["x"]) == [40.0]
    assert data.lineage["row_counts"] == {
        "labels": 5,
        "matched": 3,
        "unmatched_labels": 2,  # day 3 has no partition; 'zz' is in no partition
        "train": 2,
        "test": 1,
        "positive_train": 1,
        "positive_test": 0,
    }


def test_a_composite_entity_matches_on_every_column(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), pa.table({"id": ["a", "a"], "branch": [1, 2], "x": [n + 0.1, n + 0.2]}))
    rows = [("a", 2, day(1), 0), ("a", 1, day(1), 1), ("a", 1, day(2), 1), ("a", 2, day(2), 0)]
    labels = write_labels(tmp_path / "labels", rows, names=("id", "branch", "label_date", "y"))
    data = build_training_set(model_spec(labels, entity=["id", "branch"]), reader)
    assert list(data.X_train["x"]) == [1.2, 1.1] and list(data.X_test["x"]) == [2.1, 2.2]
    assert data.feature_columns == ["x"]


def test_a_feature_row_without_an_entity_never_matches_and_integer_ids_still_join(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), pa.table({"id": pa.array([7, None, 8], pa.int64()), "x": [1.0, 99.0, 2.0]}))
    writer.good(day(2), pa.table({"id": pa.array([7, 8], pa.int64()), "x": [3.0, 4.0]}))
    labels = write_labels(
        tmp_path / "labels", [(7, day(1), 1), (8, day(1), 0), (8, day(2), 1), (7, day(2), 0)]
    )
    data = build_training_set(model_spec(labels), reader)
    assert list(data.X_train["x"]) == [1.0, 2.0] and list(data.X_test["x"]) == [4.0, 3.0]


def test_feature_columns_keep_their_types_when_some_labels_match_nothing(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), pa.table({"id": ["a", "b"], "x": [1.0, 2.0], "k": pa.array([n, n], pa.int32())}))
    labels = write_labels(
        tmp_path / "labels",
        [("a", day(1), 1), ("b", day(1), 0), ("zz", day(2), 1), ("a", day(2), 0), ("b", day(2), 1)],
    )
    data = build_training_set(model_spec(labels), reader)
    assert data.lineage["row_counts"]["unmatched_labels"] == 1
    assert (
        str(data.X_train["k"].dtype) == "int32" == str(data.X_test["k"].dtype)
    )  # as the partitions hold them


def test_the_markers_timestamp_column_is_join_metadata_not_a_feature(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    join = {"entity": ["id"], "timestamp": "event_ts"}
    for n in (1, 2):
        stamp = [dt.datetime(2024, 3, n)] * 2
        writer.good(day(n), features(["a", "b"], [n + 0.1, n + 0.2], event_ts=stamp), **join)
    labels = write_labels(tmp_path / "labels", [("a", day(1), 1), ("b", day(1), 0), ("a", day(2), 0)])
    data = build_training_set(model_spec(labels), reader)
    assert data.feature_columns == ["x"]
    assert list(data.X_train.columns) == ["x"] == list(data.X_test.columns)
    assert list(data.X_train["x"]) == [1.1, 1.2] and list(data.X_test["x"]) == [2.1]


def test_markers_that_predate_the_timestamp_key_keep_the_column_as_before(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0], event_ts=[dt.datetime(2024, 3, n)] * 2))
    labels = write_labels(tmp_path / "labels", [("a", day(1), 1), ("b", day(1), 0), ("a", day(2), 0)])
    assert build_training_set(model_spec(labels), reader).feature_columns == ["x", "event_ts"]


def test_partitions_naming_different_timestamp_columns_are_refused_with_both_names(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    stamps = {"event_ts": [dt.datetime(2024, 3, 1)] * 2, "as_of": [dt.datetime(2024, 3, 1)] * 2}
    writer.good(day(1), features(["a", "b"], [1.0, 2.0], **stamps), timestamp="event_ts")
    writer.good(day(2), features(["a", "b"], [1.0, 2.0], **stamps))  # an older marker: no opinion
    writer.good(day(3), features(["a", "b"], [1.0, 2.0], **stamps), timestamp="as_of")
    labels = write_labels(tmp_path / "labels", [("a", day(1), 1), ("b", day(2), 0), ("a", day(3), 0)])
    with pytest.raises(
        TrainingDataError,
        match=r"disagree on the feature set's timestamp column: 'event_ts' from 2024-03-01 .*; "
        r"'as_of' from 2024-03-03 .*--start-ds 2024-03-01 --end-ds 2024-03-03",
    ):
        build_training_set(model_spec(labels), reader)


def test_an_entity_with_two_rows_on_one_day_takes_the_last_one_written(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a", "b", "a"], [1.0, 2.0, 3.0]))
    writer.good(day(2), features(["a", "b"], [4.0, 5.0]))
    labels = write_labels(tmp_path / "labels", [("a", day(1), 1), ("b", day(1), 0), ("a", day(2), 0)])
    data = build_training_set(model_spec(labels), reader)
    assert list(data.X_train["x"]) == [3.0, 2.0] and list(data.X_test["x"]) == [4.0]


def test_an_unreadable_partition_file_is_named_with_the_day_to_rematerialise(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a", "b"], [1.0, 2.0]))
    writer.good(day(2), features(["a", "b"], [3.0, 4.0]))
    broken = (
        tmp_path / "store" / "features" / "feature_set=fs" / "version=1" / "ds=2024-03-02" / "part-0.parquet"
    )
    broken.write_bytes(b"not parquet")
    labels = write_labels(tmp_path / "labels", [("a", day(1), 1), ("b", day(2), 0)])
    with pytest.raises(TrainingDataError, match=r"ds=2024-03-02/part-0.parquet .*--start-ds 2024-03-02"):
        build_training_set(model_spec(labels), reader)


def test_the_credit_example_labels_join_their_applicants_features(
    gen: ModuleType, tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    """The example's real columns: labels dated on the application day, features of that day's partition."""
    raw = tmp_path / "raw"
    gen.generate(raw, day(1), 3, 150, 7, progress_every=0)
    writer, reader = store
    writer.feature_set = "credit-features"
    applicants = pa_ds.dataset(raw / "applicants", format="parquet", partitioning="hive").to_table()
    for n in (1, 2, 3):
        today = applicants.filter(pc.equal(applicants["ds"].cast(pa.string()), day(n).isoformat()))
        writer.good(
            day(n),
            today.drop_columns(["ds"]).rename_columns(
                [
                    "applicant_id",
                    "age",
                    "gender",
                    "income",
                    "monthly_debt_payments",
                    "months_at_address",
                    "employment_status",
                ]
            ),
        )
    text = (EXAMPLES / "credit_model.yaml").read_text()
    config = yaml.safe_load(text)
    config["spec"]["labels"]["path"] = str(raw / "labels")
    config["spec"]["training"]["window"] = {"start": "2024-03-01", "end": "2024-03-03"}
    spec = ModelConfig.model_validate(config).spec
    data = build_training_set(spec, reader)
    counts = data.lineage["row_counts"]
    assert counts["labels"] == counts["matched"] == 450 and counts["unmatched_labels"] == 0
    assert (counts["train"], counts["test"]) == (300, 150)  # 0.2 of 3 days rounds to the last day
    assert set(data.test_dates.tolist()) == {day(3)}
    assert {"age", "gender", "employment_status", "income"} <= set(data.feature_columns)
    assert "applicant_id" not in data.X_train.columns and "ds" not in data.X_train.columns
    labels = pa_ds.dataset(raw / "labels", format="parquet").to_table()
    assert int(data.y_train.sum() + data.y_test.sum()) == pc.sum(labels["defaulted_12m"]).as_py()


# ---------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("values", "positive_class", "expected"),
    [
        ([0, 1, 1, 0], None, [0, 1, 1, 0]),
        ([False, True, True, False], None, [0, 1, 1, 0]),
        (["no", "yes", "yes", "no"], "yes", [0, 1, 1, 0]),
        ([0, 2, 2, 0], 2, [0, 1, 1, 0]),
        ([0, 1, 1, 0], "1", [0, 1, 1, 0]),  # a YAML string against integer labels
    ],
)
def test_binary_targets_are_positive_class_indicators(
    tmp_path: Path,
    store: tuple[PartitionWriter, FeatureReader],
    values: list[Any],
    positive_class: Any,
    expected: list[int],
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]))
    dates = [day(1), day(1), day(2), day(2)]
    labels = write_labels(tmp_path / "l", list(zip(["a", "b", "a", "b"], dates, values, strict=True)))
    data = build_training_set(model_spec(labels, positive_class=positive_class), reader)
    assert [*data.y_train, *data.y_test] == expected
    assert data.y_train.dtype == np.int64


@pytest.mark.parametrize(
    ("values", "positive_class", "message"),
    [
        (["no", "yes", "yes", "no"], None, r"holds \['no', 'yes'\], not 0/1.*set spec.labels.positive_class"),
        ([0, 1, 1, 0], 7, r"positive_class 7 is not among the values of 'y': \[0, 1\]"),
        ([0, 1, 2, 0], 1, r"binary_classification needs two label values; 'y' holds 3.*multiclass"),
    ],
)
def test_unusable_binary_labels_say_what_to_set(
    tmp_path: Path,
    store: tuple[PartitionWriter, FeatureReader],
    values: list[Any],
    positive_class: Any,
    message: str,
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]))
    dates = [day(1), day(1), day(2), day(2)]
    labels = write_labels(tmp_path / "l", list(zip(["a", "b", "a", "b"], dates, values, strict=True)))
    with pytest.raises(TrainingDataError, match=message):
        build_training_set(model_spec(labels, positive_class=positive_class), reader)


def test_regression_targets_are_floats_and_multiclass_targets_stay_as_they_are(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]))
    dates = [day(1), day(1), day(2), day(2)]
    ids = ["a", "b", "a", "b"]
    numbers = write_labels(tmp_path / "n", list(zip(ids, dates, [1, 5, 2, 7], strict=True)))
    data = build_training_set(model_spec(numbers, task="regression"), reader)
    assert data.y_train.dtype == np.float64 and [*data.y_train, *data.y_test] == [1.0, 5.0, 2.0, 7.0]
    assert "positive_train" not in data.lineage["row_counts"]
    classes = write_labels(
        tmp_path / "c", list(zip(ids, dates, ["red", "blue", "red", "green"], strict=True))
    )
    data = build_training_set(model_spec(classes, task="multiclass_classification"), reader)
    assert [*data.y_train, *data.y_test] == ["red", "blue", "red", "green"]


# ---------------------------------------------------------------------- splits


def test_the_time_split_holds_out_the_latest_dates_and_never_cuts_a_date(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    ids = [f"e{i}" for i in range(40)]
    sizes = {1: 10, 2: 10, 3: 5, 4: 7, 5: 8}  # 40 rows; 0.2 → 8 rows: exactly day 5
    rows = []
    for n, size in sizes.items():
        writer.good(day(n), features(ids, [float(n)] * 40))
        rows += [(ids[i], day(n), i % 2) for i in range(size)]
    labels = write_labels(tmp_path / "l", rows)
    data = build_training_set(model_spec(labels), reader)
    assert len(data.X_test) == 8 and set(data.X_test["x"]) == {5.0}
    assert set(data.test_dates.tolist()) == {day(5)} and len(data.test_dates) == 8
    # 0.3 → 12 rows; the cut nearest to it is at day 4 (15 rows), never inside a date
    data = build_training_set(model_spec(labels, split={"test_fraction": 0.3}), reader)
    assert len(data.X_test) == 15 and set(data.X_test["x"]) == {4.0, 5.0}
    assert max(data.X_train["x"]) < min(data.X_test["x"])


def test_a_time_split_over_one_date_is_refused_with_the_fix(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a", "b"], [1.0, 2.0]))
    labels = write_labels(tmp_path / "l", [("a", day(1), 0), ("b", day(1), 1)])
    with pytest.raises(
        TrainingDataError, match=r"at least two dates; all 2 fall on 2024-03-01.*strategy: random"
    ):
        build_training_set(model_spec(labels), reader)


def test_the_random_split_is_seeded(tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]) -> None:
    writer, reader = store
    ids = [f"e{i}" for i in range(50)]
    writer.good(day(1), features(ids, [float(i) for i in range(50)]))
    labels = write_labels(tmp_path / "l", [(e, day(1), i % 2) for i, e in enumerate(ids)])

    def held_out(seed: int) -> list[float]:
        split = {"strategy": "random", "test_fraction": 0.2, "seed": seed}
        return sorted(build_training_set(model_spec(labels, split=split), reader).X_test["x"])

    assert len(held_out(1)) == 10 and held_out(1) == held_out(1) != held_out(2)


def test_a_training_split_with_one_class_is_refused(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]))
    labels = write_labels(tmp_path / "l", [("a", day(1), 0), ("b", day(1), 0), ("a", day(2), 1)])
    with pytest.raises(TrainingDataError, match=r"training split holds one class only \(y = \[0\], 2 rows"):
        build_training_set(model_spec(labels), reader)


# ---------------------------------------------------------------------- missing data reads like advice


def test_no_validated_partitions_says_which_days_and_how_to_materialise_them(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (2, 3):
        writer.failed(day(n), features(["a"], [1.0]))
    writer.good(day(20), features(["a"], [1.0]))  # outside the window: not a reason to pass
    labels = write_labels(tmp_path / "l", [("a", day(5), 1)])
    with pytest.raises(TrainingDataError) as error:
        build_training_set(model_spec(labels, start=day(5), end=day(10), lookback=3), reader)
    assert str(error.value).startswith(
        "no validated partitions of fs v1 between 2024-03-02 and 2024-03-10 "
        "(2 days failed validation, 7 missing)"
    )
    assert str(error.value).endswith(
        "pfactory submit <fs feature set YAML> --start-ds 2024-03-02 --end-ds 2024-03-10"
    )


def test_labels_matching_no_features_are_refused_with_what_was_read(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a"], [1.0]))
    labels = write_labels(tmp_path / "l", [("A-1", day(1), 1), ("a", day(2), 0)])
    with pytest.raises(
        TrainingDataError, match=r"none of the 2 labels .* matched.*read 1 validated partitions"
    ):
        build_training_set(model_spec(labels), reader)


def test_missing_label_columns_name_the_file_and_the_columns_present(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    _, reader = store
    labels = write_labels(tmp_path / "l", [("a", day(1), 1)], names=("id", "when", "target"))
    with pytest.raises(TrainingDataError) as error:
        build_training_set(model_spec(labels), reader)
    assert str(error.value) == (
        f"labels file {labels / 'part-0.parquet'} has no column 'label_date' (spec.labels.date_column), "
        "'y' (spec.labels.label_column); columns present: id, when, target"
    )


def test_labels_outside_the_window_or_absent_are_refused(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    _, reader = store
    labels = write_labels(tmp_path / "l", [("a", day(20), 1), ("b", day(25), 0)])
    with pytest.raises(
        TrainingDataError,
        match=r"no labels .* between 2024-03-01 and 2024-03-10 .*"
        r"2 rows are dated from 2024-03-20 to 2024-03-25 in 'label_date'",
    ):
        build_training_set(model_spec(labels), reader)
    with pytest.raises(
        TrainingDataError,
        match=r"the label table .*nowhere \(spec.labels.path: .*\) does not exist; point spec.labels.path",
    ):
        build_training_set(model_spec(tmp_path / "nowhere"), reader)


def test_features_without_the_entity_or_with_the_label_column_are_refused(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), pa.table({"customer": ["a"], "x": [1.0]}))
    labels = write_labels(tmp_path / "l", [("a", day(1), 1)])
    with pytest.raises(
        TrainingDataError,
        match=r"fs v1 has no entity column 'id' \(spec.labels.entity\); its columns: customer, x, ds",
    ):
        build_training_set(model_spec(labels), reader)
    writer.good(day(1), pa.table({"id": ["a"], "y": [1]}))
    with pytest.raises(TrainingDataError, match=r"column 'y' named like the label .* would leak the target"):
        build_training_set(model_spec(labels), reader)


def test_csv_labels_with_text_dates_and_numeric_ids_join_string_entities(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["7", "8"], [n + 0.7, n + 0.8]))
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "a.csv").write_text("id,label_date,y\n7,2024-03-01,1\n8,2024-03-01,0\n,2024-03-02,1\n")
    (folder / "b.csv").write_text("id,label_date,y\n7,2024-03-02,0\n8,2024-03-02,1\n")
    data = build_training_set(model_spec(folder, label_format="csv"), reader)
    assert list(data.X_train["x"]) == [1.7, 1.8] and list(data.X_test["x"]) == [2.7, 2.8]
    assert data.lineage["row_counts"]["null_labels"] == 1


# ---------------------------------------------------------------------- lineage


def test_lineage_records_what_was_read_in_the_registrys_shape(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    writer.good(day(1), features(["a", "b"], [0.0, 0.0]), sql_hashes={"base": "h0", "features": "f0"})
    for n in (3, 4, 5):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]), sql_hashes={"base": "h1", "features": "f1"})
    writer.good(day(6), features(["a", "b"], [1.0, 2.0]), sql_hashes={"base": "h2", "features": "f1"})
    rows = [("a", day(5), 1), ("b", day(5), 0), ("a", day(6), 0), ("b", day(6), 1)]
    labels = write_labels(tmp_path / "l", rows)
    data = build_training_set(model_spec(labels, start=day(5), end=day(6), lookback=2), reader)
    lineage = Lineage.model_validate(data.lineage)  # exactly the registry's fields
    assert lineage.model_dump(mode="json") == data.lineage
    root = (tmp_path / "store").as_uri()
    assert data.lineage["partitions"] == [
        f"{root}/features/feature_set=fs/version=1/ds=2024-03-0{n}" for n in (3, 4, 5, 6)
    ]  # day 1 is before window start - lookback: not read
    assert (data.lineage["start_ds"], data.lineage["end_ds"]) == ("2024-03-03", "2024-03-06")
    assert data.lineage["feature_set_version"] == "1"
    assert data.lineage["label_source"] == str(labels)
    assert data.lineage["query_hashes"] == {"base": "h2", "base@2024-03-03": "h1", "features": "f1"}


def test_markers_without_sql_hashes_give_their_config_hash(
    tmp_path: Path, store: tuple[PartitionWriter, FeatureReader]
) -> None:
    writer, reader = store
    for n in (1, 2):
        writer.good(day(n), features(["a", "b"], [1.0, 2.0]), sql_hashes={}, config_hash="cfg-9")
    labels = write_labels(tmp_path / "l", [("a", day(1), 1), ("b", day(1), 0), ("a", day(2), 1)])
    data = build_training_set(model_spec(labels), reader)
    assert data.lineage["query_hashes"] == {"config_hash": "cfg-9"}


# ---------------------------------------------------------------------- S3


@pytest.mark.integration
def test_features_and_labels_on_s3(moto: str) -> None:
    s3 = fs.S3FileSystem(
        endpoint_override=moto.removeprefix("http://"),
        scheme="http",
        region="eu-west-1",
        allow_bucket_creation=True,
    )
    s3.create_dir("lake")
    writer = PartitionWriter(s3, "lake/features-store")
    for n in (1, 2, 3):
        writer.good(day(n), features(["a", "b"], [n + 0.1, n + 0.2]))
    for n in (1, 2, 3):
        table = pa.table({"id": ["a", "b"], "label_date": [day(n)] * 2, "y": [n % 2, 1 - n % 2]})
        with s3.open_output_stream(f"lake/labels/part-2024-03-0{n}.parquet") as out:
            pq.write_table(table, out)
    with s3.open_output_stream("lake/labels/_SUCCESS") as out:  # a folder's marker is not a label file
        out.write(b"")
    reader = FeatureReader("s3://lake/features-store", endpoint_url=moto, region="eu-west-1")
    spec = model_spec("s3://lake/labels/", split={"test_fraction": 0.34})
    data = build_training_set(spec, reader, labels_endpoint_url=moto, labels_region="eu-west-1")
    assert list(data.X_train["x"]) == [1.1, 1.2, 2.1, 2.2] and list(data.X_test["x"]) == [3.1, 3.2]
    assert (
        data.lineage["partitions"][0]
        == "s3://lake/features-store/features/feature_set=fs/version=1/ds=2024-03-01"
    )
