"""The credit example's data generator: determinism, layout and schemas, ground truth and injected bias."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pfactory.contracts import load_config
from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.configs.model import ModelConfig
from tests.examples.conftest import EXAMPLES, GENERATOR, REPO

START = dt.date(2024, 1, 1)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def features() -> FeatureSetConfig:
    config = load_config(EXAMPLES / "credit_features.yaml")
    assert isinstance(config, FeatureSetConfig)
    return config


@pytest.fixture(scope="module")
def model() -> ModelConfig:
    config = load_config(EXAMPLES / "credit_model.yaml")
    assert isinstance(config, ModelConfig)
    return config


@pytest.fixture(scope="module")
def small(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Three days of 200 applicants, seed 7."""
    out = tmp_path_factory.mktemp("credit-small")
    return out, gen.generate(out, START, 3, 200, 7, progress_every=0)


@pytest.fixture(scope="module")
def large(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty days of 1,000 applicants: enough for the bias statistics."""
    out = tmp_path_factory.mktemp("credit-large")
    gen.generate(out, START, 20, 1000, 11, progress_every=0)
    return out


# ---------------------------------------------------------------- determinism


def test_same_seed_writes_identical_bytes(gen: ModuleType, small: tuple[Path, Any], tmp_path: Path) -> None:
    first, _ = small
    gen.generate(tmp_path, START, 3, 200, 7, progress_every=0)
    assert _hashes(tmp_path) == _hashes(first)


def test_different_seed_writes_different_data(
    gen: ModuleType, small: tuple[Path, Any], tmp_path: Path
) -> None:
    first, _ = small
    gen.generate(tmp_path, START, 3, 200, 8, progress_every=0)
    before, after = _hashes(first), _hashes(tmp_path)
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before), "every file must change with the seed"


def test_a_day_does_not_depend_on_the_range(gen: ModuleType, small: tuple[Path, Any], tmp_path: Path) -> None:
    """Days 1-3 in one run equal day 1 then days 2-3 in two runs (a backfill can be extended)."""
    first, _ = small
    gen.generate(tmp_path, START, 1, 200, 7, progress_every=0)
    gen.generate(tmp_path, START + dt.timedelta(days=1), 2, 200, 7, progress_every=0)
    data = {k: v for k, v in _hashes(tmp_path).items() if k != "ground_truth.json"}
    expected = {k: v for k, v in _hashes(first).items() if k != "ground_truth.json"}
    assert data == expected


def test_cli_matches_the_api_and_reports_progress(small: tuple[Path, Any], tmp_path: Path) -> None:
    first, _ = small
    run = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            *("--out", str(tmp_path), "--start", "2024-01-01", "--days", "3"),
            *("--applicants-per-day", "200", "--seed", "7", "--progress-every", "1"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    summary = json.loads(run.stdout)
    assert summary["applicants"] == 600
    assert summary["end"] == "2024-01-03"
    assert len(re.findall(r"^generated \d+/3 days", run.stderr, flags=re.M)) == 3
    assert _hashes(tmp_path) == _hashes(first)


def test_summary_lists_every_file(small: tuple[Path, Any]) -> None:
    out, summary = small
    assert summary.files == sorted(_hashes(out))
    assert summary.applicants == 600
    assert summary.bureau_rows > 600  # several accounts each, some none
    assert summary.seconds < 10


def test_bad_arguments_are_refused(gen: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        gen.generate(tmp_path, START, 0, 10, 1)
    with pytest.raises(ValueError, match="bias_rate"):
        gen.generate(tmp_path, START, 1, 10, 1, bias_rate=1.5)


# ---------------------------------------------------------------- layout and schemas


def test_source_paths_point_at_the_generated_partitions(
    gen: ModuleType, features: FeatureSetConfig, small: tuple[Path, Any]
) -> None:
    out, _ = small
    for name, source in features.spec.sources.items():
        assert source.partitioned_by == "ds"
        prefix = f"{gen.DEFAULT_OUT}/"
        assert source.path.startswith(prefix), f"{name}: {source.path} is not under {gen.DEFAULT_OUT}"
        for day in range(3):
            ds = (START + dt.timedelta(days=day)).isoformat()
            folder = out / re.sub(r"\{\{\s*ds\s*\}\}", ds, source.path.removeprefix(prefix))
            assert folder.name == f"ds={ds}"
            files = list(folder.iterdir())
            assert [f.suffix for f in files] == [f".{source.format}"], f"{name} {ds}: {files}"


def _source_columns(features: FeatureSetConfig) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {name: {features.spec.entity[0]} for name in features.spec.sources}
    for feature in features.spec.features:
        for qualified in feature.source_columns:
            source, column = qualified.split(".")
            wanted[source].add(column)
    return wanted


def test_files_hold_the_columns_the_feature_set_reads_and_no_ds(
    features: FeatureSetConfig, small: tuple[Path, Any]
) -> None:
    out, _ = small
    expected = {
        "applicants": {
            "applicant_id": pa.string(),
            "age": pa.int32(),
            "gender": pa.string(),
            "annual_income": pa.float64(),
            "monthly_debt_payments": pa.float64(),
            "months_at_address": pa.int32(),
            "employment_status": pa.string(),
        },
        "transactions": {"applicant_id": pa.string(), "days_past_due": pa.int32(), "amount": pa.float64()},
    }
    wanted = _source_columns(features)
    assert set(features.spec.entity) == {"applicant_id"}
    for name, source in features.spec.sources.items():
        for file in sorted((out / name).glob("ds=*/part-0.*")):
            if source.format == "parquet":
                schema = pq.read_schema(file)
                assert dict(zip(schema.names, schema.types, strict=True)) == expected[name]
                columns = set(schema.names)
            else:
                assert source.options.get("header") is True
                header = file.read_text().splitlines()[0].split(",")
                assert header == ["applicant_id", "balance", "credit_limit"]
                columns = set(header)
            assert "ds" not in columns, "ds comes from the partition folder, never from the file"
            assert wanted[name] <= columns, f"{file}: missing {wanted[name] - columns}"


def test_values_are_in_the_declared_ranges(small: tuple[Path, Any]) -> None:
    out, _ = small
    applicants = pads.dataset(out / "applicants", format="parquet", partitioning="hive").to_table()
    ids = applicants["applicant_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 600
    assert pc.min(applicants["age"]).as_py() >= 18 and pc.max(applicants["age"]).as_py() <= 90
    statuses = set(applicants["employment_status"].to_pylist())
    assert statuses <= {"employed", "self_employed", "unemployed", "retired", "student"}
    assert len(statuses) >= 4
    assert pc.min(applicants["annual_income"]).as_py() >= 0
    assert pc.min(applicants["monthly_debt_payments"]).as_py() >= 0
    assert 0 < applicants["gender"].null_count < 0.2 * 600
    assert pc.max(applicants["months_at_address"]).as_py() <= 1200
    bureau = pacsv.read_csv(out / "bureau" / "ds=2024-01-01" / "part-0.csv")
    assert pc.min(bureau["credit_limit"]).as_py() > 0
    assert pc.min(bureau["balance"]).as_py() >= 0
    day_ids = set(
        pq.read_table(out / "applicants" / "ds=2024-01-01" / "part-0.parquet")["applicant_id"].to_pylist()
    )
    with_file = set(bureau["applicant_id"].to_pylist())
    assert with_file < day_ids, "bureau rows belong to the day's applicants, and some have no bureau file"
    transactions = pq.read_table(out / "transactions" / "ds=2024-01-01" / "part-0.parquet")
    assert set(transactions["applicant_id"].to_pylist()) <= day_ids
    dpd = transactions["days_past_due"]
    assert pc.min(dpd).as_py() >= 0
    assert 0 < pc.sum(pc.greater(dpd, 30)).as_py() < len(dpd)


def test_labels_match_the_model_config(model: ModelConfig, small: tuple[Path, Any]) -> None:
    out, _ = small
    labels = model.spec.labels
    assert labels.path.rstrip("/") == "data/raw/labels"
    assert labels.format == "parquet"
    table = pads.dataset(out / "labels", format="parquet").to_table()
    assert table.schema.names == ["applicant_id", labels.date_column, labels.label_column]
    assert list(labels.entity) == ["applicant_id"]
    assert table.schema.field(labels.date_column).type == pa.date32()
    assert set(table[labels.label_column].to_pylist()) == {0, 1}
    assert labels.positive_class == 1
    applicants = pads.dataset(out / "applicants", format="parquet", partitioning="hive").to_table()
    by_id = dict(zip(applicants["applicant_id"].to_pylist(), applicants["ds"].to_pylist(), strict=True))
    label_dates = dict(
        zip(table["applicant_id"].to_pylist(), table[labels.date_column].to_pylist(), strict=True)
    )
    assert label_dates.keys() == by_id.keys()
    assert all(dt.date.fromisoformat(str(by_id[key])) == value for key, value in label_dates.items())
    window = model.spec.training.window
    assert window.start <= START <= window.end


# ---------------------------------------------------------------- ground truth and bias


def _features_from_raw(out: Path) -> dict[str, np.ndarray]:
    """The feature set's features recomputed from the raw files with numpy (no Spark)."""
    applicants = pads.dataset(out / "applicants", format="parquet", partitioning="hive").to_table()
    ids = applicants["applicant_id"].to_numpy(zero_copy_only=False)
    index = {key: i for i, key in enumerate(ids)}
    n = len(ids)
    bureau = pads.dataset(out / "bureau", format="csv", partitioning="hive").to_table()
    owner = np.array([index[key] for key in bureau["applicant_id"].to_pylist()])
    limits = np.bincount(owner, weights=bureau["credit_limit"].to_numpy(), minlength=n)
    balances = np.bincount(owner, weights=bureau["balance"].to_numpy(), minlength=n)
    transactions = pads.dataset(out / "transactions", format="parquet", partitioning="hive").to_table()
    payer = np.array([index[key] for key in transactions["applicant_id"].to_pylist()])
    late = np.bincount(payer, weights=transactions["days_past_due"].to_numpy() > 30, minlength=n)
    income = applicants["annual_income"].to_numpy()
    debt = applicants["monthly_debt_payments"].to_numpy()
    labels = pads.dataset(out / "labels", format="parquet").to_table()
    recorded = np.zeros(n)
    recorded[[index[key] for key in labels["applicant_id"].to_pylist()]] = labels["defaulted_12m"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        dti = np.where(income > 0, debt * 12 / income, np.nan)
    return {
        "age": applicants["age"].to_numpy(),
        "gender": applicants["gender"].to_numpy(zero_copy_only=False),
        "income": income,
        "debt_to_income": dti,
        "utilisation": np.divide(balances, limits, out=np.zeros(n), where=limits > 0),
        "n_late_payments_90d": late,
        "months_at_address": applicants["months_at_address"].to_numpy().astype(float),
        "recorded": recorded,
    }


def test_ground_truth_file_documents_the_function_and_the_bias(large: Path) -> None:
    truth = json.loads((large / "ground_truth.json").read_text())
    assert truth["seed"] == 11 and truth["days"] == 20 and truth["end"] == "2024-01-20"
    assert set(truth["ground_truth"]["coefficients"]) == {
        "intercept",
        "debt_to_income",
        "utilisation",
        "n_late_payments_90d",
        "log_income",
        "log_months_at_address",
    }
    bias = truth["bias"]
    assert (bias["attribute"], bias["group"], bias["rate"]) == ("age_band", "18-24", 0.5)
    assert bias["realised_flip_rate"] == pytest.approx(bias["rate"], abs=0.05)
    realised = truth["realised"]
    assert realised["overall"]["applicants"] == 20_000
    assert sum(band["applicants"] for band in realised["age_band"].values()) == 20_000
    for band, stats in realised["age_band"].items():
        if band != "18-24":  # outside the group nothing is flipped
            assert stats["recorded_default_rate"] == stats["true_default_rate"]


def test_labels_follow_the_documented_function_plus_the_injected_bias(gen: ModuleType, large: Path) -> None:
    """Recompute p from the raw files with the documented function; the recorded rates must agree."""
    truth = json.loads((large / "ground_truth.json").read_text())
    rate = truth["bias"]["rate"]
    data = _features_from_raw(large)
    p = gen.default_probability(
        data["debt_to_income"],
        data["utilisation"],
        data["n_late_payments_90d"],
        data["income"],
        data["months_at_address"],
        truth["ground_truth"]["coefficients"],
    )
    group = data["age"] < 25
    assert 0.06 < group.mean() < 0.15, "the protected group is a realistic minority"
    rest_rate = data["recorded"][~group].mean()
    group_rate = data["recorded"][group].mean()
    assert rest_rate == pytest.approx(p[~group].mean(), abs=0.015)
    expected_group_rate = (p[group] + rate * (1 - p[group])).mean()
    assert group_rate == pytest.approx(expected_group_rate, abs=0.04)
    # the label disparity (demographic parity of the labels) is the documented one, and large
    expected_gap = expected_group_rate - p[~group].mean()
    assert group_rate - rest_rate == pytest.approx(expected_gap, abs=0.045)
    assert group_rate - rest_rate > 0.3
    # without the bias the group would differ by little: the disparity is injected, not in the truth
    assert abs(p[group].mean() - p[~group].mean()) < 0.08
    # the ground truth ranks well (the model's roc_auc threshold, 0.7, is reachable)
    order = np.argsort(p[~group])
    positives = data["recorded"][~group][order]
    ranks = np.arange(1, positives.size + 1)
    auc = (ranks[positives == 1].sum() - positives.sum() * (positives.sum() + 1) / 2) / (
        positives.sum() * (positives.size - positives.sum())
    )
    assert auc > 0.72
    # gender is the unbiased control
    genders = data["gender"]
    for value in ("female", "male"):
        mask = genders == value
        assert data["recorded"][mask & ~group].mean() == pytest.approx(p[mask & ~group].mean(), abs=0.02)


def test_no_bias_when_the_rate_is_zero(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, START, 5, 1000, 11, bias_rate=0.0, progress_every=0)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    for stats in truth["realised"]["age_band"].values():
        assert stats["recorded_default_rate"] == stats["true_default_rate"]
    assert abs(truth["realised"]["recorded_rate_gap_group_vs_rest"]) < 0.1


def test_feature_checks_are_not_declared_twice(features: FeatureSetConfig) -> None:
    """``nullable: false`` already implies a not_null check; a second one is a duplicate expectation."""
    for feature in features.spec.features:
        kinds = [expectation.type for expectation in feature.expectations]
        assert len(kinds) == len(set(kinds)), f"{feature.name}: {kinds}"
        if not feature.nullable:
            assert "not_null" not in kinds, f"{feature.name}: not_null repeats nullable: false"
