"""Cross-field checks of a ``Model`` spec, located by data path for the loader."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pfactory.contracts.catalog import KNOWN_PARAMS
from pfactory.contracts.configs.metrics import TASK_METRICS, Metric, Task
from pfactory.contracts.configs.pipeline import ColumnTransformerStep
from pfactory.contracts.issues import Loc, SemanticIssue
from pfactory.contracts.suggest import did_you_mean, one_of

if TYPE_CHECKING:
    from pfactory.contracts.configs.model import ModelSpec

_PARAM_TYPO_CUTOFF = 0.8


def model_semantic_issues(spec: ModelSpec) -> list[SemanticIssue]:
    """Return every cross-field problem of a model spec.

    Args:
        spec: a structurally valid model spec.

    Returns:
        The problems, each located by its path from the document root.
    """
    issues = _metric_issues(spec)
    targets = _param_targets(spec, issues)
    if spec.sweep is not None:
        for key in spec.sweep.params:
            issues += _sweep_key_issues(key, targets)
    if spec.fairness is not None:
        for name in spec.fairness.constraints:
            if name not in spec.fairness.metrics:
                issues.append(
                    SemanticIssue(
                        ("spec", "fairness", "constraints", name.value),
                        f"constraint on '{name.value}', which is not in fairness.metrics; add it there",
                        at_key=True,
                        code="unknown_reference",
                    )
                )
    if spec.task is Task.REGRESSION and spec.labels.positive_class is not None:
        issues.append(
            SemanticIssue(
                ("spec", "labels", "positive_class"),
                "positive_class has no meaning for a regression task; remove it",
            )
        )
    estimator_class = spec.pipeline.estimator.import_path.rpartition(".")[2]
    is_regression = spec.task is Task.REGRESSION
    if (is_regression and estimator_class.endswith("Classifier")) or (
        not is_regression and estimator_class.endswith("Regressor")
    ):
        issues.append(
            SemanticIssue(
                ("spec", "pipeline", "estimator", "import"),
                f"estimator '{estimator_class}' does not fit task '{spec.task.value}'",
                code="task_mismatch",
            )
        )
    return issues


def _metric_issues(spec: ModelSpec) -> list[SemanticIssue]:
    allowed = TASK_METRICS[spec.task]
    names = sorted(m.value for m in allowed)
    issues: list[SemanticIssue] = []

    def check(metric: Metric, loc: Loc, at_key: bool = False) -> None:
        if metric not in allowed:
            issues.append(
                SemanticIssue(
                    loc,
                    f"metric '{metric.value}' does not apply to task '{spec.task.value}'",
                    suggestion=did_you_mean(metric.value, names),
                    expected=one_of(names),
                    at_key=at_key,
                    code="metric_task_mismatch",
                )
            )

    metrics = spec.metrics
    check(metrics.primary, ("spec", "metrics", "primary"))
    for i, metric in enumerate(metrics.report):
        check(metric, ("spec", "metrics", "report", i))
    for metric in metrics.thresholds:
        check(metric, ("spec", "metrics", "thresholds", metric.value), at_key=True)
    if spec.sweep is not None and spec.sweep.selection.metric is not None:
        check(spec.sweep.selection.metric, ("spec", "sweep", "selection", "metric"))
    return issues


def _param_targets(spec: ModelSpec, issues: list[SemanticIssue]) -> dict[str, str]:
    """Map every tunable target name ('estimator', 'scale', 'prep.onehot') to its import path."""
    estimator = spec.pipeline.estimator
    targets = {"estimator": estimator.import_path}
    for i, step in enumerate(spec.pipeline.steps):
        loc: Loc = ("spec", "pipeline", "steps", i)
        if step.name in targets:
            issues.append(
                SemanticIssue(
                    (*loc, "name"),
                    f"step name '{step.name}' is used twice (or is the reserved 'estimator')",
                    code="duplicate_name",
                )
            )
        if isinstance(step, ColumnTransformerStep):
            targets[step.name] = "sklearn.compose.ColumnTransformer"
            for entry in step.transformers:
                targets[f"{step.name}.{entry.name}"] = entry.import_path
        else:
            targets[step.name] = step.import_path
    return targets


def _sweep_key_issues(key: str, targets: Mapping[str, str]) -> list[SemanticIssue]:
    loc: Loc = ("spec", "sweep", "params", key)
    target, _, param = key.rpartition(".")
    if not target or not param:
        return [
            SemanticIssue(
                loc,
                f"sweep parameter '{key}' must be '<step>.<param>'",
                at_key=True,
                expected="e.g. 'estimator.max_depth'",
                code="invalid_sweep_param",
            )
        ]
    if target not in targets:
        guess = did_you_mean(target, targets)
        return [
            SemanticIssue(
                loc,
                f"sweep parameter '{key}' targets unknown step '{target}'",
                suggestion=f"{guess}.{param}" if guess else None,
                expected=one_of(targets),
                at_key=True,
                code="unknown_reference",
            )
        ]
    return [
        SemanticIssue(
            loc,
            f"unknown parameter '{param}' of '{target}'",
            suggestion=f"{target}.{guess}",
            at_key=True,
            code="unknown_param",
        )
        for guess in _typo_guess(param, KNOWN_PARAMS.get(targets[target]))
    ]


def _typo_guess(name: str, known: Iterable[str] | None) -> list[str]:
    if known is None or name in set(known):
        return []
    guess = did_you_mean(name, list(known), cutoff=_PARAM_TYPO_CUTOFF)
    return [guess] if guess else []
