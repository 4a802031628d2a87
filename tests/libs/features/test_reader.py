"""``FeatureReader`` against a local folder and against S3 (moto_server), one contract suite for both."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import fs

from pfactory.features import GOOD_MARKER, FeatureReader
from tests.libs.features.partitions import PartitionWriter

D1, D2, D3, D4, D5 = (date(2024, 3, 1) + timedelta(days=n) for n in range(5))


def rows(ids: list[str], x: float, kind: pa.DataType = pa.int64()) -> pa.Table:
    return pa.table({"entity": ids, "x": [x] * len(ids), "n": pa.array(range(len(ids)), kind)})


class ReaderContract:
    """What a reader guarantees over any store; subclasses provide the store root and a writer."""

    root: str
    writer: PartitionWriter

    def reader(self) -> FeatureReader:
        raise NotImplementedError

    def test_only_days_with_a_success_marker_are_good(self) -> None:
        marker = self.writer.good(D1, rows(["a", "b"], 1.0))
        self.writer.failed(D2, rows(["a"], -1.0))
        self.writer.unmarked(D3, rows(["a"], 3.0))  # writer died before _SUCCESS
        self.writer.good(D4, rows(["c"], 4.0))
        reader = self.reader()
        good = reader.good_days("fs", "1", D1, D5)
        assert [g.ds for g in good] == [D1, D4]
        assert good[0].marker == marker and good[0].marker["rows"] == 2
        assert good[0].uri == f"{self.root}/features/feature_set=fs/version=1/ds=2024-03-01"
        assert [reader.status("fs", "1", d) for d in (D1, D2, D3, D4, D5)] == [
            "good",
            "failed",
            "missing",
            "good",
            "missing",
        ]
        assert [(s.ds, s.status) for s in reader.statuses("fs", "1", D2, D5)] == [
            (D2, "failed"),
            (D3, "missing"),
            (D4, "good"),
            (D5, "missing"),
        ]

    def test_good_days_expose_the_join_columns_their_markers_record(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0), entity=["entity"], timestamp="event_ts")
        self.writer.good(D2, rows(["a"], 2.0))  # written before markers recorded them
        new, old = self.reader().good_days("fs", "1", D1, D2)
        assert (new.entity, new.timestamp) == (("entity",), "event_ts")
        assert (old.entity, old.timestamp) == (None, None)

    def test_a_marker_with_a_malformed_timestamp_or_entity_is_refused(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0), timestamp=["event_ts"])
        with pytest.raises(ValueError, match=r"ds=2024-03-01/_SUCCESS records timestamp \['event_ts'\]"):
            self.reader().good_days("fs", "1", D1, D1)
        self.writer.good(D1, rows(["a"], 1.0), entity="entity")
        with pytest.raises(ValueError, match=r"records entity 'entity', not a list of column names"):
            self.reader().good_days("fs", "1", D1, D1)

    def test_good_days_respects_the_range_and_never_opens_days_outside_it(self) -> None:
        self.writer.good(D2, rows(["a"], 2.0))
        self.writer.good(D3, rows(["a"], 3.0))
        # a corrupt marker outside the range would raise if it were opened
        self.writer.raw(D1, GOOD_MARKER, b"{not json")
        self.writer.raw(D5, GOOD_MARKER, b"{not json")
        assert [g.ds for g in self.reader().good_days("fs", "1", D2, D4)] == [D2, D3]
        with pytest.raises(ValueError, match="not valid JSON"):
            self.reader().good_days("fs", "1", D1, D2)

    def test_an_unknown_feature_set_or_version_has_no_good_days(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0))
        reader = self.reader()
        assert reader.good_days("fs", "2", D1, D5) == []
        assert reader.good_days("other", "1", D1, D5) == []
        assert {s.status for s in reader.statuses("other", "1", D1, D5)} == {"missing"}

    def test_read_concatenates_days_in_date_order_with_a_ds_column(self) -> None:
        self.writer.good(D3, rows(["c"], 3.0, pa.int64()))
        self.writer.good(D1, rows(["a", "b"], 1.0, pa.int32()))  # narrower type on one day
        table = self.reader().read("fs", "1", [D3, D1])
        assert table.schema.field("ds").type == pa.date32()
        assert table.schema.field("n").type == pa.int64()
        assert table.column("ds").to_pylist() == [D1, D1, D3]
        assert table.column("entity").to_pylist() == ["a", "b", "c"]
        assert table.column("x").to_pylist() == [1.0, 1.0, 3.0]
        picked = self.reader().read("fs", "1", [D1], columns=["x"])
        assert picked.column_names == ["x", "ds"]

    def test_read_refuses_a_day_that_is_not_good(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0))
        self.writer.failed(D2, rows(["a"], -1.0))
        self.writer.unmarked(D3, rows(["a"], 3.0))
        with pytest.raises(LookupError, match=r"2024-03-02 \(failed\), 2024-03-03 \(missing\)"):
            self.reader().read("fs", "1", [D1, D2, D3])

    def test_read_names_a_column_the_day_lacks(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0))
        with pytest.raises(ValueError, match=r"ds=2024-03-01/part-0.parquet has no column\(s\) \['nope'\]"):
            self.reader().read("fs", "1", [D1], columns=["x", "nope"])

    def test_reading_no_days_gives_an_empty_table(self) -> None:
        table = self.reader().read("fs", "1", [])
        assert table.num_rows == 0 and table.column_names == ["ds"]


class TestLocalFeatureReader(ReaderContract):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> None:
        base = tmp_path / "store"
        self.root = base.as_uri()
        self.writer = PartitionWriter(fs.LocalFileSystem(), str(base))
        self._base = base

    def reader(self) -> FeatureReader:
        return FeatureReader(str(self._base))

    def test_a_file_uri_root_reads_the_same_store(self) -> None:
        self.writer.good(D1, rows(["a"], 1.0))
        assert [g.uri for g in FeatureReader(self.root).good_days("fs", "1", D1, D1)] == [
            f"{self.root}/features/feature_set=fs/version=1/ds=2024-03-01"
        ]


@pytest.mark.integration
class TestS3FeatureReader(ReaderContract):
    @pytest.fixture(autouse=True)
    def _store(self, moto: str) -> None:
        self.endpoint = moto
        s3 = fs.S3FileSystem(
            endpoint_override=moto.removeprefix("http://"),
            scheme="http",
            region="eu-west-1",
            allow_bucket_creation=True,
        )
        s3.create_dir("features-bucket")
        self.root = "s3://features-bucket/pf"
        self.writer = PartitionWriter(s3, "features-bucket/pf")

    def reader(self) -> FeatureReader:
        return FeatureReader(self.root, endpoint_url=self.endpoint, region="eu-west-1")


def test_the_materialisers_own_store_is_read_the_same_way(tmp_path: Path) -> None:
    """Guards the shared layout: what ``LocalPartitionStore`` publishes, the reader trusts."""
    from pfactory.materialiser.adapters.partitions import LocalPartitionStore
    from pfactory.materialiser.storage import PartitionContent, PartitionKey, column_statistics

    store = LocalPartitionStore(tmp_path)
    table = rows(["a", "b"], 1.0)
    uri = store.write_good(
        PartitionKey("fs", "1", D1),
        PartitionContent(table, {"success": True}, column_statistics(table)),
        {"rows": 2, "config_hash": "h"},
        "run-1",
    )
    store.write_quarantine(
        PartitionKey("fs", "1", D2),
        PartitionContent(table, {"success": False}, column_statistics(table)),
        {"reason": "bad"},
        "run-2",
    )
    reader = FeatureReader(str(tmp_path))
    [good] = reader.good_days("fs", "1", D1, D3)
    assert (good.ds, good.uri, good.marker) == (D1, uri, {"rows": 2, "config_hash": "h"})
    assert reader.status("fs", "1", D2) == "failed"
    assert reader.read("fs", "1", [D1]).column("entity").to_pylist() == ["a", "b"]
