"""Scoring one day in-process: the predictions file, labels, drift, atomic replacement and flat memory."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from pfactory.registry.loading import LoadedModel, VersionLoader
from pfactory.registry.wiring import RegistrySettings, build_registry
from pfactory.scorer.batch import PREDICTIONS_FILE, ScoringInputError, Store, score_day
from pfactory.scorer.labels import DayLabels
from tests.libs.features.partitions import PartitionWriter
from tests.workers.scorer.credit_model import MODEL_NAME, CreditModel, day_labels, fit_and_register
from tests.workers.trainer.credit_data import FEATURE_SET, write_credit_store

START = dt.date(2024, 1, 1)
DAYS = 3
BIG_DAY = dt.date(2024, 2, 1)


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CreditModel]:
    root = tmp_path_factory.mktemp("credit")
    raw, store = write_credit_store(root, start=START, days=DAYS, applicants_per_day=400)
    return raw, store, fit_and_register(raw, store, root / "registry", START, DAYS)


async def _loaded(model: CreditModel) -> LoadedModel:
    registry = await build_registry(RegistrySettings(data_dir=model.registry_dir))
    try:
        loader = VersionLoader(registry.index, registry.artifacts)  # type: ignore[arg-type]
        return await loader.load(await loader.resolve(MODEL_NAME, feature_set=None, version=None, alias=None))
    finally:
        await registry.close()


def _day_file(store: Path, ds: dt.date) -> Path:
    return store / f"predictions/model={MODEL_NAME}/version=1/ds={ds.isoformat()}" / PREDICTIONS_FILE


async def test_a_day_is_scored_with_keys_scores_labels_and_a_drift_report(
    credit: tuple[Path, Path, CreditModel],
) -> None:
    raw, store, model = credit
    loaded = await _loaded(model)
    ds = START + dt.timedelta(days=1)

    scored = score_day(loaded, ds, Store(str(store)), batch_rows=64)

    written = pq.read_table(_day_file(store, ds)).to_pandas()
    assert scored.rows == len(written) == 400
    assert scored.predictions_uri == f"{store.as_uri()}/predictions/model={MODEL_NAME}/version=1/ds={ds}"
    assert list(written.columns) == ["applicant_id", "score", "label", "version", "ds"]
    assert written["score"].between(0, 1).all() and written["score"].nunique() > 100
    assert (written["version"] == 1).all() and (written["ds"] == ds).all()
    expected = day_labels(raw, ds).set_index("applicant_id")["defaulted_12m"]
    assert (
        written.set_index("applicant_id")["label"]
        .astype(int)
        .equals(expected.loc[written["applicant_id"]].astype(int).rename("label"))
    )
    assert scored.drift is not None and scored.drift["rows"] == 400
    assert set(scored.drift["features"]) == set(loaded.feature_names)
    assert scored.drift["score"] is not None and scored.drift["drifted"] == []

    again = score_day(loaded, ds, Store(str(store)), batch_rows=1000)
    assert again.rows == 400
    assert sorted(p.name for p in _day_file(store, ds).parent.iterdir()) == [PREDICTIONS_FILE]
    assert pq.read_table(_day_file(store, ds)).num_rows == 400


async def test_an_unvalidated_day_is_refused_with_the_command_that_fixes_it(
    credit: tuple[Path, Path, CreditModel],
) -> None:
    _, store, model = credit
    loaded = await _loaded(model)
    with pytest.raises(ScoringInputError, match=r"is missing \(no _SUCCESS marker\).*pfactory submit"):
        score_day(loaded, dt.date(2030, 1, 1), Store(str(store)), batch_rows=64)
    table = pq.read_table(store / f"features/feature_set={FEATURE_SET}/version=1/ds={START}/part-0.parquet")
    failed_day = dt.date(2030, 1, 2)
    PartitionWriter(fs.LocalFileSystem(), str(store), feature_set=FEATURE_SET, version="1").failed(
        failed_day, table
    )
    with pytest.raises(ScoringInputError, match="is a failed validation"):
        score_day(loaded, failed_day, Store(str(store)), batch_rows=64)
    assert not _day_file(store, failed_day).exists()


async def test_memory_stays_flat_in_the_size_of_the_day(credit: tuple[Path, Path, CreditModel]) -> None:
    _, store, model = credit
    loaded = await _loaded(model)
    day = pq.read_table(store / f"features/feature_set={FEATURE_SET}/version=1/ds={START}/part-0.parquet")
    big = pa.concat_tables([day] * 150)  # 60,000 rows
    ids = pa.array([f"a{n}" for n in range(big.num_rows)])
    big = big.set_column(big.column_names.index("applicant_id"), "applicant_id", ids)
    PartitionWriter(fs.LocalFileSystem(), str(store), feature_set=FEATURE_SET, version="1").good(BIG_DAY, big)

    def peak(batch_rows: int) -> int:
        tracemalloc.start()
        try:
            score_day(loaded, BIG_DAY, Store(str(store)), batch_rows=batch_rows)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, streamed = peak(big.num_rows), peak(1_000)
    # one batch of 1,000 rows holds a sixtieth of the data: the peak must be a small part of the whole day's
    assert streamed < whole / 5, (streamed, whole)
    assert pq.read_table(_day_file(store, BIG_DAY)).num_rows == big.num_rows
    assert np.isfinite(pd.read_parquet(_day_file(store, BIG_DAY))["score"]).all()


def test_labels_are_looked_up_by_every_key_column_and_the_last_written_wins() -> None:
    table = pa.table(
        {
            "region": ["eu", "eu", "us", "eu"],
            "id": pa.array([1, 2, 1, 1], pa.int64()),
            "label": pa.array([0, 1, 1, 7], pa.int64()),  # ("eu", 1) was written twice: 7 is the newer
        }
    )
    labels = DayLabels(table, ["region", "id"])
    keys = pa.record_batch(
        [pa.array(["us", "eu", "eu", "us"]), pa.array([1, 1, 3, 2], pa.int64())], names=["region", "id"]
    )

    found = labels.of(keys)

    assert found.type == pa.int64()  # no float round trip for the unknown rows
    assert found.to_pylist() == [1, 7, None, None]
    single = DayLabels(table.filter(pc.equal(table["region"], "eu")).drop_columns(["region"]), ["id"])
    assert single.of(keys.select(["id"])).to_pylist() == [7, 7, None, 1]
