"""The worked adapter example: statsmodels GLMs behind the scikit-learn interface, found by entry point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pfactory.adapters
import pytest
import statsmodels.api as sm  # type: ignore[import-untyped]
from pfactory.adapters.statsmodels_glm import GLMClassifier, GLMRegressor
from sklearn.datasets import make_classification, make_regression  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]
from sklearn.utils.estimator_checks import estimator_checks_generator  # type: ignore[import-untyped]

from pfactory.cli.main import validate_file
from pfactory.contracts.configs.model import ModelConfig
from pfactory.contracts.imports import ImportAllowlist, ImportSettings, default_allowlist
from pfactory.contracts.loader import load_config
from pfactory.registry.serialization import dump_model, load_model, sha256_hex, trusted_types_for
from pfactory.trainer.assembly import build_pipeline, framework_info, installed_adapters
from pfactory.trainer.sweep import expand_trials

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "credit_model_statsmodels.yaml"


# The unpenalised classifier is left out of scikit-learn's checks on purpose: on their well-separated
# blobs the maximum-likelihood estimate does not exist and it rightly warns (perfect separation), which
# the checks count as failures. Its fit is checked against statsmodels itself below; with alpha > 0
# every check passes.
def _checks() -> list[Any]:
    """scikit-learn's estimator checks, without the array-API one (it needs SCIPY_ARRAY_API and array
    libraries this project does not use, so it would only ever skip)."""
    estimators = [GLMClassifier(alpha=0.01), GLMRegressor(), GLMRegressor(alpha=0.01)]
    return [
        pytest.param(estimator, check, id=f"{estimator}-{getattr(check, 'func', check).__name__}")
        for estimator in estimators
        for estimator, check in estimator_checks_generator(estimator, legacy=True)
        if getattr(check, "func", check).__name__ != "check_array_api_input"
    ]


@pytest.mark.parametrize(("estimator", "check"), _checks())
def test_scikit_learn_estimator_checks(estimator: Any, check: Callable[[Any], None]) -> None:
    check(estimator)


def test_the_entry_point_is_discovered_and_puts_the_adapter_on_the_allowlist() -> None:
    assert installed_adapters()["statsmodels_glm"] == "pfactory.adapters.statsmodels_glm"
    # even a deployment that allows only scikit-learn allows what installed packages register
    allowlist = ImportAllowlist.from_settings(ImportSettings(allowed_prefixes=["sklearn."]))
    assert allowlist.allows("pfactory.adapters.statsmodels_glm.GLMClassifier")
    assert not allowlist.allows("pfactory.adapters.other.Model")
    # pfactory.adapters is a namespace shared by every adapter distribution
    assert getattr(pfactory.adapters, "__file__", None) is None


def test_the_classifier_reproduces_statsmodels_logit_with_standard_errors() -> None:
    X, y = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0, random_state=1)
    model = GLMClassifier().fit(X, y)
    reference = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose([model.intercept_, *model.coef_], reference.params, rtol=1e-6)
    np.testing.assert_allclose(model.bse_, reference.bse[1:], rtol=1e-6)
    np.testing.assert_allclose(model.pvalues_, reference.pvalues[1:], rtol=1e-6)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], reference.predict(sm.add_constant(X)), rtol=1e-6)


def test_the_l2_penalty_shrinks_coefficients_but_not_the_intercept() -> None:
    X, y = make_regression(n_samples=200, n_features=3, noise=5.0, random_state=2)
    X, y = X - X.mean(axis=0), y + 100.0  # centred features: the intercept is the mean of y, if unshrunk
    plain, ridge = GLMRegressor().fit(X, y), GLMRegressor(alpha=1.0).fit(X, y)
    assert np.linalg.norm(ridge.coef_) < 0.6 * np.linalg.norm(plain.coef_)
    assert ridge.intercept_ == pytest.approx(y.mean(), rel=1e-4)
    assert np.isnan(ridge.bse_).all() and not np.isnan(plain.bse_).any()
    # statsmodels' closed-form ridge (OLS, same objective) agrees with the adapter's solver
    penalty = np.array([0.0, 1.0, 1.0, 1.0])
    reference = sm.OLS(y, sm.add_constant(X)).fit_regularized(alpha=penalty, L1_wt=0.0)
    np.testing.assert_allclose([ridge.intercept_, *ridge.coef_], reference.params, rtol=1e-4)


def test_a_non_converging_penalised_fit_warns_in_scikit_learn_terms() -> None:
    X, y = make_classification(n_samples=300, n_features=5, random_state=3)
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 iterations"):
        GLMClassifier(alpha=0.01, max_iter=1).fit(X * 1000, y)


def test_fitted_state_is_plain_and_round_trips_through_skops_with_trusted_types() -> None:
    X, y = make_classification(n_samples=200, n_features=3, n_informative=3, n_redundant=0, random_state=4)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = GLMClassifier().fit(frame, np.where(y == 1, "bad", "good"))
    plain = (np.ndarray, float, int, bool, str)
    assert all(isinstance(v, plain) for v in vars(model).values()), vars(model)

    data = dump_model(model)
    untrusted = trusted_types_for(data, version_label="glm@1")  # beyond skops' defaults
    assert untrusted == ["pfactory.adapters.statsmodels_glm.glm.GLMClassifier"]
    loaded = load_model(data, expected_sha256=sha256_hex(data), version_label="glm@1")
    assert list(loaded.classes_) == ["bad", "good"] and list(loaded.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame))


def _credit_frame(n: int = 600, seed: int = 5) -> tuple[pd.DataFrame, pd.Series]:
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
    logit = -1.5 + 4.0 * frame["debt_to_income"] + 1.0 * frame["n_late_payments_90d"]
    return frame, pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))


def test_the_statsmodels_credit_config_validates_sweeps_fits_and_round_trips() -> None:
    assert validate_file(CONFIG) == {
        "file": str(CONFIG),
        "valid": True,
        "kind": "Model",
        "name": "credit-default-glm",
        "issues": [],
    }
    spec = load_config(CONFIG, expect=ModelConfig).spec
    assert spec.sweep is not None
    trials = expand_trials(spec.sweep, seed=spec.training.split.seed)
    assert len(trials) == 6
    X, y = _credit_frame()
    allowlist = default_allowlist()
    for params in trials:
        build_pipeline(spec, allowlist=allowlist, params=params)  # every trial assembles

    pipeline = build_pipeline(spec, allowlist=allowlist, params=trials[0]).fit(X, y)
    glm = pipeline.named_steps["estimator"]
    assert isinstance(glm, GLMClassifier) and glm.alpha == 0.0
    assert roc_auc_score(y, pipeline.predict_proba(X)[:, 1]) > 0.7
    by_name = dict(zip(pipeline[:-1].get_feature_names_out(), glm.pvalues_, strict=True))
    assert by_name["numeric__debt_to_income"] < 0.01 and by_name["numeric__n_late_payments_90d"] < 0.01
    info = framework_info(pipeline)
    assert info["framework"] == "pfactory-adapter-statsmodels"
    assert {"pfactory-adapter-statsmodels", "statsmodels", "scikit-learn", "numpy"} <= set(info)

    data = dump_model(pipeline)
    loaded = load_model(data, expected_sha256=sha256_hex(data), version_label="credit-default-glm@1")
    np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X))
