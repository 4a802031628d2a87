"""Sweeps: trial expansion, ranking, selection, and ensembles that fit and survive skops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from pfactory.contracts.configs.metrics import Metric
from pfactory.contracts.configs.pipeline import EnsembleMethod, Selection, SelectionMode, Sweep
from pfactory.contracts.imports import default_allowlist
from pfactory.registry.serialization import dump_model, load_model, sha256_hex
from pfactory.trainer.assembly import framework_info
from pfactory.trainer.sweep import (
    SelectionError,
    TrialScore,
    build_ensemble,
    expand_trials,
    rank_trials,
    select,
)
from tests.workers.trainer.test_assembly import credit_frame, example_spec, prep_and


def _sweep(params: dict[str, list[JsonValue]], n_trials: int | None = None) -> Sweep:
    strategy = "grid" if n_trials is None else "random"
    return Sweep.model_validate({"strategy": strategy, "n_trials": n_trials, "params": params})


def test_a_grid_is_every_combination_with_the_last_parameter_varying_fastest() -> None:
    sweep = _sweep(
        {"estimator.max_depth": [3, 5], "estimator.learning_rate": [0.05, 0.1], "prep.remainder": ["drop"]}
    )
    assert expand_trials(sweep, seed=1) == [
        {"estimator.max_depth": 3, "estimator.learning_rate": 0.05, "prep.remainder": "drop"},
        {"estimator.max_depth": 3, "estimator.learning_rate": 0.1, "prep.remainder": "drop"},
        {"estimator.max_depth": 5, "estimator.learning_rate": 0.05, "prep.remainder": "drop"},
        {"estimator.max_depth": 5, "estimator.learning_rate": 0.1, "prep.remainder": "drop"},
    ]


def test_random_draws_are_distinct_reproducible_and_seeded() -> None:
    sweep = _sweep({"estimator.max_depth": [2, 3, 4, 5, 6], "estimator.learning_rate": [0.01, 0.1, 0.3]}, 8)
    trials = expand_trials(sweep, seed=42)
    assert len(trials) == 8 and len({tuple(t.values()) for t in trials}) == 8
    assert expand_trials(sweep, seed=42) == trials
    assert expand_trials(sweep, seed=7) != trials


def test_random_draws_exhaust_a_small_grid_before_repeating() -> None:
    sweep = _sweep({"estimator.max_depth": [3, 5], "estimator.learning_rate": [0.05, 0.1]}, 6)
    trials = [tuple(t.values()) for t in expand_trials(sweep, seed=3)]
    assert len(trials) == 6
    assert set(trials[:4]) == {(3, 0.05), (3, 0.1), (5, 0.05), (5, 0.1)}


def test_random_draws_from_a_grid_too_large_to_enumerate() -> None:
    sweep = _sweep({f"estimator.p{i}": list(range(10)) for i in range(20)}, 5)  # 10**20 combinations
    trials = expand_trials(sweep, seed=0)
    assert len({tuple(t.values()) for t in trials}) == 5


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    n_trials=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_random_draws_use_only_candidates_and_repeat_only_when_the_grid_is_spent(
    sizes: list[int], n_trials: int, seed: int
) -> None:
    params: dict[str, list[JsonValue]] = {
        f"s.p{i}": [f"v{i}_{j}" for j in range(n)] for i, n in enumerate(sizes)
    }
    trials = expand_trials(_sweep(params, n_trials), seed=seed)
    assert len(trials) == n_trials
    assert all(t[k] in params[k] for t in trials for k in params)
    grid = math.prod(sizes)
    for start in range(0, n_trials, grid):  # every block of `grid` draws is without replacement
        block = [tuple(t.values()) for t in trials[start : start + grid]]
        assert len(set(block)) == len(block)


def _scores(*values: tuple[str, float | None]) -> list[TrialScore]:
    return [
        TrialScore(run_id=r, params={"estimator.max_depth": i}, value=v) for i, (r, v) in enumerate(values)
    ]


def test_ranking_respects_direction_puts_failures_last_and_breaks_ties_by_run_id() -> None:
    trials = [
        *_scores(("trial-003", 0.81), ("trial-000", float("nan")), ("trial-002", 0.85), ("trial-001", 0.81)),
        TrialScore("trial-004", {}, 0.99, error="out of memory"),
        TrialScore("trial-005", {}, None),
    ]
    ranked = [t.run_id for t in rank_trials(trials, Metric.ROC_AUC)]
    assert ranked == ["trial-002", "trial-001", "trial-003", "trial-000", "trial-004", "trial-005"]
    ranked = [t.run_id for t in rank_trials(trials, Metric.LOG_LOSS)]
    assert ranked == ["trial-001", "trial-003", "trial-002", "trial-000", "trial-004", "trial-005"]


def test_the_champion_is_the_best_successful_trial_by_the_selection_metric() -> None:
    trials = _scores(("trial-000", 0.30), ("trial-001", 0.20), ("trial-002", None))
    champion = select(trials, Selection(metric=Metric.LOG_LOSS), primary=Metric.ROC_AUC)
    assert champion.run_ids == ("trial-001",) and champion.metric is Metric.LOG_LOSS
    assert [t.run_id for t in champion.ranking] == ["trial-001", "trial-000", "trial-002"]
    assert select(trials, Selection(), primary=Metric.ROC_AUC).run_ids == ("trial-000",)


def test_top_k_takes_the_k_best_and_refuses_when_too_few_succeeded() -> None:
    selection = Selection(mode=SelectionMode.TOP_K_ENSEMBLE, k=3)
    trials = [*_scores(("trial-000", 0.7), ("trial-001", 0.9), ("trial-002", 0.8), ("trial-003", 0.75))]
    assert select(trials, selection, primary=Metric.ROC_AUC).run_ids == (
        "trial-001",
        "trial-002",
        "trial-003",
    )

    failing = [*trials[:2], TrialScore("trial-002", {}, None, error="killed: exceeded its 4Gi memory limit")]
    with pytest.raises(SelectionError) as caught:
        select(failing, selection, primary=Metric.ROC_AUC)
    message = str(caught.value)
    assert "top_k_ensemble needs 3 successful trial(s) but 2 of 3 succeeded; 1 failed" in message
    assert "trial-002: killed: exceeded its 4Gi memory limit" in message
    assert "lower spec.sweep.selection.k" in message


def test_a_sweep_where_every_trial_failed_has_no_champion() -> None:
    with pytest.raises(SelectionError, match=r"0 of 2 succeeded; 2 failed: trial-000: no roc_auc value"):
        select(_scores(("trial-000", None), ("trial-001", float("nan"))), Selection(), primary=Metric.ROC_AUC)


def _round_trip(model: Any) -> Any:
    data = dump_model(model)
    return load_model(data, expected_sha256=sha256_hex(data), version_label="ensemble@1")


MEMBERS: list[dict[str, JsonValue]] = [
    {"estimator.max_depth": 2, "estimator.max_iter": 20},
    {"estimator.max_depth": 4, "estimator.max_iter": 30},
]


@pytest.mark.parametrize("method", list(EnsembleMethod))
def test_classifier_ensembles_fit_predict_and_survive_skops(method: EnsembleMethod) -> None:
    spec = example_spec()
    ensemble = build_ensemble(
        spec,
        allowlist=default_allowlist(),
        member_params=MEMBERS,
        method=method,
        names=["trial-000", "trial-001"],
    )
    X, y = credit_frame()
    ensemble.fit(X, y)
    assert [name for name, _ in ensemble.estimators] == ["trial-000", "trial-001"]
    members = ensemble.named_estimators_
    assert members["trial-001"].named_steps["estimator"].max_depth == 4
    proba = ensemble.predict_proba(X)
    assert proba.shape == (len(X), 2)
    if method is EnsembleMethod.SOFT_VOTING:  # the average of the members' probabilities
        mean = np.mean([members[n].predict_proba(X) for n in ("trial-000", "trial-001")], axis=0)
        np.testing.assert_allclose(proba, mean)
    np.testing.assert_allclose(_round_trip(ensemble).predict_proba(X), proba)
    assert framework_info(ensemble)["framework"] == "scikit-learn"


@pytest.mark.parametrize("method", list(EnsembleMethod))
def test_regressor_ensembles_fit_predict_and_survive_skops(method: EnsembleMethod) -> None:
    spec = example_spec(
        pipeline=prep_and("sklearn.ensemble.HistGradientBoostingRegressor"), task="regression"
    )
    ensemble = build_ensemble(
        spec,
        allowlist=default_allowlist(),
        member_params=MEMBERS,
        method=method,
        names=["trial-000", "trial-001"],
    )
    X, _ = credit_frame()
    target = 2.0 * X["debt_to_income"] + 0.1 * X["n_late_payments_90d"]
    prediction = ensemble.fit(X, target).predict(X)
    assert np.corrcoef(prediction, target)[0, 1] > 0.9
    assert type(ensemble).__name__ == (
        "VotingRegressor" if method is EnsembleMethod.SOFT_VOTING else "StackingRegressor"
    )
    np.testing.assert_allclose(_round_trip(ensemble).predict(X), prediction)


def test_ensemble_members_need_one_usable_name_each() -> None:
    spec = example_spec()
    with pytest.raises(ValueError, match="2 names for 1 parameter sets"):
        build_ensemble(spec, allowlist=default_allowlist(), member_params=MEMBERS[:1],
                       method=EnsembleMethod.STACKING, names=["a", "b"])  # fmt: skip
    with pytest.raises(ValueError, match="unique, non-empty and free of '__'"):
        build_ensemble(spec, allowlist=default_allowlist(), member_params=MEMBERS,
                       method=EnsembleMethod.STACKING, names=["a", "a"])  # fmt: skip
