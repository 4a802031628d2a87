"""A trained model as the trainer would hand it over: a real skops artifact staged, and its event."""

from __future__ import annotations

import copy
import functools
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from pfactory.contracts import load_config
from pfactory.contracts.events import FeatureSetRef, ModelTrained
from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.serialization import dump_model
from pfactory.registry.staging import stage_model

REPO = Path(__file__).resolve().parents[3]
MODEL_NAME = "credit-default"
FEATURE_SET = FeatureSetRef(name="credit-features", version="1")


@functools.cache
def model_bytes() -> bytes:
    """A tiny logistic regression on random data, serialised with skops."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, 4))
    labels = (features[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    return dump_model(LogisticRegression().fit(features, labels))


@functools.cache
def _example_config() -> dict[str, Any]:
    return load_config(REPO / "examples" / "credit_model.yaml").model_dump(mode="json", by_alias=True)


def example_config() -> dict[str, Any]:
    """The credit Model config as the loader dumps it (a fresh copy: tests may edit it)."""
    return copy.deepcopy(_example_config())


def good_metrics() -> dict[str, Any]:
    """Metrics that pass the example's threshold (roc_auc ≥ 0.7), with CIs and a calibration curve."""
    return {
        "roc_auc": {"value": 0.81, "ci_low": 0.78, "ci_high": 0.84},
        "pr_auc": {"value": 0.42, "ci": [0.37, 0.47]},
        "log_loss": 0.41,
        "brier_score": 0.12,
        "ks_statistic": 0.44,
        "calibration": {
            "ece": 0.021,
            "curve": [
                {"predicted": 0.1, "observed": 0.09, "count": 120},
                {"predicted": 0.5, "observed": 0.53, "count": 40},
            ],
        },
    }


def fair_report() -> dict[str, Any]:
    """Both protected attributes within the example's 0.1 gaps, with per-group rates."""
    return {
        "gender": {
            "demographic_parity_difference": 0.03,
            "equal_opportunity_difference": 0.05,
            "groups": {
                "F": {"count": 96, "selection_rate": 0.21, "tpr": 0.70, "fpr": 0.08},
                "M": {"count": 104, "selection_rate": 0.24, "tpr": 0.75, "fpr": 0.09},
            },
        },
        "age_band": {
            "demographic_parity_difference": 0.06,
            "equal_opportunity_difference": 0.04,
            "groups": {
                "18-30": {"count": 70, "selection_rate": 0.27},
                "31+": {"count": 130, "selection_rate": 0.21},
            },
        },
    }


async def trained_event(
    store: ArtifactStore, *, job_id: str | None = None, data: bytes | None = None, **overrides: Any
) -> ModelTrained:
    """Stage a model in ``store`` and describe it as ``ModelTrained`` (fields overridable)."""
    job_id = job_id or str(uuid.uuid4())
    staged = await stage_model(store, job_id, data if data is not None else model_bytes())
    fields: dict[str, Any] = {
        "job_id": job_id,
        "model_name": MODEL_NAME,
        "feature_set": FEATURE_SET,
        "artifact": staged,
        "config": example_config(),
        "metrics": good_metrics(),
        "fairness": fair_report(),
        "reference_uri": None,
        "lineage": {
            "partitions": ["features/feature_set=credit-features/version=1/ds=2024-06-30"],
            "label_source": "data/raw/labels/",
            "row_counts": {"train": 800, "test": 200, "positive": 90, "negative": 910},
            "query_hashes": {"applications": "c" * 64},
        },
        "framework": {"framework": "scikit-learn", "scikit-learn": "1.9.1", "skops": "0.16.0"},
    }
    fields.update(overrides)
    return ModelTrained(**fields)


def reference_document() -> dict[str, Any]:
    """Reference distributions as a trainer writes them: per-feature bins and the score's."""
    return {
        "features": {"income": {"kind": "numeric", "edges": [0, 1000, 5000], "counts": [40, 160]}},
        "score": {"edges": [0.0, 0.5, 1.0], "counts": [150, 50]},
    }


async def stage_reference(store: ArtifactStore, job_id: str, data: bytes | None = None) -> str:
    """Write ``staging/job=<job_id>/reference.json`` next to the staged model; return its URI."""
    content = data if data is not None else json.dumps(reference_document()).encode()
    stored = await store.put(f"staging/job={job_id}/reference.json", content)
    return stored.uri


def sweep_section() -> dict[str, Any]:
    """A 3-trial grid sweep with one failed trial, as the trainer reports it in ``metrics["sweep"]``."""
    return {
        "strategy": "grid",
        "selection": {"mode": "champion", "metric": "roc_auc", "k": None, "ensemble": None},
        "selected": ["trial-001"],
        "trials": [
            {
                "run_id": "trial-000",
                "params": {"estimator.C": 0.1},
                "metrics": {"roc_auc": {"value": 0.77, "ci_low": 0.74, "ci_high": 0.8}},
                "status": "succeeded",
                "reason": None,
                "duration_s": 0.8,
            },
            {
                "run_id": "trial-001",
                "params": {"estimator.C": 1.0},
                "metrics": {"roc_auc": {"value": 0.81, "ci_low": 0.78, "ci_high": 0.84}},
                "status": "succeeded",
                "reason": None,
                "duration_s": 0.9,
            },
            {
                "run_id": "trial-002",
                "params": {"estimator.C": 10.0},
                "metrics": {},
                "status": "failed",
                "reason": "the fit did not converge in 100 iterations",
                "duration_s": 2.5,
            },
        ],
    }
