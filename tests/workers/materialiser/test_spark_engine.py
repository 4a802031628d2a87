"""The local Spark engine reading a growing partitioned CSV source."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs

from pfactory.materialiser.adapters.arrow_io import s3_filesystem
from pfactory.materialiser.adapters.spark import LocalSparkEngine, SparkEngineSettings
from pfactory.materialiser.engine import EngineError, SourceTable
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


def test_s3_sources_are_read_through_pyarrow_with_their_partitions(tmp_path: Path, moto: str) -> None:
    """Spark here has no hadoop-aws: the engine reads s3:// sources with pyarrow (moto_server)."""
    host = moto.removeprefix("http://")
    fs.S3FileSystem(
        endpoint_override=host, scheme="http", region="eu-west-1", allow_bucket_creation=True
    ).create_dir("raw-bucket")
    filesystem = s3_filesystem(moto, "eu-west-1")
    write_raw(tmp_path, [DAYS[0], DAYS[1]])
    for source in ("applicants", "scores"):
        for folder in sorted((tmp_path / "raw" / source).iterdir()):
            for file in folder.iterdir():
                with filesystem.open_output_stream(
                    f"raw-bucket/raw/{source}/{folder.name}/{file.name}"
                ) as out:
                    out.write(file.read_bytes())
    engine = LocalSparkEngine(SparkEngineSettings(s3_endpoint_url=moto, s3_region="eu-west-1"))
    scores = SourceTable(
        name="scores",
        view="src_scores_s3_test",
        format="csv",
        location="s3://raw-bucket/raw/scores",
        partitioned=True,
        options={"header": "true"},
    )
    assert engine.register_source(scores) == ["applicant_id", "score", "grade", "ds"]
    rows = engine.session.sql(
        f"select ds, count(*) as n from {scores.view} group by ds order by ds"
    ).collect()
    assert [str(row["ds"]) for row in rows] == [str(DAYS[0]), str(DAYS[1])]

    missing = SourceTable("bureau", "src_bureau_s3_test", "parquet", "s3://raw-bucket/raw/nothing", True)
    with pytest.raises(EngineError, match="could not be read from s3://raw-bucket/raw/nothing"):
        engine.register_source(missing)
