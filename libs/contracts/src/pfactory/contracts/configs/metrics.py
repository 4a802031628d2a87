"""Task, metric and fairness-metric vocabularies, and which metrics fit which task."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Task(StrEnum):
    """The prediction task."""

    BINARY_CLASSIFICATION = "binary_classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification"
    REGRESSION = "regression"


class Metric(StrEnum):
    """An evaluation metric."""

    ROC_AUC = "roc_auc"
    PR_AUC = "pr_auc"
    AVERAGE_PRECISION = "average_precision"
    LOG_LOSS = "log_loss"
    BRIER_SCORE = "brier_score"
    ACCURACY = "accuracy"
    BALANCED_ACCURACY = "balanced_accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    KS_STATISTIC = "ks_statistic"
    F1_MACRO = "f1_macro"
    F1_WEIGHTED = "f1_weighted"
    ROC_AUC_OVR = "roc_auc_ovr"
    RMSE = "rmse"
    MAE = "mae"
    R2 = "r2"
    MAPE = "mape"


TASK_METRICS: Mapping[Task, frozenset[Metric]] = MappingProxyType(
    {
        Task.BINARY_CLASSIFICATION: frozenset(
            {
                Metric.ROC_AUC,
                Metric.PR_AUC,
                Metric.AVERAGE_PRECISION,
                Metric.LOG_LOSS,
                Metric.BRIER_SCORE,
                Metric.ACCURACY,
                Metric.BALANCED_ACCURACY,
                Metric.PRECISION,
                Metric.RECALL,
                Metric.F1,
                Metric.KS_STATISTIC,
            }
        ),
        Task.MULTICLASS_CLASSIFICATION: frozenset(
            {
                Metric.ACCURACY,
                Metric.BALANCED_ACCURACY,
                Metric.F1_MACRO,
                Metric.F1_WEIGHTED,
                Metric.ROC_AUC_OVR,
                Metric.LOG_LOSS,
            }
        ),
        Task.REGRESSION: frozenset({Metric.RMSE, Metric.MAE, Metric.R2, Metric.MAPE}),
    }
)
"""Metrics that make sense for each task."""

LOWER_IS_BETTER: frozenset[Metric] = frozenset(
    {Metric.LOG_LOSS, Metric.BRIER_SCORE, Metric.RMSE, Metric.MAE, Metric.MAPE}
)
"""Metrics where smaller is better: their thresholds are maxima, the others' are minima."""


class FairnessMetric(StrEnum):
    """A group-fairness measure, computed across values of a protected attribute."""

    DEMOGRAPHIC_PARITY_DIFFERENCE = "demographic_parity_difference"
    EQUAL_OPPORTUNITY_DIFFERENCE = "equal_opportunity_difference"
    EQUALIZED_ODDS_DIFFERENCE = "equalized_odds_difference"
    PREDICTIVE_PARITY_DIFFERENCE = "predictive_parity_difference"
    DISPARATE_IMPACT_RATIO = "disparate_impact_ratio"
