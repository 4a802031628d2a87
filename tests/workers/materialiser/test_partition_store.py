"""One contract suite for ``PartitionStore``, run against the local folder and against S3 (moto_server)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest

from pfactory.materialiser.adapters.gx import GxPartitionValidator
from pfactory.materialiser.adapters.partitions import LocalPartitionStore, S3PartitionStore, StepHook
from pfactory.materialiser.adapters.spark import LocalSparkEngine
from pfactory.materialiser.service import Materialiser, partition_key
from pfactory.materialiser.storage import (
    FAILED_MARKER,
    GOOD_MARKER,
    PartitionContent,
    PartitionKey,
    column_statistics,
)
from tests.workers.materialiser.conftest import DAYS, feature_set

KEY = PartitionKey("fs", "1", date(2024, 3, 1))


class Crash(BaseException):
    """Stands in for the process dying at a step."""


def content(rows: int, value: float = 1.0) -> PartitionContent:
    table = pa.table({"id": list(range(rows)), "x": [value] * rows})
    return PartitionContent(table, {"success": True}, column_statistics(table))


class PartitionStoreContract:
    """What every partition store guarantees; subclasses say how to build one."""

    def store(self, on_step: StepHook | None = None) -> LocalPartitionStore | S3PartitionStore:
        raise NotImplementedError

    def test_a_good_day_is_readable_with_its_marker_and_a_rerun_replaces_it(self) -> None:
        store = self.store()
        assert store.good_marker(KEY) is None
        uri = store.write_good(KEY, content(3), {"rows": 3}, "run-1")
        assert uri == store.partition_uri(KEY) and uri.endswith(
            "features/feature_set=fs/version=1/ds=2024-03-01"
        )
        assert store.good_marker(KEY) == {"rows": 3}
        store.write_good(KEY, content(2, 9.0), {"rows": 2}, "run-2")
        table = store.read_table(KEY)
        assert table.num_rows == 2 and table.column("x").to_pylist() == [9.0, 9.0]
        assert store.good_marker(KEY) == {"rows": 2}
        assert store.read_json(KEY, "_stats.json") == column_statistics(table)

    def test_quarantine_withdraws_the_good_day_and_keeps_the_rejected_rows(self) -> None:
        store = self.store()
        store.write_good(KEY, content(3), {"rows": 3}, "run-1")
        uri = store.write_quarantine(KEY, content(4, -1.0), {"reason": "bad"}, "run-2")
        assert uri.endswith("quarantine/feature_set=fs/version=1/ds=2024-03-01")
        assert store.good_marker(KEY) is None
        with pytest.raises(LookupError):
            store.read_table(KEY)
        failed = store.read_json(KEY, FAILED_MARKER)
        assert failed == {"reason": "bad", "quarantine_uri": uri}
        assert store.read_json(KEY, "_validation.json", quarantine=True) == {"success": True}
        # a later good run makes the day good again, with no trace of the failure in its folder
        store.write_good(KEY, content(1), {"rows": 1}, "run-3")
        assert store.good_marker(KEY) == {"rows": 1} and store.read_json(KEY, FAILED_MARKER) is None

    def test_a_crash_while_staging_leaves_the_published_day_intact(self) -> None:
        self.store().write_good(KEY, content(3), {"rows": 3}, "run-1")

        def crash(step: str) -> None:
            if step == "staged":
                raise Crash(step)

        with pytest.raises(Crash):
            self.store(on_step=crash).write_good(KEY, content(5, 2.0), {"rows": 5}, "run-2")
        store = self.store()
        assert store.good_marker(KEY) == {"rows": 3}
        assert store.read_table(KEY).num_rows == 3

    def test_a_crash_before_the_marker_leaves_no_day_that_readers_trust(self) -> None:
        self.store().write_good(KEY, content(3), {"rows": 3}, "run-1")

        def crash(step: str) -> None:
            if step == "published":
                raise Crash(step)

        with pytest.raises(Crash):
            self.store(on_step=crash).write_good(KEY, content(5, 2.0), {"rows": 5}, "run-2")
        store = self.store()
        assert store.good_marker(KEY) is None
        with pytest.raises(LookupError):
            store.read_table(KEY)
        store.write_good(KEY, content(5, 2.0), {"rows": 5}, "run-3")
        assert store.read_table(KEY).num_rows == 5


class TestLocalPartitionStore(PartitionStoreContract):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path / "store"

    def store(self, on_step: StepHook | None = None) -> LocalPartitionStore:
        return LocalPartitionStore(self.root, on_step=on_step)


@pytest.mark.integration
class TestS3PartitionStore(PartitionStoreContract):
    @pytest.fixture(autouse=True)
    def _bucket(self, moto: str) -> None:
        self.endpoint = moto
        boto3.client("s3", endpoint_url=moto, region_name="eu-west-1").create_bucket(
            Bucket="features", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )

    def store(self, on_step: StepHook | None = None) -> S3PartitionStore:
        return S3PartitionStore(
            "s3://features/pf", endpoint_url=self.endpoint, region="eu-west-1", on_step=on_step
        )

    def keys(self) -> list[str]:
        listing: dict[str, Any] = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="eu-west-1"
        ).list_objects_v2(Bucket="features")
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def test_the_layout_in_the_bucket_and_nothing_left_in_staging(self) -> None:
        self.store().write_good(KEY, content(2), {"rows": 2}, "run-1")
        prefix = "pf/features/feature_set=fs/version=1/ds=2024-03-01/"
        assert self.keys() == [
            "pf/_staging/",  # pyarrow's empty folder object, nothing in it
            f"{prefix}{GOOD_MARKER}",
            f"{prefix}_stats.json",
            f"{prefix}_validation.json",
            f"{prefix}part-0.parquet",
        ]

    def test_a_day_materialises_from_spark_into_s3(
        self, spark_engine: LocalSparkEngine, gx_validator: GxPartitionValidator, raw_root: Path
    ) -> None:
        config = feature_set()
        materialiser = Materialiser(spark_engine, self.store(), gx_validator, data_root=str(raw_root))
        results = list(materialiser.materialise_range(config, DAYS[0], DAYS[1]))
        assert [(r.status, r.rows) for r in results] == [("good", 3), ("good", 2)]
        assert results[0].uri == f"s3://features/pf/{partition_key(config, DAYS[0]).path()}"
        assert self.store().read_table(partition_key(config, DAYS[1])).num_rows == 2
        again = list(materialiser.materialise_range(config, DAYS[0], DAYS[1]))
        assert [r.skipped for r in again] == [True, True]
