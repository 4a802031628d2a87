"""A real credit model for the scorer tests: fitted on the example features, committed live with its reference."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pfactory.features.drift import build_reference
from pfactory.features.reader import FeatureReader
from pfactory.registry.loading import LoaderIndex
from pfactory.registry.model import ModelVersion, PairKey
from pfactory.registry.wiring import RegistrySettings, build_registry
from tests.workers.scorer.registered import commit_version
from tests.workers.trainer.credit_data import FEATURE_SET, credit_config

MODEL_NAME = "credit-default"
PAIR = PairKey.of(MODEL_NAME, FEATURE_SET, "1")
NUMERIC = ["age", "income", "debt_to_income", "utilisation", "n_open_accounts", "n_late_payments_90d"]
NOT_INPUTS = {"applicant_id", "event_ts", "ds"}


@dataclass(frozen=True)
class CreditModel:
    """The committed version and what the tests compare against."""

    record: ModelVersion
    registry_dir: Path
    config: dict[str, Any]


def training_frame(store: Path, start: dt.date, days: int) -> pd.DataFrame:
    """The feature rows of ``days`` days from ``start``."""
    reader = FeatureReader(str(store))
    table = reader.read(FEATURE_SET, "1", [start + dt.timedelta(days=n) for n in range(days)])
    return table.to_pandas()


def day_labels(raw: Path, ds: dt.date) -> pd.DataFrame:
    """The generator's labels of one day (applicant_id, defaulted_12m)."""
    labels = pd.read_parquet(raw / "labels" / f"part-{ds.isoformat()}.parquet")
    return labels[["applicant_id", "defaulted_12m"]]


def fit_and_register(raw: Path, store: Path, registry_dir: Path, start: dt.date, days: int) -> CreditModel:
    """Fit a small pipeline on the labelled days and commit it live, with a reference of its inputs."""
    features = training_frame(store, start, days)
    labels = pd.concat([day_labels(raw, start + dt.timedelta(days=n)) for n in range(days)])
    rows = features.merge(labels, on="applicant_id")
    inputs = rows[[c for c in features.columns if c not in NOT_INPUTS]]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["employment_status"]),
                    ]
                ),
            ),
            ("estimator", LogisticRegression(max_iter=200)),
        ]
    ).fit(inputs, rows["defaulted_12m"])
    reference = build_reference(inputs, pipeline.predict_proba(inputs)[:, 1])
    config = credit_config(raw, start=start, end=start + dt.timedelta(days=days - 1))

    async def commit() -> ModelVersion:
        registry = await build_registry(RegistrySettings(data_dir=registry_dir))
        try:
            index: LoaderIndex = registry.index  # type: ignore[assignment]
            return await commit_version(
                index, registry.artifacts, PAIR, pipeline, reference=reference, config=config, live=True
            )
        finally:
            await registry.close()

    return CreditModel(asyncio.run(commit()), registry_dir, config)
