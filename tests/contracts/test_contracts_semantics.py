"""Cross-field checks: names that must exist, uniqueness, metrics that fit the task."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from pfactory.contracts import FeatureSetConfig, ModelConfig
from tests.contracts.support import MINIMAL_FEATURESET, MINIMAL_MODEL, issues_of, only_issue


def test_duplicate_feature_names() -> None:
    issue = only_issue(MINIMAL_FEATURESET + "    - name: age\n      dtype: long\n")
    assert (issue.line, issue.column, issue.path, issue.code) == (
        22,
        13,
        "spec.features[1].name",
        "duplicate_name",
    )


def test_output_must_name_a_model() -> None:
    issue = only_issue(MINIMAL_FEATURESET.replace("  version: 1\n", "  version: 1\n  output: bse\n"))
    assert (issue.line, issue.path, issue.suggestion) == (10, "spec.output", "base")


def test_lineage_must_name_a_source() -> None:
    text = MINIMAL_FEATURESET.replace(
        "      dtype: int\n", "      dtype: int\n      source_columns: [rwa.age]\n"
    )
    issue = only_issue(text)
    assert (issue.path, issue.suggestion) == ("spec.features[0].source_columns[0]", "raw")


def test_sql_or_sql_file_exactly_one() -> None:
    text = MINIMAL_FEATURESET.replace('      sql: "select', '      sql_file: base.sql\n      sql: "select')
    issue = only_issue(text)
    assert (issue.line, issue.path) == (15, "spec.models[0]")
    assert "exactly one of 'sql' or 'sql_file'" in issue.message


def test_metric_must_fit_the_task() -> None:
    issue = only_issue(MINIMAL_MODEL.replace("primary: roc_auc", "primary: rmse"))
    assert (issue.line, issue.column, issue.path, issue.code) == (
        21,
        14,
        "spec.metrics.primary",
        "metric_task_mismatch",
    )


def test_estimator_must_fit_the_task() -> None:
    text = MINIMAL_MODEL.replace(
        "sklearn.linear_model.LogisticRegression", "sklearn.ensemble.RandomForestRegressor"
    )
    issue = only_issue(text.replace("params: {C: 1.0}", "params: {}"))
    assert (issue.path, issue.code) == ("spec.pipeline.estimator.import", "task_mismatch")


def test_sweep_parameters_must_target_a_step() -> None:
    sweep = (
        "  sweep:\n    strategy: grid\n"
        "    params: {estimater.C: [1, 2], estimator.max_iterr: [100]}\n  metrics:\n"
    )
    issues = issues_of(MINIMAL_MODEL.replace("  metrics:\n", sweep))
    assert [(i.line, i.path, i.suggestion) for i in issues] == [
        (22, "spec.sweep.params.estimater.C", "estimator.C"),
        (22, "spec.sweep.params.estimator.max_iterr", "estimator.max_iter"),
    ]


def test_top_k_ensemble_needs_k() -> None:
    sweep = (
        "  sweep:\n    strategy: random\n    n_trials: 4\n    params: {estimator.C: [1, 2]}\n"
        "    selection: {mode: top_k_ensemble}\n  metrics:\n"
    )
    issue = only_issue(MINIMAL_MODEL.replace("  metrics:\n", sweep))
    assert (issue.line, issue.path) == (24, "spec.sweep.selection")
    assert "needs 'k'" in issue.message


def test_fairness_constraint_must_be_a_computed_metric() -> None:
    fairness = (
        "  fairness:\n    protected_attributes: [gender]\n    metrics: [demographic_parity_difference]\n"
        "    constraints: {equal_opportunity_difference: 0.1}\n  card:\n"
    )
    issue = only_issue(MINIMAL_MODEL.replace("  card:\n", fairness))
    assert (issue.line, issue.column, issue.path) == (
        25,
        19,
        "spec.fairness.constraints.equal_opportunity_difference",
    )


def test_direct_validation_runs_the_semantic_checks_too() -> None:
    data = yaml.safe_load(MINIMAL_MODEL.replace("primary: roc_auc", "primary: rmse"))
    data["spec"]["training"]["window"] = {"start": "2024-01-01", "end": "2024-06-30"}
    with pytest.raises(ValidationError, match="does not apply to task"):
        ModelConfig.model_validate(data)
    ok = yaml.safe_load(MINIMAL_FEATURESET)
    assert FeatureSetConfig.model_validate(ok).spec.output_model == "base"
