"""Materialiser fixtures: one warm Spark session for the whole session, tiny raw data, a small feature set."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.loader import load_config_dict
from pfactory.materialiser.adapters.gx import GxPartitionValidator
from pfactory.materialiser.adapters.partitions import LocalPartitionStore
from pfactory.materialiser.adapters.spark import LocalSparkEngine, SparkEngineSettings
from pfactory.materialiser.service import Materialiser

DAYS = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
BAD_DAY = date(2024, 3, 4)
"""A day whose raw data breaks the expectations: an age of 7 and a grade outside the set."""

APPLICANTS = {
    DAYS[0]: [(1, 34, 52_000.0), (2, 51, 61_500.5), (3, 22, 18_250.0)],
    DAYS[1]: [(1, 34, 52_000.0), (4, 45, 99_000.0)],
    DAYS[2]: [(2, 52, 63_000.0), (3, 23, 19_000.0), (5, 67, 30_000.0), (6, 29, 41_000.0)],
    BAD_DAY: [(1, 7, 1_000.0), (2, 150, 2_000.0), (3, 40, 3_000.0)],
}
SCORES = {
    DAYS[0]: [(1, 710, "A"), (2, 640, "B")],
    DAYS[1]: [(4, 590, "C")],
    DAYS[2]: [(2, 650, "B"), (5, 720, "A"), (6, 600, "C")],
    BAD_DAY: [(1, 500, "Z"), (2, 510, "A"), (3, 520, "A")],
}

CONFIG: dict[str, Any] = {
    "apiVersion": "pfactory.io/v1",
    "kind": "FeatureSet",
    "metadata": {"name": "tiny-credit", "owner": "tests@example.com"},
    "spec": {
        "entity": "applicant_id",
        "timestamp": "event_ts",
        "version": 1,
        "sources": {
            "applicants": {
                "format": "parquet",
                "path": "raw/applicants/ds={{ ds }}/",
                "partitioned_by": "ds",
            },
            "scores": {
                "format": "csv",
                "path": "raw/scores/ds={{ ds }}/",
                "partitioned_by": "ds",
                "options": {"header": True},
            },
        },
        "models": [
            {
                "name": "features",
                "sql": (
                    "select b.applicant_id, b.event_ts, b.age, b.income,\n"
                    "       coalesce(s.score, 0) as score, s.grade\n"
                    "from {{ ref('base') }} b\n"
                    "left join {{ source('scores') }} s\n"
                    "  on s.applicant_id = b.applicant_id and s.ds = '{{ ds }}'"
                ),
            },
            {
                "name": "base",
                "sql": (
                    "select applicant_id, cast('{{ ds }}' as timestamp) as event_ts, age,\n"
                    "       annual_income as income\n"
                    "from {{ source('applicants') }}\nwhere ds = '{{ ds }}'"
                ),
            },
        ],
        "output": "features",
        "features": [
            {
                "name": "age",
                "dtype": "int",
                "nullable": False,
                "expectations": [{"type": "between", "min": 18, "max": 100}],
                "source_columns": ["applicants.age"],
            },
            {"name": "income", "dtype": "double", "expectations": [{"type": "between", "min": 0}]},
            {"name": "score", "dtype": "long", "expectations": [{"type": "between", "min": 0, "max": 1000}]},
            {
                "name": "grade",
                "dtype": "string",
                "expectations": [
                    {"type": "in_set", "values": ["A", "B", "C"]},
                    {"type": "max_null_fraction", "value": 0.5},
                    {"type": "regex", "pattern": "[A-Z]"},
                ],
            },
        ],
    },
}


def feature_set(**spec_changes: Any) -> FeatureSetConfig:
    """The test feature set, optionally with spec fields replaced."""
    data = {**CONFIG, "spec": {**CONFIG["spec"], **spec_changes}}
    return load_config_dict(data, expect=FeatureSetConfig)


def write_raw(root: Path, days: list[date] | None = None) -> Path:
    """Applicants as Parquet and scores as CSV under ``root/raw/<source>/ds=<day>/``."""
    for ds in days or [*DAYS, BAD_DAY]:
        folder = root / "raw" / "applicants" / f"ds={ds}"
        folder.mkdir(parents=True, exist_ok=True)
        ids, ages, incomes = zip(*APPLICANTS[ds], strict=True)
        table = pa.table({"applicant_id": list(ids), "age": list(ages), "annual_income": list(incomes)})
        pq.write_table(table, folder / "part-0.parquet")
        folder = root / "raw" / "scores" / f"ds={ds}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "scores.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["applicant_id", "score", "grade"])
            writer.writerows(SCORES[ds])
    return root


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[LocalSparkEngine]:
    """One warm local Spark session for every materialiser test."""
    engine = LocalSparkEngine(SparkEngineSettings(master="local[2]", shuffle_partitions=2))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def gx_validator() -> GxPartitionValidator:
    """One GX validator (ephemeral context) for the session."""
    return GxPartitionValidator()


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    """Raw data for the test days and the bad day."""
    return write_raw(tmp_path / "data")


@pytest.fixture
def local_store(tmp_path: Path) -> LocalPartitionStore:
    """An empty local partition store."""
    return LocalPartitionStore(tmp_path / "store")


@pytest.fixture
def materialiser(
    spark_engine: LocalSparkEngine,
    gx_validator: GxPartitionValidator,
    local_store: LocalPartitionStore,
    raw_root: Path,
) -> Materialiser:
    """A materialiser over the shared engine, a fresh local store and the tiny raw data."""
    return Materialiser(spark_engine, local_store, gx_validator, data_root=str(raw_root))
