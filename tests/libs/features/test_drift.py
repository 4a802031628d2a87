"""Reference distributions and population stability: stable data reads ~0, shifted data is flagged."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pfactory.features.drift import (
    PSI_EPSILON,
    DriftAccumulator,
    _bin_counts,
    build_reference,
    drift_report,
    psi,
)


def _frame(n: int, seed: int, *, income_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5 + income_shift, 0.5, n)
    income[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "income": income,
            "n_late": rng.poisson(0.4, n).astype("int64"),
            "status": rng.choice(["employed", "self_employed", "student", None], n, p=[0.7, 0.15, 0.1, 0.05]),
            "has_file": rng.random(n) < 0.9,
            "applied_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 86_400 * 30, n), unit="s"),
            "constant": np.full(n, 3.0),
        }
    )


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return _frame(20_000, seed=1)


@pytest.fixture(scope="module")
def reference(training: pd.DataFrame) -> dict[str, object]:
    scores = np.random.default_rng(2).beta(2, 8, len(training))
    return build_reference(training, scores)


def test_the_reference_describes_every_column(reference: dict, training: pd.DataFrame) -> None:
    features = reference["features"]
    assert reference["version"] == 1 and reference["rows"] == 20_000
    assert {name: entry["kind"] for name, entry in features.items()} == {
        "income": "numeric",
        "n_late": "numeric",
        "status": "categorical",
        "has_file": "boolean",
        "applied_at": "datetime",
        "constant": "numeric",
    }
    income = features["income"]
    assert income["null_fraction"] == pytest.approx(training["income"].isna().mean())
    assert len(income["edges"]) == 11 and income["edges"][0] is None and income["edges"][-1] is None
    assert income["proportions"] == pytest.approx([(1 - income["null_fraction"]) / 10] * 10, abs=1e-3)
    assert sum(income["proportions"]) + income["null_fraction"] == pytest.approx(1.0)
    # quantile edges of a count with few values collapse; no empty duplicate bins
    assert len(features["n_late"]["edges"]) < 11
    assert features["has_file"]["edges"] == [None, 0.5, None]
    assert features["has_file"]["proportions"][1] == pytest.approx(training["has_file"].mean())
    status = features["status"]
    assert set(status["categories"]) == {"employed", "self_employed", "student"}
    assert sum(status["categories"].values()) + status["other"] + status["null_fraction"] == pytest.approx(
        1.0
    )
    assert reference["score"]["kind"] == "numeric"
    assert reference["signature"][0] == {"name": "income", "dtype": "float64", "nullable": True}
    assert {s["name"]: s["nullable"] for s in reference["signature"]}["n_late"] is False


def test_the_reference_is_strict_json(reference: dict) -> None:
    text = json.dumps(reference, allow_nan=False)  # no NaN or infinity anywhere
    again = json.loads(text)
    assert again == reference
    # the round-tripped document computes the same PSI as the original
    fresh = _frame(5000, seed=9)
    for name in fresh.columns:
        assert psi(again["features"][name], fresh[name]) == psi(reference["features"][name], fresh[name])


def test_a_sample_against_its_own_reference_is_stable(reference: dict, training: pd.DataFrame) -> None:
    for name in training.columns:
        assert psi(reference["features"][name], training[name]) == pytest.approx(0.0, abs=1e-12), name
    fresh = _frame(20_000, seed=3)  # same distribution, other rows
    for name in fresh.columns:
        assert psi(reference["features"][name], fresh[name]) < 0.01, name


def test_a_shifted_distribution_is_flagged(reference: dict) -> None:
    shifted = _frame(5000, seed=4, income_shift=0.6)
    value = psi(reference["features"]["income"], shifted["income"])
    assert value > 0.2
    more_nulls = shifted["income"].mask(np.arange(5000) % 2 == 0)  # half the rows lose their income
    assert psi(reference["features"]["income"], more_nulls) > value


def test_new_categories_count_as_other(reference: dict) -> None:
    entry = reference["features"]["status"]
    assert entry["other"] == 0.0
    unseen = pd.Series(["employed"] * 70 + ["retired"] * 30)  # "retired" never occurred in training
    e_other = PSI_EPSILON  # the empty bucket is floored, so the PSI is large but finite
    expected_other_term = (0.3 - e_other) * np.log(0.3 / e_other)
    value = psi(entry, unseen)
    assert np.isfinite(value) and value > expected_other_term  # plus the shrunk known categories


def test_categories_beyond_the_limit_fold_into_other() -> None:
    frame = pd.DataFrame({"city": [f"c{i % 80}" for i in range(8000)]})
    entry = build_reference(frame, None, max_categories=50)["features"]["city"]
    assert len(entry["categories"]) == 50
    assert entry["other"] == pytest.approx(30 / 80)
    assert psi(entry, frame["city"]) == pytest.approx(0.0, abs=1e-12)


def test_a_constant_column_notices_a_value_above_or_below(reference: dict) -> None:
    entry = reference["features"]["constant"]
    assert psi(entry, pd.Series(np.full(100, 3.0))) == pytest.approx(0.0, abs=1e-12)
    assert psi(entry, pd.Series(np.full(100, 4.0))) > 1.0
    assert psi(entry, pd.Series(np.full(100, 2.0))) > 1.0


def test_drift_report_ranks_drifted_features_and_checks_the_score(reference: dict) -> None:
    shifted = _frame(5000, seed=5, income_shift=0.6)
    shifted["status"] = "student"
    shifted = shifted.drop(columns=["constant"])
    scores = np.random.default_rng(6).beta(5, 5, 5000)  # the model now scores much higher
    report = drift_report(reference, shifted, scores, threshold=0.2)
    assert report["drifted"] == sorted(["income", "status"], key=lambda n: -report["features"][n])
    assert report["features"]["n_late"] < 0.2
    assert report["missing"] == ["constant"]
    assert report["score"] > 0.2 and report["score_drifted"] is True
    json.dumps(report, allow_nan=False)
    calm = drift_report(reference, _frame(5000, seed=7), np.random.default_rng(8).beta(2, 8, 5000), 0.2)
    assert calm["drifted"] == [] and calm["score_drifted"] is False


def test_an_old_reference_version_is_refused_with_advice(reference: dict) -> None:
    with pytest.raises(ValueError, match="retrain the model"):
        drift_report({**reference, "version": 0}, _frame(10, seed=1), None, 0.2)


def _accumulated(reference: dict, frame: pd.DataFrame, scores: np.ndarray, batch: int) -> dict:
    accumulator = DriftAccumulator(reference)
    for start in range(0, len(frame), batch):
        accumulator.add(frame.iloc[start : start + batch], scores[start : start + batch])
    return accumulator.report(0.2)


@pytest.mark.parametrize("income_shift", [0.0, 0.8])
def test_streaming_batches_give_the_report_of_the_whole_data(reference: dict, income_shift: float) -> None:
    fresh = _frame(7_001, seed=11, income_shift=income_shift).drop(columns=["constant"])
    scores = np.random.default_rng(12).beta(2, 6, len(fresh))
    whole = drift_report(reference, fresh, scores, 0.2)

    streamed = _accumulated(reference, fresh, scores, batch=500)

    # counts are exact, so numeric buckets match bit for bit; unseen categories are summed as
    # counts rather than shares, which may differ in the last bit
    assert streamed.keys() == whole.keys()
    assert streamed["features"] == pytest.approx(whole["features"], rel=1e-12, abs=1e-15)
    assert streamed["features"]["income"] == whole["features"]["income"]
    assert streamed["score"] == pytest.approx(whole["score"], rel=1e-12)
    for key in ("rows", "drifted", "missing", "score_drifted", "threshold"):
        assert streamed[key] == whole[key]
    assert streamed["missing"] == ["constant"]
    assert ("income" in streamed["drifted"]) is (income_shift > 0)


def test_an_accumulator_with_no_rows_refuses_to_report(reference: dict) -> None:
    with pytest.raises(ValueError, match="no rows"):
        DriftAccumulator(reference).report(0.2)
    with pytest.raises(ValueError, match="retrain"):
        DriftAccumulator({**reference, "version": 99})


def test_bins_are_those_of_a_binary_search_on_the_edges_too() -> None:
    # values on, just below and just above every edge, the open ends and nulls: the vectorised
    # counting must bin each exactly as searchsorted(side="right") does (edge i opens bin i + 1)
    inner = np.array([-1.5, 0.0, 0.25, 3.0, np.nextafter(3.0, np.inf)])
    around = [[np.nextafter(e, -np.inf), e, np.nextafter(e, np.inf)] for e in inner]
    values = np.array([*np.ravel(around), -np.inf, np.inf, np.nan, -0.0, 1e300, np.nan])
    values = np.concatenate([values, np.random.default_rng(21).normal(0, 2, 5000)])
    present = values[~np.isnan(values)]
    expected = np.bincount(np.searchsorted(inner, present, side="right"), minlength=inner.size + 1)

    counts, nulls = _bin_counts(values, inner)

    assert counts.tolist() == expected.tolist() and nulls == 2
    entry = {"kind": "numeric", "edges": [None, *inner.tolist(), None], "null_fraction": 0.01}
    entry["proportions"] = [0.99 / (inner.size + 1)] * (inner.size + 1)
    shares = np.append(expected / values.size, 2 / values.size)
    stored = np.maximum([*entry["proportions"], 0.01], PSI_EPSILON)
    oracle = float(
        np.sum((np.maximum(shares, PSI_EPSILON) - stored) * np.log(np.maximum(shares, PSI_EPSILON) / stored))
    )
    assert psi(entry, values) == oracle


def test_edges_out_of_order_are_refused_with_advice(reference: dict) -> None:
    entry = {**reference["features"]["income"]}
    entry["edges"] = [None, 5.0, 2.0, None]
    with pytest.raises(ValueError, match=r"not strictly increasing.*rebuild it"):
        psi(entry, pd.Series([1.0, 3.0]))
    with pytest.raises(ValueError, match="not strictly increasing"):
        DriftAccumulator({**reference, "features": {"income": entry}}).add(pd.DataFrame({"income": [1.0]}))


@pytest.mark.parametrize("as_arrow", [pa.Table.from_pandas, pa.RecordBatch.from_pandas])
def test_arrow_batches_count_as_their_pandas_rows(reference: dict, as_arrow: Any) -> None:
    fresh = _frame(6_003, seed=13, income_shift=0.3)  # float with nulls, int, strings, bool, timestamps
    fresh.loc[fresh.index % 7 == 0, "n_late"] = np.nan  # an int column with nulls reads as float
    scores = np.random.default_rng(14).beta(2, 7, len(fresh))
    whole = drift_report(reference, fresh, scores, 0.2)

    accumulator = DriftAccumulator(reference)
    for start in range(0, len(fresh), 1_000):
        rows = fresh.iloc[start : start + 1_000]
        accumulator.add(as_arrow(rows, preserve_index=False))  # rows first, as the scorer does
        accumulator.add_scores(scores[start : start + 1_000])
    streamed = accumulator.report(0.2)

    assert streamed["features"] == pytest.approx(whole["features"], rel=1e-12, abs=1e-15)
    for name in ("income", "n_late", "has_file", "applied_at", "constant"):
        assert streamed["features"][name] == whole["features"][name], name
    assert streamed["score"] == whole["score"] and streamed["rows"] == whole["rows"]


def test_scores_for_other_rows_than_were_added_are_refused(reference: dict) -> None:
    accumulator = DriftAccumulator(reference)
    accumulator.add(_frame(100, seed=15))
    accumulator.add_scores(np.full(99, 0.5))
    with pytest.raises(ValueError, match="scores were counted for 99 rows but 100 rows were added"):
        accumulator.report(0.2)
    with pytest.raises(ValueError, match="one number per row"):
        accumulator.add(_frame(10, seed=16), np.full((10, 2), 0.5))
