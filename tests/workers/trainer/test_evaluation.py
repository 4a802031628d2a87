"""Holdout metrics: the fast weighted implementations agree with scikit-learn, intervals behave."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn import metrics as skm

from pfactory.contracts.configs.metrics import TASK_METRICS, Metric, Task
from pfactory.registry.cards import build_card
from pfactory.trainer.evaluation import Prediction, calibration, evaluate, weighted_metrics
from tests.registry.factories import PAIR, make_version

BINARY = sorted(TASK_METRICS[Task.BINARY_CLASSIFICATION])
MULTICLASS = sorted(TASK_METRICS[Task.MULTICLASS_CLASSIFICATION])
REGRESSION = sorted(TASK_METRICS[Task.REGRESSION])


def _binary_data(n: int, *, ties: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    scores = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, (np.round(scores, 1) if ties else scores)  # one decimal: heavy ties, scores exactly 0.5


def _sklearn_binary(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, metrics: Sequence[Metric] = BINARY
) -> dict[Metric, float]:
    d = (p >= threshold).astype(int)

    def pr_auc() -> float:
        precision, recall, _ = skm.precision_recall_curve(y, p)
        return float(skm.auc(recall, precision))

    oracle: dict[Metric, Callable[[], float]] = {
        Metric.ROC_AUC: lambda: skm.roc_auc_score(y, p),
        Metric.PR_AUC: pr_auc,
        Metric.AVERAGE_PRECISION: lambda: skm.average_precision_score(y, p),
        Metric.LOG_LOSS: lambda: skm.log_loss(y, p),
        Metric.BRIER_SCORE: lambda: skm.brier_score_loss(y, p),
        Metric.ACCURACY: lambda: skm.accuracy_score(y, d),
        Metric.BALANCED_ACCURACY: lambda: skm.balanced_accuracy_score(y, d),
        Metric.PRECISION: lambda: skm.precision_score(y, d, zero_division=0),
        Metric.RECALL: lambda: skm.recall_score(y, d),
        Metric.F1: lambda: skm.f1_score(y, d),
        Metric.KS_STATISTIC: lambda: ks_2samp(p[y == 1], p[y == 0]).statistic,
    }
    return {metric: float(oracle[metric]()) for metric in metrics}


def _draws(n: int, k: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """k bootstrap index sets and the same draws as row-count weights."""
    index = np.random.default_rng(seed).integers(0, n, size=(k, n))
    return index, np.stack([np.bincount(row, minlength=n) for row in index])


@pytest.mark.parametrize("ties", [False, True], ids=["distinct-scores", "tied-scores"])
def test_binary_metrics_equal_sklearn_on_the_sample_and_on_resamples(ties: bool) -> None:
    y, p = _binary_data(500, ties=ties)
    index, counts = _draws(len(y), 4)
    weights = np.vstack([np.ones(len(y)), counts])
    got = weighted_metrics(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), BINARY, weights)
    for row, rows in enumerate([np.arange(len(y)), *index]):
        expected = _sklearn_binary(y[rows], p[rows])
        for metric in BINARY:
            assert got[metric][row] == pytest.approx(expected[metric], abs=1e-12), (metric, row)


def test_binary_decisions_use_the_threshold() -> None:
    y, p = _binary_data(300, ties=True)
    got = weighted_metrics(
        Task.BINARY_CLASSIFICATION,
        y,
        Prediction(scores=p),
        [Metric.RECALL, Metric.F1],
        np.ones(300),
        threshold=0.3,
    )
    assert got[Metric.RECALL][0] == pytest.approx(skm.recall_score(y, p >= 0.3))
    assert got[Metric.F1][0] == pytest.approx(skm.f1_score(y, p >= 0.3))


def _multiclass_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    classes = np.array(["bad", "good", "ok"])
    y = classes[rng.integers(0, 3, n)]
    logits = rng.normal(size=(n, 3)) + 1.5 * (y[:, None] == classes[None, :])
    proba = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    proba /= proba.sum(axis=1, keepdims=True)
    return y, proba, classes


def test_multiclass_metrics_equal_sklearn_including_a_resample_missing_a_class() -> None:
    y, proba, classes = _multiclass_data(400)
    labels = classes[proba.argmax(axis=1)]
    index, counts = _draws(len(y), 3)
    no_ok = np.flatnonzero(y != "ok")  # a resample where class "ok" is never the truth
    index = np.vstack([index, no_ok[np.random.default_rng(5).integers(0, no_ok.size, len(y))]])
    counts = np.vstack([counts, np.bincount(index[-1], minlength=len(y))])
    weights = np.vstack([np.ones(len(y)), counts])
    prediction = Prediction(scores=proba, labels=labels, classes=classes)
    got = weighted_metrics(Task.MULTICLASS_CLASSIFICATION, y, prediction, MULTICLASS, weights)
    for row, rows in enumerate([np.arange(len(y)), *index]):
        yt, yp, pr = y[rows], labels[rows], proba[rows]
        expected = {
            Metric.ACCURACY: skm.accuracy_score(yt, yp),
            Metric.F1_MACRO: skm.f1_score(yt, yp, average="macro", zero_division=0),
            Metric.F1_WEIGHTED: skm.f1_score(yt, yp, average="weighted", zero_division=0),
            Metric.LOG_LOSS: skm.log_loss(yt, pr, labels=classes),
        }
        if len(set(yt)) == 3:
            expected[Metric.ROC_AUC_OVR] = skm.roc_auc_score(yt, pr, multi_class="ovr", labels=classes)
            expected[Metric.BALANCED_ACCURACY] = skm.balanced_accuracy_score(yt, yp)
        else:  # one-vs-rest AUC needs every class: the resample is skipped
            assert np.isnan(got[Metric.ROC_AUC_OVR][row])
        for metric, value in expected.items():
            assert got[metric][row] == pytest.approx(value, abs=1e-12), (metric, row)


def test_regression_metrics_equal_sklearn_on_the_sample_and_on_resamples() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(1000, 50, 300)  # a large mean: r2 must not lose precision to cancellation
    y[:5] = 0.0  # mape divides by max(|y|, eps), as scikit-learn does
    predicted = y + rng.normal(0, 20, 300)
    index, counts = _draws(300, 3)
    weights = np.vstack([np.ones(300), counts])
    got = weighted_metrics(Task.REGRESSION, y, Prediction(scores=predicted), REGRESSION, weights)
    for row, rows in enumerate([np.arange(300), *index]):
        expected = {
            Metric.RMSE: skm.root_mean_squared_error(y[rows], predicted[rows]),
            Metric.MAE: skm.mean_absolute_error(y[rows], predicted[rows]),
            Metric.R2: skm.r2_score(y[rows], predicted[rows]),
            Metric.MAPE: skm.mean_absolute_percentage_error(y[rows], predicted[rows]),
        }
        for metric, value in expected.items():
            assert got[metric][row] == pytest.approx(value, rel=1e-9), (metric, row)


def test_evaluate_reports_values_with_intervals_around_them() -> None:
    y, p = _binary_data(2000, ties=False)
    report = evaluate(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), BINARY, resamples=200, seed=7)
    assert set(report) == {m.value for m in BINARY}
    full = _sklearn_binary(y, p)
    for metric in BINARY:
        entry = report[metric.value]
        assert entry["value"] == pytest.approx(full[metric], abs=1e-12)
        assert entry["ci_low"] < entry["value"] < entry["ci_high"], metric
        assert entry["ci_high"] - entry["ci_low"] < 0.15, metric  # 2,000 rows: a tight interval
        assert "resamples" not in entry
    json.dumps(report, allow_nan=False)
    again = evaluate(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), BINARY, resamples=200, seed=7)
    other = evaluate(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), BINARY, resamples=200, seed=8)
    assert again == report
    assert other["roc_auc"]["ci_low"] != report["roc_auc"]["ci_low"]


FIVE = [Metric.ROC_AUC, Metric.PR_AUC, Metric.LOG_LOSS, Metric.BRIER_SCORE, Metric.KS_STATISTIC]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct-scores", "tied-scores"])
def test_intervals_are_sklearns_percentiles_over_the_same_bootstrap_draws(ties: bool) -> None:
    """The whole bootstrap against scikit-learn, on the draws ``evaluate`` makes.

    Resample r is ``rng.integers(0, n, n)``: positions in the rows sorted by ascending score (the order
    the binary metrics hold them in). 1,200 rows and 80 resamples span two chunks of the weight matrix.
    """
    y, p = _binary_data(1200, ties=ties, seed=3)
    report = evaluate(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), FIVE, resamples=80, seed=11)
    positions = np.random.default_rng(11).integers(0, len(y), size=(80, len(y)))
    by_score = np.argsort(p, kind="stable")
    draws = [_sklearn_binary(y[rows], p[rows], metrics=FIVE) for rows in by_score[positions]]
    for metric in FIVE:
        low, high = np.percentile([draw[metric] for draw in draws], [2.5, 97.5])
        entry = report[metric.value]
        assert entry["ci_low"] == pytest.approx(low, abs=1e-12), metric
        assert entry["ci_high"] == pytest.approx(high, abs=1e-12), metric


def test_fractional_weights_in_any_memory_layout_equal_sklearns_sample_weight() -> None:
    y, p = _binary_data(400, ties=True, seed=5)
    weights = np.random.default_rng(6).random((400, 3)).T  # Fortran order: a transposed view
    got = weighted_metrics(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), BINARY, weights)
    for row, w in enumerate(weights):
        precision, recall, _ = skm.precision_recall_curve(y, p, sample_weight=w)
        expected = {
            Metric.ROC_AUC: skm.roc_auc_score(y, p, sample_weight=w),
            Metric.PR_AUC: skm.auc(recall, precision),
            Metric.AVERAGE_PRECISION: skm.average_precision_score(y, p, sample_weight=w),
            Metric.LOG_LOSS: skm.log_loss(y, p, sample_weight=w),
            Metric.BRIER_SCORE: skm.brier_score_loss(y, p, sample_weight=w),
        }
        for metric, value in expected.items():
            assert got[metric][row] == pytest.approx(value, abs=1e-12), (metric, row)


def test_a_zero_ks_statistic_is_positive_zero_in_the_report() -> None:
    y, p = np.array([0, 1, 0, 1]), np.array([0.2, 0.2, 0.7, 0.7])  # identical score distributions
    report = evaluate(
        Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), ["ks_statistic"], resamples=50, seed=0
    )
    assert report["ks_statistic"]["value"] == 0.0
    assert math.copysign(1.0, report["ks_statistic"]["value"]) == 1.0
    assert '"value": 0.0' in json.dumps(report)


def test_the_task_may_be_named_by_its_value() -> None:
    y, p = _binary_data(200, ties=False)
    by_name = evaluate("binary_classification", y, Prediction(scores=p), FIVE, resamples=20, seed=2)  # type: ignore[arg-type]
    assert by_name == evaluate(
        Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), FIVE, resamples=20, seed=2
    )


def test_interval_width_shrinks_with_more_rows() -> None:
    small_y, small_p = _binary_data(200, ties=False)
    large_y, large_p = _binary_data(5000, ties=False)

    def width(y: np.ndarray, p: np.ndarray) -> float:
        entry = evaluate(
            Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), ["roc_auc"], resamples=300, seed=1
        )
        return entry["roc_auc"]["ci_high"] - entry["roc_auc"]["ci_low"]

    assert width(large_y, large_p) < width(small_y, small_p) / 3  # ~ sqrt(25) = 5 times narrower


def test_zero_resamples_gives_the_point_estimate_as_its_own_interval() -> None:
    y, p = _binary_data(100, ties=True)
    report = evaluate(
        Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), ["roc_auc", "f1"], resamples=0, seed=0
    )
    for entry in report.values():
        assert entry["ci_low"] == entry["value"] == entry["ci_high"]


def test_resamples_without_both_classes_are_skipped_and_counted() -> None:
    y = np.zeros(30, dtype=int)
    y[0] = 1  # one positive: about e^-1 = 37% of resamples draw none
    p = np.linspace(0.05, 0.95, 30)
    report = evaluate(
        Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), ["roc_auc", "accuracy"], resamples=400, seed=3
    )
    used = report["roc_auc"]["resamples"]
    assert 0.5 * 400 < used < 0.8 * 400
    assert "resamples" not in report["accuracy"]  # accuracy is defined on every resample


def test_a_metric_undefined_on_the_whole_test_split_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"roc_auc is undefined on the test split .*both classes"):
        evaluate(
            Task.BINARY_CLASSIFICATION,
            np.zeros(50),
            Prediction(scores=np.full(50, 0.2)),
            ["roc_auc"],
            resamples=10,
            seed=0,
        )


@pytest.mark.parametrize(
    ("task", "y", "scores", "metrics", "message"),
    [
        (Task.REGRESSION, [1.0, 2.0], [1.0, 2.0], ["roc_auc"], r"\['roc_auc'\] do not apply to regression"),
        (Task.BINARY_CLASSIFICATION, [0, 2], [0.1, 0.9], ["accuracy"], "positive_class"),
        (Task.BINARY_CLASSIFICATION, [0, 1], [0.1, 1.7], ["accuracy"], r"probabilities in \[0, 1\]"),
        (
            Task.BINARY_CLASSIFICATION,
            [0, 1, 1],
            [0.1, 0.9],
            ["accuracy"],
            "3 rows but prediction.scores has 2",
        ),
        (Task.BINARY_CLASSIFICATION, [0, 1], [0.1, np.nan], ["accuracy"], "NaN"),
    ],
)
def test_bad_inputs_are_refused_with_advice(
    task: Task, y: list[Any], scores: list[float], metrics: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(task, np.array(y), Prediction(scores=np.array(scores)), metrics, resamples=5, seed=0)


def test_bootstrap_timing_of_five_metrics_on_2000_rows() -> None:
    """Budget: < 30 ms for 5 metrics x 200 resamples x 2,000 rows (printed, not asserted)."""
    y, p = _binary_data(2000, ties=False)
    five = [Metric.ROC_AUC, Metric.PR_AUC, Metric.LOG_LOSS, Metric.BRIER_SCORE, Metric.KS_STATISTIC]
    timings = []
    for _ in range(7):
        began = time.perf_counter()
        evaluate(Task.BINARY_CLASSIFICATION, y, Prediction(scores=p), five, resamples=200, seed=1)
        timings.append((time.perf_counter() - began) * 1000)
    print(f"\nevaluate: 5 metrics x 200 resamples x 2,000 rows: median {statistics.median(timings):.1f} ms")


def test_calibration_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(11)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    calibrated = calibration(y, p, bins=10)
    assert calibrated["bins"] == 10 and len(calibrated["curve"]) == 10
    assert sum(b["count"] for b in calibrated["curve"]) == 20_000
    assert [b["count"] for b in calibrated["curve"]] == [2000] * 10  # quantile bins: equal counts
    assert calibrated["ece"] < 0.02
    for bin_ in calibrated["curve"]:
        assert bin_["observed"] == pytest.approx(bin_["predicted"], abs=0.05)
    overconfident = calibration(y, np.where(p > 0.5, 0.99, 0.01), bins=10)
    # tied probabilities merge the quantile bins: two remain, each ~0.24 away from what happens
    assert len(overconfident["curve"]) == 2
    assert overconfident["ece"] == pytest.approx(0.24, abs=0.02)


def test_the_model_card_reads_the_calibration_curve() -> None:
    y, p = _binary_data(1000, ties=False)
    document = {"calibration": calibration(y, p, bins=5)}
    card = build_card(make_version(PAIR, 1, "job-1"), metrics_document=json.loads(json.dumps(document)))
    assert card.calibration is not None
    assert [(b.predicted, b.observed, b.count) for b in card.calibration.curve] == [
        (b["predicted"], b["observed"], b["count"]) for b in document["calibration"]["curve"]
    ]
    assert card.calibration.metrics["ece"] == document["calibration"]["ece"]
