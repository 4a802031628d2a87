"""The example credit features for trainer tests, computed with pandas instead of Spark.

The columns and formulas follow ``examples/credit_features.yaml`` (the materialiser's SQL); the
partitions are written in the materialiser's layout with ``_SUCCESS`` markers, so the trainer reads
them exactly as it reads real ones. Tests that need the SQL itself run the real materialiser.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pyarrow import fs

from tests.libs.features.partitions import PartitionWriter

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FEATURE_SET = "credit-features"


def generator() -> ModuleType:
    """``examples/credit/generate_data.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        "credit_generate_data", EXAMPLES / "credit" / "generate_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _age_band(age: pd.Series) -> pd.Series:
    return pd.Series(
        np.select([age < 25, age < 40, age < 60], ["18-24", "25-39", "40-59"], default="60+"), index=age.index
    )


def credit_features(raw: Path, ds: dt.date) -> pa.Table:
    """One day's ``credit_features`` rows from the generator's raw files."""
    day = f"ds={ds.isoformat()}"
    applicants = pd.read_parquet(raw / "applicants" / day / "part-0.parquet")
    bureau = pd.read_csv(raw / "bureau" / day / "part-0.csv", dtype={"applicant_id": str})
    payments = pd.read_parquet(raw / "transactions" / day / "part-0.parquet")
    summary = bureau.groupby("applicant_id").agg(balance=("balance", "sum"), limit=("credit_limit", "sum"))
    summary["utilisation"] = summary["balance"] / summary["limit"].replace(0, np.nan)
    summary["n_open_accounts"] = bureau.groupby("applicant_id").size()
    late = (
        payments[payments["days_past_due"] > 30].groupby("applicant_id").size().rename("n_late_payments_90d")
    )
    frame = applicants.assign(
        event_ts=pd.Timestamp(ds),
        age_band=lambda f: _age_band(f["age"]),
        income=lambda f: f["annual_income"].astype(float),
        debt_to_income=lambda f: f["monthly_debt_payments"] * 12 / f["annual_income"].replace(0, np.nan),
    )
    frame = frame.join(summary[["utilisation", "n_open_accounts"]], on="applicant_id").join(
        late, on="applicant_id"
    )
    frame["utilisation"] = frame["utilisation"].fillna(0.0)
    frame["n_open_accounts"] = frame["n_open_accounts"].fillna(0).astype("int32")
    frame["n_late_payments_90d"] = frame["n_late_payments_90d"].fillna(0).astype("int64")
    columns = [
        "applicant_id", "event_ts", "age", "age_band", "gender", "income", "debt_to_income",
        "months_at_address", "employment_status", "utilisation", "n_open_accounts", "n_late_payments_90d",
    ]  # fmt: skip
    return pa.Table.from_pandas(frame[columns], preserve_index=False)


def write_credit_store(
    root: Path, *, start: dt.date, days: int, applicants_per_day: int, seed: int = 7
) -> tuple[Path, Path]:
    """Generate raw data under ``root/raw`` and validated feature partitions under ``root/store``.

    Returns:
        ``(raw folder, store root)``.
    """
    raw, store = root / "raw", root / "store"
    generator().generate(raw, start, days, applicants_per_day, seed, progress_every=0)
    writer = PartitionWriter(fs.LocalFileSystem(), str(store), feature_set=FEATURE_SET, version="1")
    for offset in range(days):
        ds = start + dt.timedelta(days=offset)
        writer.good(ds, credit_features(raw, ds), entity=["applicant_id"], timestamp="event_ts")
    return raw, store


def credit_config(
    raw: Path, *, start: dt.date, end: dt.date, example: str = "credit_model.yaml", **spec: Any
) -> dict[str, Any]:
    """The example model config reading ``raw/labels`` over ``start..end``, with ``spec`` overrides."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    config["spec"]["labels"]["path"] = str(raw / "labels")
    config["spec"]["training"]["window"] = {"start": start.isoformat(), "end": end.isoformat()}
    for key, value in spec.items():
        config["spec"][key] = value
    return json.loads(json.dumps(config, default=str))
