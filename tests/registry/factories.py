"""Builders of registry records for the tests."""

from __future__ import annotations

from typing import Any

from pfactory.registry.model import ArtifactInfo, Lineage, MetricValue, ModelVersion, PairKey

PAIR = PairKey.of("credit_default", "credit_features", "3")
OTHER_PAIR = PairKey.of("credit_limit", "credit_features", "4")


def make_version(pair: PairKey, version: int, key: str, **overrides: Any) -> ModelVersion:
    """A candidate version record as the registrar would commit it."""
    fields: dict[str, Any] = {
        "model_name": pair.model_name,
        "feature_set": pair.feature_set,
        "version": version,
        "allocation_key": key,
        "artifact": ArtifactInfo(
            uri=f"file:///registry/models/{pair}/version={version}/model.skops",
            sha256="a" * 64,
            size_bytes=1234,
        ),
        "framework": "scikit-learn",
        "library_versions": {"scikit-learn": "1.9.1", "skops": "0.16.0"},
        "config": {"kind": "Model", "metadata": {"name": pair.model_name}},
        "metrics": {"roc_auc": MetricValue(value=0.81, ci_low=0.78, ci_high=0.84)},
        "fairness": {"age_band": {"passed": True}},
        "gates": {"fairness": True, "validation": True},
        "reference_uri": f"file:///registry/models/{pair}/version={version}/reference.json",
        "lineage": Lineage(
            feature_set_version=pair.feature_set.version,
            partitions=["features/feature_set=credit_features/version=3/ds=2024-01-01"],
            label_source="defaults_table",
            row_counts={"train": 800, "test": 200},
            query_hashes={"applications": "b" * 64},
        ),
        "created_by": "registrar",
    }
    fields.update(overrides)
    return ModelVersion(**fields)
