"""Fairness reports: known answers by construction, fairlearn as the oracle, the credit example's bias, the card."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    mean_prediction,
    selection_rate,
    true_positive_rate,
)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_score

from pfactory.contracts.configs.metrics import FairnessMetric
from pfactory.registry.cards import build_card, fairness_gate, fairness_measure
from pfactory.trainer.fairness import fairness_report
from tests.registry.factories import PAIR, make_version

ALL = list(FairnessMetric)
GENERATOR = Path(__file__).resolve().parents[3] / "examples" / "credit" / "generate_data.py"


def _block(n: int, positives: int, tp: int, fp: int) -> tuple[list[int], list[float]]:
    """n rows, ``positives`` of them positive; ``tp`` positives and ``fp`` negatives selected."""
    y = [1] * positives + [0] * (n - positives)
    selected = [True] * tp + [False] * (positives - tp) + [True] * fp + [False] * (n - positives - fp)
    return y, [0.9 if s else 0.1 for s in selected]


@pytest.fixture
def constructed() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Group A: 80% selected (TPR 0.8, FPR 0.8, precision 0.5); B: 20% (TPR 0.36, FPR 0.04, precision 0.9)."""
    ya, sa = _block(100, 50, tp=40, fp=40)
    yb, sb = _block(100, 50, tp=18, fp=2)
    groups = pd.DataFrame({"segment": ["A"] * 100 + ["B"] * 100})
    return np.array(ya + yb), np.array(sa + sb), groups


def test_measures_match_the_construction_and_fairlearn(
    constructed: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, groups = constructed
    section = fairness_report(y, scores, groups, ALL, threshold=0.5)["segment"]
    assert section["demographic_parity_difference"] == pytest.approx(0.6)
    assert section["equal_opportunity_difference"] == pytest.approx(0.8 - 0.36)
    assert section["equalized_odds_difference"] == pytest.approx(0.8 - 0.04)  # the larger of the two gaps
    assert section["predictive_parity_difference"] == pytest.approx(0.4)
    assert section["disparate_impact_ratio"] == pytest.approx(0.25)
    assert section["largest_gap_groups"] == ["B", "A"]  # B is selected least
    assert section["threshold"] == 0.5
    assert section["groups"]["A"] == pytest.approx(
        {"count": 100, "selection_rate": 0.8, "tpr": 0.8, "fpr": 0.8, "precision": 0.5, "positive_rate": 0.5}
    )
    assert section["groups"]["B"]["tpr"] == pytest.approx(0.36)
    assert section["notes"] == []
    decisions = (scores >= 0.5).astype(int)
    segment = groups["segment"]
    assert section["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, decisions, sensitive_features=segment)
    )
    assert section["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, decisions, sensitive_features=segment)
    )
    assert section["disparate_impact_ratio"] == pytest.approx(
        demographic_parity_ratio(y, decisions, sensitive_features=segment)
    )


def test_the_threshold_decides_who_is_selected(
    constructed: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, groups = constructed
    section = fairness_report(y, scores, groups, ALL, threshold=0.95)["segment"]  # nobody reaches it
    assert section["demographic_parity_difference"] == 0.0
    assert section["disparate_impact_ratio"] is None
    assert any("disparate_impact_ratio" in note for note in section["notes"])


def test_only_the_requested_measures_are_reported(
    constructed: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, groups = constructed
    section = fairness_report(y, scores, groups, ["demographic_parity_difference"], threshold=0.5)["segment"]
    assert set(section) == {
        "demographic_parity_difference",
        "threshold",
        "largest_gap_groups",
        "groups",
        "notes",
    }


def test_null_attribute_values_form_the_missing_group() -> None:
    y = np.array([1, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.9, 0.9, 0.2, 0.1])
    groups = pd.DataFrame(
        {"gender": ["f", "f", "m", "m", None, np.nan], "band": pd.Categorical([1, 1, 2, 2, 2, None])}
    )
    report = fairness_report(y, scores, groups, ALL, threshold=0.5)
    assert report["gender"]["groups"]["missing"]["count"] == 2
    assert set(report["gender"]["groups"]) == {"f", "m", "missing"}
    assert set(report["band"]["groups"]) == {"1", "2", "missing"}


def test_an_undefined_rate_gives_null_with_a_note_and_fails_the_gate_reader() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])  # group "b" has no positives: its TPR is undefined
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.1])
    groups = pd.DataFrame({"group": ["a", "a", "a", "a", "b", "b"]})
    report = fairness_report(y, scores, groups, ALL, threshold=0.5)
    section = report["group"]
    assert section["equal_opportunity_difference"] is None
    assert section["equalized_odds_difference"] is None
    assert section["demographic_parity_difference"] == pytest.approx(0.5 - 0.5)
    assert section["groups"]["b"]["tpr"] is None
    assert any("'b' has no actual positives" in note for note in section["notes"])
    document = json.loads(json.dumps(report, allow_nan=False))
    assert fairness_measure(document, "group", "equal_opportunity_difference") is None


def test_mismatched_rows_and_non_binary_labels_are_refused() -> None:
    groups = pd.DataFrame({"g": ["a", "b"]})
    with pytest.raises(ValueError, match="aligned rows"):
        fairness_report(np.array([0, 1, 1]), np.array([0.2, 0.8, 0.5]), groups, ALL, threshold=0.5)
    with pytest.raises(ValueError, match="positive_class"):
        fairness_report(np.array([0, 2]), np.array([0.2, 0.8]), groups, ALL, threshold=0.5)


def test_the_model_card_reads_the_report(constructed: tuple[np.ndarray, np.ndarray, pd.DataFrame]) -> None:
    y, scores, groups = constructed
    report = json.loads(json.dumps(fairness_report(y, scores, groups, ALL, threshold=0.5), allow_nan=False))
    for measure in ALL:
        assert fairness_measure(report, "segment", measure.value) == report["segment"][measure.value]
    config = {
        "kind": "Model",
        "metadata": {"name": PAIR.model_name},
        "spec": {
            "fairness": {
                "protected_attributes": ["segment"],
                "metrics": ["demographic_parity_difference"],
                "constraints": {"demographic_parity_difference": 0.1},
            }
        },
    }
    gate = fairness_gate("segment", "demographic_parity_difference")
    card = build_card(make_version(PAIR, 1, "job-1", fairness=report, config=config, gates={gate: False}))
    [check] = card.fairness
    assert (check.value, check.limit, check.passed) == (pytest.approx(0.6), 0.1, False)
    rates = {(g.group, k): v for g in card.fairness_groups for k, v in g.values.items()}
    assert rates[("B", "selection_rate")] == pytest.approx(0.2)
    assert rates[("A", "count")] == 100


def _generator() -> ModuleType:
    name = "pfactory_examples_credit_generate_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GENERATOR)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_the_credit_examples_injected_age_bias_is_caught_and_gender_is_not(tmp_path: Path) -> None:
    gen = _generator()
    gen.generate(tmp_path, "2024-01-01", days=5, applicants_per_day=4000, seed=7, progress_every=0)
    applicants = pd.read_parquet(tmp_path / "applicants")  # ds comes back as the hive partition column
    labels = pd.read_parquet(tmp_path / "labels")
    data = applicants.merge(labels, on="applicant_id")
    data["age_band"] = gen.age_band(data["age"].to_numpy())
    inputs = ["age", "annual_income", "monthly_debt_payments", "months_at_address"]
    train = data["ds"].astype(str) <= "2024-01-03"
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    model.fit(data.loc[train, inputs], data.loc[train, "defaulted_12m"])
    test = data.loc[~train].reset_index(drop=True)
    scores = model.predict_proba(test[inputs])[:, 1]
    # decide at the base rate, as a lender ranking applicants would: at 0.5 the 18-24s' recorded
    # rate (~0.56) sits on the threshold and their selection rate is a coin flip
    base_rate = float(data.loc[train, "defaulted_12m"].mean())
    report = fairness_report(
        test["defaulted_12m"].to_numpy(), scores, test[["age_band", "gender"]], ALL, threshold=base_rate
    )
    age, gender = report["age_band"], report["gender"]
    print(
        f"\nthreshold {base_rate:.3f}: demographic parity difference age_band "
        f"{age['demographic_parity_difference']:.3f}, gender {gender['demographic_parity_difference']:.3f}; "
        f"equal opportunity age_band {age['equal_opportunity_difference']:.3f}"
    )
    assert age["demographic_parity_difference"] > 0.5
    assert age["largest_gap_groups"][1] == "18-24"  # most often predicted to default
    assert age["equal_opportunity_difference"] > 0.3
    assert gender["demographic_parity_difference"] < 0.1  # the small groups' sampling noise, no more
    rates = gender["groups"]
    assert abs(rates["female"]["selection_rate"] - rates["male"]["selection_rate"]) < 0.05
    assert set(gender["groups"]) == {"female", "male", "non_binary", "missing"}


def test_groups_below_the_minimum_size_are_reported_but_left_out_of_the_gaps() -> None:
    # 100 rows each of A (selected 60%) and B (40%), and 5 rows of C, none selected: C alone would make
    # the parity gap 0.6 and fail a 0.3 constraint on the strength of five rows
    y = np.array([1, 0] * 100 + [1, 0, 1, 0, 1])
    scores = np.array([0.9] * 60 + [0.1] * 40 + [0.9] * 40 + [0.1] * 60 + [0.1] * 5)
    groups = pd.DataFrame({"band": ["A"] * 100 + ["B"] * 100 + ["C"] * 5})
    measures = [FairnessMetric.DEMOGRAPHIC_PARITY_DIFFERENCE]

    everyone = fairness_report(y, scores, groups, measures, threshold=0.5)
    sized = fairness_report(y, scores, groups, measures, threshold=0.5, min_group_size=30)

    assert everyone["band"]["demographic_parity_difference"] == pytest.approx(0.6)
    assert sized["band"]["demographic_parity_difference"] == pytest.approx(0.2)
    assert sized["band"]["groups"]["C"]["count"] == 5  # still reported
    assert sized["band"]["largest_gap_groups"] == ["B", "A"]
    assert any(
        "'C' has 5 rows, fewer than spec.fairness.min_group_size (30)" in n for n in sized["band"]["notes"]
    )
    alone = fairness_report(y[:100], scores[:100], groups[:100], measures, threshold=0.5, min_group_size=200)
    assert alone["band"]["demographic_parity_difference"] is None
    assert any("no gap can be measured" in n for n in alone["band"]["notes"])


def test_an_empty_test_split_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        fairness_report(np.array([]), np.array([]), pd.DataFrame({"g": []}), ALL, threshold=0.5)


# ------------------------------------------------------------------ fairlearn as the oracle
# The report's per-group rates are bincount sums; fairlearn's MetricFrame (and its own disparity
# functions) computes the same numbers group by group. They must agree to 1e-12.

FAIRLEARN_RATES = {
    "count": count,
    "selection_rate": selection_rate,
    "tpr": true_positive_rate,
    "fpr": false_positive_rate,
    "precision": lambda y, d: precision_score(y, d, zero_division=np.nan),
    "positive_rate": lambda y, d: mean_prediction(d, y),  # the share of actual positives
}


def _names(values: pd.Series) -> pd.Series:
    """Group names as the report defines them: ``str`` of the value, nulls ``"missing"``."""
    return values.astype(object).where(values.notna(), "missing").map(str).reset_index(drop=True)


def _close(ours: float | None, theirs: float) -> bool:
    return ours is not None and abs(ours - theirs) <= 1e-12


def _assert_matches_fairlearn(
    y: np.ndarray, scores: np.ndarray, groups: pd.DataFrame, threshold: float, min_group_size: int
) -> None:
    report = fairness_report(y, scores, groups, ALL, threshold=threshold, min_group_size=min_group_size)
    decisions = (scores >= threshold).astype(int)
    for attribute in groups.columns:
        section, names = report[attribute], _names(groups[attribute])
        rates = MetricFrame(
            metrics=FAIRLEARN_RATES, y_true=y, y_pred=decisions, sensitive_features=names
        ).by_group
        assert list(section["groups"]) == list(rates.index)  # the same groups, in the same (sorted) order
        for group, theirs in rates.iterrows():
            ours = section["groups"][group]
            assert ours["count"] == theirs["count"]
            positives = round(theirs["count"] * theirs["positive_rate"])
            selected = round(theirs["count"] * theirs["selection_rate"])
            undefined = {
                "tpr": positives == 0,
                "fpr": positives == theirs["count"],
                "precision": selected == 0,
            }
            for rate in ("selection_rate", "tpr", "fpr", "precision", "positive_rate"):
                if undefined.get(rate):  # fairlearn says 0 where the rate has no rows; the report says None
                    assert ours[rate] is None, (group, rate)
                else:
                    assert _close(ours[rate], theirs[rate]), (group, rate, ours[rate], theirs[rate])
        kept = rates.index[rates["count"] >= min_group_size]
        measures = [m.value for m in ALL]
        if len(kept) < 2:
            assert all(section[m] is None for m in measures)
            assert any("no gap can be measured" in note for note in section["notes"])
            continue
        rows = names.isin(kept).to_numpy()
        yk, dk, nk = y[rows], decisions[rows], names[rows]
        compared = rates.loc[kept]
        assert _close(
            section["demographic_parity_difference"],
            demographic_parity_difference(yk, dk, sensitive_features=nk),
        )
        if compared["selection_rate"].max() > 0:
            assert _close(
                section["disparate_impact_ratio"], demographic_parity_ratio(yk, dk, sensitive_features=nk)
            )
        else:
            assert section["disparate_impact_ratio"] is None
        has_positives = (compared["positive_rate"] > 0).all()
        has_negatives = (compared["positive_rate"] < 1).all()
        if has_positives:
            assert _close(
                section["equal_opportunity_difference"],
                equal_opportunity_difference(yk, dk, sensitive_features=nk),
            )
        else:
            assert section["equal_opportunity_difference"] is None
            assert any("has no actual positives" in note for note in section["notes"])
        if has_positives and has_negatives:
            assert _close(
                section["equalized_odds_difference"], equalized_odds_difference(yk, dk, sensitive_features=nk)
            )
        else:
            assert section["equalized_odds_difference"] is None
        if (compared["selection_rate"] > 0).all():
            precision = MetricFrame(
                metrics=FAIRLEARN_RATES["precision"], y_true=yk, y_pred=dk, sensitive_features=nk
            )
            assert _close(section["predictive_parity_difference"], precision.difference())
        else:
            assert section["predictive_parity_difference"] is None
        lowest, highest = section["largest_gap_groups"]
        assert compared.loc[lowest, "selection_rate"] == compared["selection_rate"].min()
        assert compared.loc[highest, "selection_rate"] == compared["selection_rate"].max()


def _random_attribute(rng: np.random.Generator, n: int, kind: str) -> pd.Series:
    sizes = rng.dirichlet(np.full(int(rng.integers(1, 6)), 0.7))  # skewed: some groups are rare
    codes = rng.choice(sizes.size, size=n, p=sizes)
    nulls = rng.random(n) < rng.choice([0.0, 0.05, 0.3])
    if kind == "text":
        values = np.array(["18-24", "25-39", "40-59", "60+", "Zz"], dtype=object)[codes]
        values[nulls] = rng.choice([None, np.nan])
        return pd.Series(values, dtype=object)
    if kind == "category":
        return pd.Series(pd.Categorical(np.where(nulls, None, np.array(list("abcde"))[codes])))
    if kind == "integer":  # names sort as text: "10" before "2"
        return pd.Series(np.array([1, 2, 10, 11, 100])[codes])
    return pd.Series(np.where(nulls, np.nan, codes * 1.5))


@pytest.mark.parametrize("seed", range(12))
def test_rates_and_measures_equal_fairlearn_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([5, 40, 400]))
    base_rate = rng.choice([0.0, 0.03, 0.3, 0.97, 1.0])  # 0 and 1: some groups without positives/negatives
    y = (rng.random(n) < base_rate).astype(int)
    scores = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    groups = pd.DataFrame(
        {kind: _random_attribute(rng, n, kind) for kind in ("text", "category", "integer", "float")}
    )
    threshold = float(rng.choice([0.0, 0.3, 0.5, 0.9]))
    min_group_size = int(rng.choice([1, 5, 30]))
    _assert_matches_fairlearn(y, scores, groups, threshold, min_group_size)


EDGE_CASES = {
    "a group without positives": ([1, 0, 1, 0, 0, 0], [0.9, 0.1, 0.2, 0.8, 0.7, 0.1], list("aaaabb")),
    "a group without negatives": ([1, 0, 1, 0, 1, 1], [0.9, 0.1, 0.2, 0.8, 0.7, 0.1], list("aaaabb")),
    "a group nobody in is selected": ([1, 0, 1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8, 0.1, 0.1], list("aaaabb")),
    "nobody selected": ([1, 0, 1, 0, 1, 0], [0.1] * 6, list("aaabbb")),
    "everybody selected": ([1, 0, 1, 0, 1, 0], [0.9] * 6, list("aaabbb")),
    "a single group": ([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8], list("aaaa")),
    "null values": ([1, 0, 1, 0, 1, 0], [0.9, 0.1, 0.6, 0.8, 0.7, 0.1], ["f", None, "m", np.nan, "m", "f"]),
    "every value null": ([1, 0, 1], [0.9, 0.1, 0.6], [None, None, np.nan]),
    "one row": ([1], [0.9], ["a"]),
    "values whose text coincides": (
        [1, 0, 1, 0, 1, 0],
        [0.9, 0.1, 0.6, 0.8, 0.7, 0.1],
        [1, "1", 1.0, "x", None, "missing"],
    ),
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("min_group_size", [1, 3])
def test_edge_cases_equal_fairlearn(case: str, min_group_size: int) -> None:
    y, scores, values = EDGE_CASES[case]
    groups = pd.DataFrame({"attribute": pd.Series(values, dtype=object)})
    _assert_matches_fairlearn(np.array(y), np.array(scores), groups, 0.5, min_group_size)


def test_values_whose_text_coincides_share_a_group_and_nulls_join_missing() -> None:
    y, scores, values = EDGE_CASES["values whose text coincides"]
    groups = pd.DataFrame({"attribute": pd.Series(values, dtype=object)})
    section = fairness_report(np.array(y), np.array(scores), groups, ALL, threshold=0.5)["attribute"]
    counts = {group: rates["count"] for group, rates in section["groups"].items()}
    assert counts == {"1": 2, "1.0": 1, "missing": 2, "x": 1}
