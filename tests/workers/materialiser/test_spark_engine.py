"""The local Spark engine reading a growing partitioned CSV source."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfactory.materialiser.adapters.spark import LocalSparkEngine
from pfactory.materialiser.engine import SourceTable
from tests.workers.materialiser.conftest import BAD_DAY, DAYS, write_raw

pytestmark = pytest.mark.integration


def _scores(root: Path) -> SourceTable:
    return SourceTable(
        name="scores",
        view="src_scores_engine_test",
        format="csv",
        location=str(root / "raw" / "scores"),
        partitioned=True,
        options={"header": "true"},
    )


def test_a_csv_schema_is_inferred_once_and_new_days_still_read_typed(
    spark_engine: LocalSparkEngine, tmp_path: Path
) -> None:
    write_raw(tmp_path, [DAYS[0]])
    source = _scores(tmp_path)
    assert spark_engine.register_source(source) == ["applicant_id", "score", "grade", "ds"]
    inferred = spark_engine._csv_schemas[source.location]
    assert "ds" not in inferred.fieldNames()  # the partition column is discovered, never frozen

    write_raw(tmp_path, [DAYS[1], BAD_DAY])  # the root grows, as in a backfill
    assert spark_engine.register_source(source) == ["applicant_id", "score", "grade", "ds"]
    assert spark_engine._csv_schemas[source.location] is inferred  # no second inference
    rows = spark_engine.session.sql(
        f"select ds, count(*) as n, typeof(first(score)) as t from {source.view} group by ds order by ds"
    ).collect()
    assert [str(row["ds"]) for row in rows] == sorted(str(d) for d in [DAYS[0], DAYS[1], BAD_DAY])
    assert {row["t"] for row in rows} == {inferred["score"].dataType.simpleString()} != {"string"}
