"""Pipeline assembly from Model configs: real classes, real fits, real skops round-trips."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import yaml
from numpy.typing import ArrayLike
from pydantic import JsonValue
from sklearn.base import BaseEstimator, ClassifierMixin  # type: ignore[import-untyped]
from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.svm import SVC  # type: ignore[import-untyped]

from pfactory.contracts.configs.metrics import Task
from pfactory.contracts.configs.model import ModelConfig, ModelSpec
from pfactory.contracts.imports import DisallowedImportError, ImportAllowlist, default_allowlist
from pfactory.contracts.loader import load_config, load_config_dict
from pfactory.registry.serialization import dump_model, load_model, sha256_hex
from pfactory.trainer.assembly import (
    AssemblyError,
    InterfaceError,
    build_pipeline,
    check_interface,
    framework_info,
    sklearn_param_path,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "credit_model.yaml"
NUMERIC = ["age", "income", "debt_to_income", "utilisation", "n_open_accounts", "n_late_payments_90d",
           "months_at_address"]  # fmt: skip


def credit_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Features shaped like credit-features v1 (with missing values) and a label that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": np.where(rng.random(n) < 0.05, np.nan, rng.lognormal(10.4, 0.5, n)),
            "debt_to_income": rng.beta(2, 5, n),
            "utilisation": np.where(rng.random(n) < 0.1, np.nan, rng.beta(1.3, 2.7, n)),
            "n_open_accounts": rng.integers(0, 8, n),
            "n_late_payments_90d": rng.poisson(0.3, n),
            "months_at_address": rng.integers(0, 240, n),
            "employment_status": rng.choice(["employed", "self_employed", "unemployed", "retired"], n),
            "age_band": rng.choice(["18-24", "25-39", "40-59", "60+"], n),
            "gender": rng.choice(["female", "male"], n),
        }
    )
    logit = -1.0 + 4.0 * frame["debt_to_income"] + 1.2 * frame["n_late_payments_90d"]
    label = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int), name="defaulted_12m")
    return frame, label


def example_spec(
    *,
    pipeline: dict[str, Any] | None = None,
    task: str | None = None,
    allowlist: ImportAllowlist | None = None,
) -> ModelSpec:
    """The credit example, optionally with another pipeline or task, validated by the loader."""
    document = yaml.safe_load(EXAMPLE.read_text())
    spec = document["spec"]
    if pipeline is not None:
        spec["pipeline"] = pipeline
        spec.pop("sweep")
    if task == "regression":
        spec.update(task=task, metrics={"primary": "rmse"})
        spec["labels"].pop("positive_class")
    return load_config_dict(document, expect=ModelConfig, allowlist=allowlist).spec


def prep_and(estimator: str, **params: Any) -> dict[str, Any]:
    """The example's column transformer followed by ``estimator``."""
    document = yaml.safe_load(EXAMPLE.read_text())
    steps = document["spec"]["pipeline"]["steps"]
    return {"steps": steps, "estimator": {"import": estimator, "params": params}}


def test_the_credit_example_assembles_fits_and_predicts_from_only_its_input_columns() -> None:
    spec = load_config(EXAMPLE, expect=ModelConfig).spec
    pipeline = build_pipeline(spec, allowlist=default_allowlist())
    assert [name for name, _ in pipeline.steps] == ["prep", "estimator"]

    X, y = credit_frame()
    pipeline.fit(X, y)
    scores = pipeline.predict_proba(X)[:, 1]
    assert roc_auc_score(y, scores) > 0.7
    names = list(pipeline[:-1].get_feature_names_out())
    assert "numeric__debt_to_income" in names and "categorical__employment_status_retired" in names
    assert not any("gender" in n or "age_band" in n for n in names)  # protected attributes not used
    assert framework_info(pipeline)["framework"] == "scikit-learn"


def test_sweep_overrides_land_on_the_scikit_learn_paths_and_keep_the_other_params() -> None:
    spec = load_config(EXAMPLE, expect=ModelConfig).spec
    params: dict[str, JsonValue] = {
        "estimator.max_depth": 5,
        "prep.numeric.with_mean": False,
        "prep.remainder": "passthrough",
    }
    pipeline = build_pipeline(spec, allowlist=default_allowlist(), params=params)
    got = pipeline.get_params()
    assert {sklearn_param_path(k): got[sklearn_param_path(k)] for k in params} == {
        "estimator__max_depth": 5,
        "prep__numeric__with_mean": False,
        "prep__remainder": "passthrough",
    }
    assert got["estimator__max_iter"] == 200 and got["estimator__learning_rate"] == 0.1


def test_an_unknown_sweep_target_is_refused_with_the_likely_path() -> None:
    spec = load_config(EXAMPLE, expect=ModelConfig).spec
    with pytest.raises(AssemblyError, match=r"unknown step 'estimatr'; did you mean 'estimator.max_depth'"):
        build_pipeline(spec, allowlist=default_allowlist(), params={"estimatr.max_depth": 3})


def test_an_unknown_parameter_names_where_it_came_from_and_what_the_class_accepts() -> None:
    spec = load_config(EXAMPLE, expect=ModelConfig).spec
    with pytest.raises(AssemblyError) as caught:
        build_pipeline(spec, allowlist=default_allowlist(), params={"prep.numeric.colour": "red"})
    message = str(caught.value)
    assert message.startswith("spec.sweep.params['prep.numeric.colour']: ")
    assert "StandardScaler has no parameter 'colour'" in message and "with_mean" in message


def test_a_bad_parameter_value_fails_at_assembly_naming_the_parameter() -> None:
    spec = load_config(EXAMPLE, expect=ModelConfig).spec
    with pytest.raises(AssemblyError) as caught:
        build_pipeline(spec, allowlist=default_allowlist(), params={"estimator.max_depth": -1})
    message = str(caught.value)
    assert message.startswith("spec.sweep.params['estimator.max_depth']: ")
    assert "'max_depth' parameter of HistGradientBoostingClassifier must be" in message


def test_a_disallowed_import_is_refused_before_anything_is_imported() -> None:
    # loaded under a permissive allowlist, assembled under the default one
    spec = example_spec(
        pipeline=prep_and("this.Zen"), allowlist=ImportAllowlist(prefixes=("sklearn.", "this."))
    )
    assert "this" not in sys.modules
    with pytest.raises(
        DisallowedImportError, match=r"^spec.pipeline.estimator: import path 'this.Zen' is not"
    ):
        build_pipeline(spec, allowlist=default_allowlist())
    assert "this" not in sys.modules


def test_a_missing_module_or_class_is_explained() -> None:
    allowlist = ImportAllowlist(
        prefixes=("sklearn.preprocessing.", "pf_not_installed."),
        exact=frozenset({"sklearn.ensemble.RandomForestClassifir"}),
    )
    spec = example_spec(pipeline=prep_and("pf_not_installed.models.Thing"), allowlist=allowlist)
    with pytest.raises(AssemblyError, match=r"cannot import module 'pf_not_installed.models'.*uv add pf_not"):
        build_pipeline(spec, allowlist=allowlist)
    spec = example_spec(pipeline=prep_and("sklearn.ensemble.RandomForestClassifir"), allowlist=allowlist)
    with pytest.raises(
        AssemblyError, match=r"does not exist; did you mean 'sklearn.ensemble.RandomForestClassifier'"
    ):
        build_pipeline(spec, allowlist=allowlist)


def test_a_regressor_configured_for_classification_is_refused_before_fitting() -> None:
    spec = example_spec(pipeline=prep_and("sklearn.linear_model.Ridge"))
    with pytest.raises(InterfaceError) as caught:
        build_pipeline(spec, allowlist=default_allowlist())
    assert caught.value.name == "sklearn.linear_model.Ridge"
    assert caught.value.problems == [
        "no predict_proba() method",
        "it is a regressor, the task needs a classifier: inherit sklearn.base.ClassifierMixin "
        "(before BaseEstimator)",
    ]
    assert "examples/adapters/README.md" in str(caught.value)


def test_columns_selected_by_type_and_by_name_across_steps() -> None:
    pipeline_config = {
        "steps": [
            {"name": "fill", "import": "sklearn.impute.SimpleImputer", "columns": ["income", "utilisation"]},
            {
                "name": "prep",
                "transformers": [
                    {
                        "name": "num",
                        "import": "sklearn.preprocessing.StandardScaler",
                        "dtype_include": ["numeric"],
                    },
                    {
                        "name": "cat",
                        "import": "sklearn.preprocessing.OneHotEncoder",
                        "params": {"sparse_output": False, "handle_unknown": "ignore"},
                        "dtype_include": ["categorical"],
                    },
                    {
                        "name": "flag",
                        "import": "sklearn.preprocessing.OrdinalEncoder",
                        "dtype_include": ["boolean"],
                    },
                    {
                        "name": "when",
                        "import": "sklearn.preprocessing.OrdinalEncoder",
                        "dtype_include": ["datetime"],
                    },
                ],
            },
        ],
        "estimator": {"import": "sklearn.linear_model.LogisticRegression"},
    }
    spec = example_spec(pipeline=pipeline_config)
    X, y = credit_frame()
    row = np.arange(len(X))
    X = X.drop(columns=["age_band", "gender"]).assign(
        employment_status=X["employment_status"].astype("category"),
        region=pd.array(np.where(row % 2, "north", "south"), dtype="string"),
        thin_file=row % 3 == 0,
        applied=pd.Timestamp("2024-03-01") + pd.to_timedelta(row % 5, unit="D"),
    )
    pipeline = build_pipeline(spec, allowlist=default_allowlist()).fit(X, y)

    selected = {name: list(cols) for name, _, cols in pipeline.named_steps["prep"].transformers_}
    # the imputed columns come first out of 'fill', the others after them, by name
    assert selected["num"] == ["income", "utilisation"] + [
        c for c in NUMERIC if c not in ("income", "utilisation")
    ]
    assert selected["cat"] == ["employment_status", "region"]
    assert selected["flag"] == ["thin_file"] and selected["when"] == ["applied"]
    assert pipeline.predict_proba(X).shape == (len(X), 2)  # the imputer removed every NaN


class _NoProba(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, X: ArrayLike, y: ArrayLike) -> _NoProba:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: ArrayLike) -> Any:
        return np.zeros(len(np.asarray(X)))


class _Bare:
    """Has fit and nothing else of the interface."""

    def fit(self, X: ArrayLike, y: ArrayLike) -> _Bare:
        return self


class _Unclonable(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha * 2  # modifies its argument, so clone() cannot reproduce it

    fit = _NoProba.fit
    predict = _NoProba.predict

    def predict_proba(self, X: ArrayLike) -> Any:
        return np.full((len(np.asarray(X)), 2), 0.5)


def test_interface_errors_list_every_missing_piece() -> None:
    with pytest.raises(InterfaceError) as caught:
        check_interface(_Bare(), Task.BINARY_CLASSIFICATION)
    assert caught.value.name == f"{__name__}._Bare"
    assert [p.split(" (")[0].split(":")[0] for p in caught.value.problems] == [
        "no predict() method",
        "no predict_proba() method",
        "no get_params() method",
        "no set_params() method",
        "it declares no estimator type",
    ]
    message = str(caught.value)
    assert "for task 'binary_classification'" in message and "examples/adapters/README.md" in message


def test_a_classifier_without_probabilities_is_refused_alone_and_at_the_end_of_a_pipeline() -> None:
    for obj in (_NoProba(), Pipeline([("estimator", _NoProba())])):
        with pytest.raises(InterfaceError) as caught:
            check_interface(obj, Task.BINARY_CLASSIFICATION)
        assert caught.value.problems == ["no predict_proba() method"]
    with pytest.raises(InterfaceError, match=r"probability=False"):
        check_interface(SVC(), Task.BINARY_CLASSIFICATION)
    check_interface(SVC(probability=True), Task.BINARY_CLASSIFICATION)


def test_an_estimator_that_cannot_be_cloned_is_explained() -> None:
    with pytest.raises(InterfaceError) as caught:
        check_interface(_Unclonable(), Task.BINARY_CLASSIFICATION)
    (problem,) = caught.value.problems
    assert problem.startswith("sklearn.base.clone fails (RuntimeError: Cannot clone object")
    assert "__init__ must store each argument unchanged" in problem


def _round_trip(model: Any) -> Any:
    data = dump_model(model)
    return load_model(data, expected_sha256=sha256_hex(data), version_label="test@1")


def test_xgboost_pipelines_fit_and_survive_skops_with_trusted_types() -> None:
    spec = example_spec(pipeline=prep_and("xgboost.XGBClassifier", n_estimators=20, max_depth=3, n_jobs=1))
    X, y = credit_frame()
    pipeline = build_pipeline(spec, allowlist=default_allowlist()).fit(X, y)
    loaded = _round_trip(pipeline)
    np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X))
    info = framework_info(pipeline)
    assert info["framework"] == "xgboost" and info["xgboost"].count(".") >= 1


def test_lightgbm_pipelines_fit_and_survive_skops_with_trusted_types() -> None:
    """LightGBM keeps ``best_score`` as ``defaultdict(collections.OrderedDict)``; skops records the
    default factory as a type, which the registry trusts by exact name (a plain data container)."""
    spec = example_spec(pipeline=prep_and("lightgbm.LGBMClassifier", n_estimators=20, verbose=-1, n_jobs=1))
    X, y = credit_frame()
    pipeline = build_pipeline(spec, allowlist=default_allowlist()).fit(X, y)
    assert framework_info(pipeline)["framework"] == "lightgbm"
    loaded = _round_trip(pipeline)
    np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X))
