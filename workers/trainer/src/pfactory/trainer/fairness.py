"""Group fairness of a binary classifier's decisions, per protected attribute, with fairlearn.

The report has the shape :mod:`pfactory.registry.cards` reads (and the registrar gates on)::

    {"<attribute>": {
        "<measure>": 0.42 | None,                    # None: undefined, see "notes"
        "threshold": 0.5,                            # score at or above which a row is selected
        "largest_gap_groups": ["<lowest selection rate>", "<highest selection rate>"],
        "groups": {"<group>": {"count", "selection_rate", "tpr", "fpr", "precision", "positive_rate"}},
        "notes": ["why a measure or rate is undefined", ...]}}

``positive_rate`` is the share of actual positives in the group (its base rate); ``selection_rate``
the share predicted positive. Rows whose attribute is null form the group ``"missing"``. A measure
that cannot be computed (a group without positives has no TPR) is None rather than a guess: the
registrar treats a missing measure as a failed gate, and the note says what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from fairlearn.metrics import MetricFrame, count, selection_rate  # type: ignore[import-untyped]
from numpy.typing import ArrayLike, NDArray

from pfactory.contracts.configs.metrics import FairnessMetric

MISSING_GROUP = "missing"
Rates = NDArray[np.int_]


def _rate(numerator: Rates, denominator: Rates) -> float:
    """A share; NaN when the denominator is empty (fairlearn's confusion-matrix rates would say 0)."""
    total = int(denominator.sum())
    return float(numerator.sum() / total) if total else math.nan


def _tpr(y_true: Rates, y_pred: Rates) -> float:
    return _rate((y_true == 1) & (y_pred == 1), y_true == 1)


def _fpr(y_true: Rates, y_pred: Rates) -> float:
    return _rate((y_true == 0) & (y_pred == 1), y_true == 0)


def _precision(y_true: Rates, y_pred: Rates) -> float:
    return _rate((y_true == 1) & (y_pred == 1), y_pred == 1)


def _positive_rate(y_true: Rates, y_pred: Rates) -> float:
    return _rate(y_true == 1, np.ones_like(y_true))


_RATES: dict[str, Callable[..., float]] = {
    "count": count,
    "selection_rate": selection_rate,
    "tpr": _tpr,
    "fpr": _fpr,
    "precision": _precision,
    "positive_rate": _positive_rate,
}
_WHY_UNDEFINED = {
    "tpr": "has no actual positives: its true positive rate is undefined, and so are "
    "equal_opportunity_difference and equalized_odds_difference",
    "fpr": "has no actual negatives: its false positive rate is undefined, and so is equalized_odds_difference",
    "precision": "has no selected rows: its precision is undefined, and so is predictive_parity_difference",
}
_ADVICE = "; a larger test split (spec.training.split.test_fraction) or merging rare groups upstream helps"


def _groups(values: pd.Series) -> pd.Series:
    """Group names as strings; nulls become the group ``"missing"``."""
    as_text = values.astype(object).where(values.notna(), MISSING_GROUP)
    return as_text.map(str)


def _gap(by_group: pd.Series) -> float | None:
    defined = by_group.dropna()
    if len(defined) < len(by_group) or defined.empty:
        return None
    return float(defined.max() - defined.min())


def _measures(rates: pd.DataFrame, notes: list[str]) -> dict[str, float | None]:
    tpr_gap, fpr_gap = _gap(rates["tpr"]), _gap(rates["fpr"])
    selection = rates["selection_rate"]
    top = float(selection.max())
    if top == 0:
        notes.append(
            "no group has a selected row: disparate_impact_ratio (min/max selection rate) is undefined"
        )
    for column, why in _WHY_UNDEFINED.items():
        notes += [f"group {group!r} {why}{_ADVICE}" for group in rates.index[rates[column].isna()]]
    return {
        FairnessMetric.DEMOGRAPHIC_PARITY_DIFFERENCE: _gap(selection),
        FairnessMetric.EQUAL_OPPORTUNITY_DIFFERENCE: tpr_gap,
        FairnessMetric.EQUALIZED_ODDS_DIFFERENCE: (
            None if tpr_gap is None or fpr_gap is None else max(tpr_gap, fpr_gap)
        ),
        FairnessMetric.PREDICTIVE_PARITY_DIFFERENCE: _gap(rates["precision"]),
        FairnessMetric.DISPARATE_IMPACT_RATIO: float(selection.min()) / top if top else None,
    }


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def fairness_report(
    y_true: ArrayLike,
    scores: ArrayLike,
    groups: pd.DataFrame,
    measures: Sequence[FairnessMetric | str],
    *,
    threshold: float,
    min_group_size: int = 1,
) -> dict[str, Any]:
    """Per protected attribute: the requested fairness measures and per-group rates.

    Args:
        y_true: actual outcomes, 1 for the positive class, else 0.
        scores: positive-class probabilities for the same rows.
        groups: one column per protected attribute (``spec.fairness.protected_attributes``), row-aligned.
        measures: the measures to report (``spec.fairness.metrics``); each is a gap between the
            groups' rates, except ``disparate_impact_ratio`` (lowest / highest selection rate).
        threshold: score at or above which a row counts as selected (``spec.fairness.decision_threshold``).
        min_group_size: groups with fewer rows are reported but left out of the measures
            (``spec.fairness.min_group_size``).

    Returns:
        ``{attribute: {measure: value | None, "threshold", "largest_gap_groups", "groups", "notes"}}``
        (JSON-serialisable; no NaN).

    Raises:
        ValueError: mismatched lengths, outcomes other than 0/1, or an unknown measure.
    """
    y = np.asarray(y_true)
    decisions = (np.asarray(scores, dtype=np.float64) >= threshold).astype(np.int64)
    if not (len(y) == len(decisions) == len(groups)):
        raise ValueError(
            f"fairness needs aligned rows: y_true has {len(y)}, scores {len(decisions)}, groups {len(groups)}"
        )
    if not np.isin(y, [0, 1]).all():
        raise ValueError("fairness y_true must hold 0/1 only: map the labels with spec.labels.positive_class")
    wanted = [FairnessMetric(m) for m in measures]
    report: dict[str, Any] = {}
    for attribute in groups.columns:
        frame = MetricFrame(
            metrics=_RATES,
            y_true=y.astype(np.int64),
            y_pred=decisions,
            sensitive_features=_groups(groups[attribute].reset_index(drop=True)).rename(str(attribute)),
        )
        rates: pd.DataFrame = frame.by_group
        rates.index = rates.index.map(str)
        notes: list[str] = []
        small = rates.index[rates["count"] < min_group_size]
        notes += [
            f"group {group!r} has {int(rates.loc[group, 'count'])} rows, fewer than "
            f"spec.fairness.min_group_size ({min_group_size}): reported, but left out of the gaps"
            for group in small
        ]
        compared = rates.drop(index=small)
        if len(compared) < 2:
            notes.append(f"fewer than two groups have {min_group_size} rows or more: no gap can be measured")
            computed: dict[str, float | None] = dict.fromkeys(FairnessMetric, None)
        else:
            computed = _measures(compared, notes)
        selection = compared["selection_rate"] if len(compared) else rates["selection_rate"]
        report[str(attribute)] = {
            **{m.value: computed[m] for m in wanted},
            "threshold": threshold,
            "largest_gap_groups": [str(selection.idxmin()), str(selection.idxmax())],
            "groups": {
                group: {name: (int(v) if name == "count" else _number(v)) for name, v in row.items()}
                for group, row in rates.to_dict(orient="index").items()
            },
            "notes": notes,
        }
    return report
