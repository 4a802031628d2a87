"""Materialising days on the local Spark engine into a local store: rows, dtypes, markers, reruns, quarantine,
crashes mid-write, and resumable ranges."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from pfactory.features import FeatureReader
from pfactory.materialiser.adapters.gx import GxPartitionValidator
from pfactory.materialiser.adapters.partitions import LocalPartitionStore
from pfactory.materialiser.adapters.spark import LocalSparkEngine
from pfactory.materialiser.engine import EngineOutput, ModelStep, OutputColumn, SourceTable
from pfactory.materialiser.service import Materialiser, config_hash, partition_key
from pfactory.materialiser.storage import (
    FAILED_MARKER,
    GOOD_MARKER,
    QUARANTINE_MARKER,
    STATS_FILE,
    VALIDATION_FILE,
)
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from tests.utils.statsd import capturing_statsd
from tests.workers.materialiser.conftest import BAD_DAY, DAYS, feature_set


class Crash(BaseException):
    """Stands in for the process dying at a step (not an Exception: nothing may handle it)."""


def test_a_day_materialises_with_its_rows_declared_dtypes_marker_and_reports(
    materialiser: Materialiser, local_store: LocalPartitionStore
) -> None:
    config = feature_set()

    result = materialiser.materialise_day(config, DAYS[0])

    assert result.status == "good", result.reason
    key = partition_key(config, DAYS[0])
    folder = Path(local_store.base) / key.path()
    assert result.uri == f"file://{folder}"
    assert sorted(p.name for p in folder.iterdir()) == [
        GOOD_MARKER,
        STATS_FILE,
        VALIDATION_FILE,
        "part-0.parquet",
    ]
    table = local_store.read_table(key)
    assert table.column_names == ["applicant_id", "event_ts", "age", "income", "score", "grade"]
    assert table.schema.field("age").type == pa.int32()  # declared int, computed from a Parquet long
    assert table.schema.field("score").type == pa.int64()  # declared long, inferred from CSV
    assert table.schema.field("income").type == pa.float64()
    rows = sorted(table.to_pylist(), key=lambda r: r["applicant_id"])
    assert [(r["applicant_id"], r["age"], r["score"], r["grade"]) for r in rows] == [
        (1, 34, 710, "A"),
        (2, 51, 640, "B"),
        (3, 22, 0, None),
    ]
    marker = local_store.good_marker(key)
    assert marker is not None
    assert marker["rows"] == 3 == result.rows
    assert marker["config_hash"] == config_hash(config)
    assert marker["validation"]["success"] is True and marker["validation"]["failed"] == 0
    assert {"name": "age", "type": "int32"} in marker["schema"]
    # the join columns, so the trainer can keep the event time out of a model's inputs
    assert (marker["entity"], marker["timestamp"]) == (["applicant_id"], "event_ts")
    [good] = FeatureReader(str(local_store.base)).good_days(key.feature_set, key.version, DAYS[0], DAYS[0])
    assert (good.entity, good.timestamp) == (("applicant_id",), "event_ts")
    assert result.lineage["income"] == ["applicants.annual_income"]
    assert result.lineage["grade"] == ["scores.grade"]
    stats = local_store.read_json(key, STATS_FILE)
    assert stats is not None and stats["rows"] == 3
    assert stats["columns"]["grade"]["null_fraction"] == pytest.approx(1 / 3)
    assert (stats["columns"]["age"]["min"], stats["columns"]["age"]["max"]) == (22, 51)
    report = local_store.read_json(key, VALIDATION_FILE)
    assert report is not None and report["success"] is True
    assert len(report["results"]) == report["evaluated"] == 11


def test_a_rerun_replaces_the_day_and_never_duplicates_rows(
    materialiser: Materialiser, local_store: LocalPartitionStore
) -> None:
    config = feature_set()
    key = partition_key(config, DAYS[2])
    first = materialiser.materialise_day(config, DAYS[2])
    first_marker = local_store.good_marker(key)
    second = materialiser.materialise_day(config, DAYS[2])

    assert first.rows == second.rows == local_store.read_table(key).num_rows == 4
    assert [p.name for p in Path(local_store.base, key.path()).glob("*.parquet")] == ["part-0.parquet"]
    marker = local_store.good_marker(key)
    assert first_marker is not None and marker is not None
    assert marker["run_id"] != first_marker["run_id"]  # the second run's partition replaced the first's


def test_a_day_that_breaks_expectations_is_quarantined_with_examples_and_the_old_good_day_is_withdrawn(
    materialiser: Materialiser, local_store: LocalPartitionStore, raw_root: Path
) -> None:
    config = feature_set()
    assert materialiser.materialise_day(config, DAYS[0]).good
    # the day's raw data is corrected... for the worse: it now holds the bad day's rows
    for source in ("applicants", "scores"):
        good, bad = raw_root / "raw" / source / f"ds={DAYS[0]}", raw_root / "raw" / source / f"ds={BAD_DAY}"
        for old in good.iterdir():
            old.unlink()
        for new in bad.iterdir():
            (good / new.name).write_bytes(new.read_bytes())

    result = materialiser.materialise_day(config, DAYS[0])

    assert result.status == "quarantined"
    failing = {(f["expectation"], f["column"]): f for f in result.failures}
    assert set(failing) == {
        ("expect_column_values_to_be_between", "age"),
        ("expect_column_values_to_be_in_set", "grade"),
    }
    assert sorted(failing["expect_column_values_to_be_between", "age"]["unexpected_examples"]) == [7, 150]
    assert failing["expect_column_values_to_be_in_set", "grade"]["unexpected_examples"] == ["Z"]
    assert (
        result.reason is not None
        and "feature 'age': between" in result.reason
        and "[7, 150]" in result.reason
    )
    key = partition_key(config, DAYS[0])
    assert local_store.good_marker(key) is None
    with pytest.raises(LookupError):
        local_store.read_table(key)
    assert sorted(p.name for p in Path(local_store.base, key.path()).iterdir()) == [FAILED_MARKER]
    failed = local_store.read_json(key, FAILED_MARKER)
    assert failed is not None and failed["quarantine_uri"] == result.quarantine_uri
    quarantine = Path(local_store.base, key.quarantine_path())
    assert result.quarantine_uri == f"file://{quarantine}"
    assert sorted(p.name for p in quarantine.iterdir()) == [
        QUARANTINE_MARKER,
        STATS_FILE,
        VALIDATION_FILE,
        "part-0.parquet",
    ]
    report = local_store.read_json(key, VALIDATION_FILE, quarantine=True)
    assert report is not None and report["success"] is False and report["failed"] == 2


@pytest.mark.parametrize("step", ["staged", "published"])
def test_a_crash_mid_write_never_shows_a_half_partition_and_staging_keeps_the_old_day_intact(
    spark_engine: LocalSparkEngine,
    gx_validator: GxPartitionValidator,
    raw_root: Path,
    tmp_path: Path,
    step: str,
) -> None:
    config = feature_set()
    store_root = tmp_path / "store"
    good = Materialiser(spark_engine, LocalPartitionStore(store_root), gx_validator, data_root=str(raw_root))
    assert good.materialise_day(config, DAYS[1]).good
    key = partition_key(config, DAYS[1])
    before = LocalPartitionStore(store_root).read_table(key)

    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    crashing = Materialiser(
        spark_engine, LocalPartitionStore(store_root, on_step=crash), gx_validator, data_root=str(raw_root)
    )
    with pytest.raises(Crash):
        crashing.materialise_day(config, DAYS[1])

    reader = LocalPartitionStore(store_root)
    folder = store_root / key.path()
    if step == "staged":  # died while staging: the published day was never touched
        assert reader.read_table(key).equals(before)
        assert reader.good_marker(key) is not None
    else:  # died between moving the old day aside and moving the new one in: no day, never half a day
        assert not folder.exists()
        assert reader.good_marker(key) is None
    days = store_root / "features" / "feature_set=tiny-credit" / "version=1"
    assert [p.name for p in days.iterdir()] == ([f"ds={DAYS[1]}"] if step == "staged" else [])
    # the next run repairs the day
    assert good.materialise_day(config, DAYS[1]).good
    assert reader.read_table(key).num_rows == 2


class CountingEngine:
    """The real engine, counting the days it computes and crashing on request."""

    def __init__(self, engine: LocalSparkEngine, crash_on_run: int | None = None) -> None:
        self.engine = engine
        self.runs = 0
        self.crash_on_run = crash_on_run

    def register_source(self, source: SourceTable) -> list[str]:
        return self.engine.register_source(source)

    def run_models(
        self, steps: Sequence[ModelStep], output: str, columns: Sequence[OutputColumn]
    ) -> EngineOutput:
        self.runs += 1
        if self.runs == self.crash_on_run:
            raise Crash(f"run {self.runs}")
        return self.engine.run_models(steps, output, columns)

    def close(self) -> None:
        """The shared engine outlives this wrapper."""


def test_a_range_resumes_after_a_crash_and_skips_days_already_good_with_the_same_config(
    spark_engine: LocalSparkEngine,
    gx_validator: GxPartitionValidator,
    local_store: LocalPartitionStore,
    raw_root: Path,
) -> None:
    config = feature_set()
    crashing = CountingEngine(spark_engine, crash_on_run=2)
    first = Materialiser(crashing, local_store, gx_validator, data_root=str(raw_root))
    seen = []
    with pytest.raises(Crash):
        for result in first.materialise_range(config, DAYS[0], DAYS[2]):
            seen.append(result)
    assert [(r.ds, r.status) for r in seen] == [(DAYS[0], "good")]

    counting = CountingEngine(spark_engine)
    resumed = list(
        Materialiser(counting, local_store, gx_validator, data_root=str(raw_root)).materialise_range(
            config, DAYS[0], DAYS[2]
        )
    )

    assert [(r.ds, r.status, r.skipped, r.rows) for r in resumed] == [
        (DAYS[0], "good", True, 3),
        (DAYS[1], "good", False, 2),
        (DAYS[2], "good", False, 4),
    ]
    assert counting.runs == 2
    assert resumed[0].uri == local_store.partition_uri(partition_key(config, DAYS[0]))
    assert resumed[0].lineage == seen[0].lineage
    # a changed spec changes the hash: every day is recomputed
    changed = feature_set(vars={"note": "changed"})
    again = Materialiser(counting, local_store, gx_validator, data_root=str(raw_root))
    assert [r.skipped for r in again.materialise_range(changed, DAYS[0], DAYS[1])] == [False, False]
    assert counting.runs == 4


def test_a_broken_template_fails_the_day_with_the_model_and_line_and_writes_nothing(
    materialiser: Materialiser, local_store: LocalPartitionStore
) -> None:
    models = [
        {"name": "base", "sql": "select applicant_id, age\nfrom {{ ref('bsae') }}"},
    ]
    config = feature_set(models=models, output="base")

    result = materialiser.materialise_day(config, DAYS[0])

    assert result.status == "failed"
    assert result.reason is not None and "model 'base', line 2" in result.reason and "bsae" in result.reason
    assert result.failures and result.failures[0]["code"] == "unknown_ref"
    assert not Path(local_store.base, "features").exists()


def test_an_empty_day_is_quarantined_and_a_sql_error_fails_the_day_with_the_reason(
    materialiser: Materialiser,
) -> None:
    # the source roots exist but hold no partition for the day: zero rows never pass as good
    missing = materialiser.materialise_day(feature_set(), DAYS[0].replace(year=2023))
    assert missing.status == "quarantined" and missing.rows == 0
    assert "partition is not empty" in (missing.reason or "")

    models = [{"name": "base", "sql": "select nope from {{ source('applicants') }}"}]
    broken = materialiser.materialise_day(feature_set(models=models, output="base"), DAYS[0])
    assert broken.status == "failed"
    assert broken.reason is not None and "model 'base' failed" in broken.reason and "nope" in broken.reason


def test_each_day_emits_its_partition_status_rows_failed_expectations_and_stage_times(
    spark_engine: LocalSparkEngine,
    gx_validator: GxPartitionValidator,
    local_store: LocalPartitionStore,
    raw_root: Path,
) -> None:
    config = feature_set()
    with capturing_statsd() as capture:
        metrics = Metrics(service="materialiser", env="test", port=capture.port)
        materialiser = Materialiser(
            spark_engine, local_store, gx_validator, data_root=str(raw_root), metrics=metrics
        )
        results = list(materialiser.materialise_range(config, DAYS[0], DAYS[0]))
        results.append(materialiser.materialise_day(config, BAD_DAY))
        results += materialiser.materialise_range(config, DAYS[0], DAYS[0])  # already good: skipped
        broken_models = [{"name": "base", "sql": "select 1 from {{ ref('bsae') }}"}]
        broken = materialiser.materialise_day(feature_set(models=broken_models, output="base"), DAYS[1])
        stages = catalog.STAGE_DURATION.name
        capture.wait_for(
            lambda: (
                len(capture.named(catalog.PARTITIONS_MATERIALISED.name)) == 3
                and len(capture.named(stages, stage="write")) == 2
            ),
            5,
            "three days' partitions and two writes",
        )
        metrics.close()

    assert [(r.status, r.skipped) for r in results] == [
        ("good", False),
        ("quarantined", False),
        ("good", True),
    ]
    assert broken.status == "failed"
    tag = {"feature_set": "tiny-credit@1"}
    partitions = capture.named(catalog.PARTITIONS_MATERIALISED.name, **tag)
    assert [(line.tags["status"], line.value, line.kind) for line in partitions] == [
        ("good", 1, "c"),
        ("failed", 1, "c"),  # the quarantined day
        ("failed", 1, "c"),  # the day that computed nothing; the skipped day emits nothing
    ]
    assert [(line.value, line.kind) for line in capture.named(catalog.ROWS_MATERIALISED.name, **tag)] == [
        (3, "c")
    ]  # rows of good partitions only: the quarantined rows went to quarantine
    assert [line.value for line in capture.named(catalog.VALIDATION_FAILURES.name, **tag)] == [2]
    timed = capture.named(stages, kind="materialise")
    assert [line.tags["stage"] for line in timed] == [
        *("render", "compute", "validate", "lineage", "write"),  # the good day
        *("render", "compute", "validate", "lineage", "write"),  # the quarantined day
    ]
    assert all(line.kind == "d" and line.value >= 0 for line in timed)
    assert sum(line.value for line in timed[:5]) == pytest.approx(
        sum(results[0].seconds.values()) * 1000, rel=1e-6
    )
    assert all(
        line.tags["service"] == "materialiser" and line.tags["env"] == "test" for line in capture.lines
    )
