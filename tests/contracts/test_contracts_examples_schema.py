"""The shipped examples load cleanly and agree with the exported JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from pfactory.contracts import (
    CONFIG_KINDS,
    ConfigError,
    FeatureSetConfig,
    ModelConfig,
    config_schema,
    config_schemas,
    export_schemas,
    load_config,
    load_config_dict,
)
from pfactory.contracts.configs import ColumnTransformerStep, Task
from tests.contracts.support import EXAMPLES


def _as_json(path: Path) -> Any:
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))


def test_feature_set_example_loads() -> None:
    config = load_config(EXAMPLES / "credit_features.yaml", expect=FeatureSetConfig)
    spec = config.spec
    assert config.metadata.name == "credit-features"
    assert spec.entity == ["applicant_id"]
    assert spec.output_model == "credit_features"
    assert set(spec.sources) == {"applicants", "bureau", "transactions"}
    assert len(spec.features) >= 10
    assert {"gender", "age_band", "debt_to_income", "utilisation"} <= {f.name for f in spec.features}
    assert spec.schedule is not None and spec.schedule.cron == "0 2 * * *"


def test_model_example_loads() -> None:
    config = load_config(EXAMPLES / "credit_model.yaml", expect=ModelConfig)
    spec = config.spec
    assert spec.task is Task.BINARY_CLASSIFICATION
    assert spec.pipeline.estimator.import_path == "sklearn.ensemble.HistGradientBoostingClassifier"
    (step,) = spec.pipeline.steps
    assert isinstance(step, ColumnTransformerStep)
    assert [t.import_path for t in step.transformers] == [
        "sklearn.preprocessing.StandardScaler",
        "sklearn.preprocessing.OneHotEncoder",
    ]
    assert spec.sweep is not None and spec.sweep.selection.mode == "champion"
    assert spec.fairness is not None and spec.fairness.protected_attributes == ["age_band", "gender"]
    assert spec.scoring is not None and spec.scoring.schedule == "0 6 * * *"
    assert spec.training.window.start.isoformat() == "2024-01-01"


@pytest.mark.parametrize("name", ["credit_features.yaml", "credit_model.yaml"])
def test_examples_round_trip_through_json(name: str) -> None:
    config = load_config(EXAMPLES / name)
    document = config.model_dump(mode="json")
    assert document["apiVersion"] == "pfactory.io/v1"
    assert load_config_dict(json.loads(json.dumps(document))) == config
    assert load_config(json.dumps(document, indent=2)) == config


def test_broken_examples_are_refused() -> None:
    broken = sorted((EXAMPLES / "broken").glob("*.yaml"))
    assert len(broken) >= 5
    for path in broken:
        with pytest.raises(ConfigError):
            load_config(path)


def test_export_writes_valid_draft_2020_12_schemas(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "schemas")
    assert sorted(p.name for p in written) == ["featureset.schema.json", "model.schema.json"]
    for path in written:
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(path.name)
        assert schema["title"] and schema["description"]
    assert set(config_schemas()) == {"featureset.schema.json", "model.schema.json"}
    assert len(config_schemas()) == len(CONFIG_KINDS)


@pytest.mark.parametrize(
    ("kind", "name"), [("FeatureSet", "credit_features.yaml"), ("Model", "credit_model.yaml")]
)
def test_examples_validate_against_the_schema(kind: str, name: str) -> None:
    validator = Draft202012Validator(config_schema(kind))
    document = _as_json(EXAMPLES / name)
    assert list(validator.iter_errors(document)) == []
    document["spec"]["unexpected"] = 1
    assert [e.validator for e in validator.iter_errors(document)] == ["additionalProperties"]


def test_every_schema_property_is_described() -> None:
    undocumented = []
    for schema in config_schemas().values():
        for def_name, definition in schema.get("$defs", {}).items():
            for prop, body in definition.get("properties", {}).items():
                if "description" not in body:
                    undocumented.append(f"{def_name}.{prop}")
    assert undocumented == []
