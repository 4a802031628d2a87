"""Model cards: every section from a full version, "not recorded" for missing ones, escaped text."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from pfactory.registry.cards import (
    ModelCard,
    build_card,
    fairness_gap,
    render_html,
    render_json,
    render_markdown,
)
from pfactory.registry.model import AuditEntry, Lineage, MetricValue, VersionStatus, transition
from tests.registry.factories import PAIR, make_version

SCRIPT = "<script>alert('x')</script>"


def _config(**card: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pfactory.io/v1",
        "kind": "Model",
        "metadata": {"name": "credit_default", "owner": "risk-ds@bank.example", "description": "PD model"},
        "spec": {
            "task": "binary_classification",
            "pipeline": {"estimator": {"import": "sklearn.linear_model.LogisticRegression"}},
            "training": {"window": {"start": "2024-01-01", "end": "2024-12-31"}},
            "metrics": {"primary": "roc_auc", "thresholds": {"roc_auc": 0.7, "log_loss": 0.5}},
            "fairness": {
                "protected_attributes": ["gender"],
                "metrics": ["demographic_parity_difference", "disparate_impact_ratio"],
                "constraints": {"demographic_parity_difference": 0.1},
            },
            "approval": {"auto_approve": False},
            "card": {
                "intended_use": "Rank applications.",
                "limitations": "2024 data only.",
                "ethical_considerations": "Gender is used only to measure fairness.",
                "contact": "risk-ds@bank.example",
                "references": ["https://example.org/policy", "javascript:alert(1)"],
                **card,
            },
        },
    }


def _full_version(**card: Any) -> Any:
    record = make_version(
        PAIR,
        1,
        "job-1",
        config=_config(**card),
        metrics={
            "roc_auc": MetricValue(value=0.81, ci_low=0.78, ci_high=0.84),
            "log_loss": MetricValue(value=0.62),
            "brier_score": MetricValue(value=0.12),
        },
        fairness={
            "gender": {
                "demographic_parity_difference": 0.14,
                "disparate_impact_ratio": {"value": 0.9},
                "groups": {
                    "F": {"count": 96, "selection_rate": 0.2},
                    "M": {"count": 104, "selection_rate": 0.34},
                },
            }
        },
        gates={
            "metric:roc_auc": True,
            "metric:log_loss": False,
            "fairness:gender:demographic_parity_difference": False,
        },
        lineage=Lineage(
            feature_set_version="3",
            start_ds=date(2024, 1, 1),
            end_ds=date(2024, 12, 31),
            partitions=["p1", "p2"],
            row_counts={"train": 800, "test": 200, "positive": 100, "negative": 900},
        ),
        audit=(
            AuditEntry(
                at=datetime(2025, 1, 2, tzinfo=UTC), actor="registrar", action="registered", to="candidate"
            ),
        ),
    )
    return transition(
        record, VersionStatus.APPROVED, actor="admin@bank.example", reason="risk committee", override=True
    )


def test_a_full_card_holds_every_section() -> None:
    card = build_card(
        _full_version(),
        metrics_document={"calibration": {"ece": 0.02, "prob_pred": [0.1, 0.6], "prob_true": [0.12, 0.55]}},
        gate_reasons={"metric:log_loss": "log_loss 0.62 > maximum 0.5"},
    )

    assert (card.owner, card.contact, card.status) == (
        "risk-ds@bank.example",
        "risk-ds@bank.example",
        "approved",
    )
    assert card.intended_use == "Rank applications." and card.auto_approve is False
    assert card.training_data.window_start == date(2024, 1, 1) and card.training_data.positive_rate == 0.1
    metrics = {m.name: m for m in card.metrics}
    assert (metrics["roc_auc"].ci_low, metrics["roc_auc"].direction, metrics["roc_auc"].passed) == (
        0.78,
        "min",
        True,
    )
    assert (metrics["log_loss"].direction, metrics["log_loss"].passed) == ("max", False)
    assert metrics["brier_score"].threshold is None and metrics["brier_score"].passed is None
    checks = {(f.attribute, f.measure): f for f in card.fairness}
    parity = checks["gender", "demographic_parity_difference"]
    assert (parity.value, parity.limit, parity.passed) == (0.14, 0.1, False)
    assert checks["gender", "disparate_impact_ratio"].value == 0.9
    assert {(g.group, g.values["selection_rate"]) for g in card.fairness_groups} == {("F", 0.2), ("M", 0.34)}
    assert card.calibration is not None
    assert card.calibration.metrics == {"brier_score": 0.12, "ece": 0.02} and len(card.calibration.curve) == 2
    assert [e.action for e in card.approval_history] == ["registered", "override"]
    assert card.approval_history[1].reason == "risk committee"
    assert card.failed_gates == ["fairness:gender:demographic_parity_difference", "metric:log_loss"]
    assert ModelCard.model_validate_json(render_json(card)) == card

    markdown = render_markdown(card)
    for text in (
        "## Fairness",
        "| gender | demographic_parity_difference | 0.14 | 0.1 | FAIL |",
        "| roc_auc (primary) | 0.81 | 0.78 to 0.84 | ≥ 0.7 | pass |",
        "log_loss 0.62 > maximum 0.5",
        "| 2025-01-02T00:00:00+00:00 | registrar | registered |",
        "risk committee",
        "2024-01-01 to 2024-12-31",
    ):
        assert text in markdown, text


def test_a_script_in_the_card_text_comes_out_escaped() -> None:
    card = build_card(_full_version(intended_use=SCRIPT, contact="a|b <b>x</b>"))

    page = render_html(card)
    markdown = render_markdown(card)

    assert "<script>" not in page and "<script>" not in markdown and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;script>alert('x')&lt;/script>" in markdown and "a\\|b" in markdown
    assert 'href="https://example.org/policy"' in page and 'href="javascript' not in page
    assert render_json(card).count(SCRIPT) == 1  # JSON keeps the data as is; renderers escape it


def test_the_html_page_parses_and_holds_no_elements_from_user_text() -> None:
    card = build_card(_full_version(intended_use=SCRIPT, limitations='<img src=x onerror="alert(1)">'))
    tags: list[str] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

    Collector().feed(render_html(card))

    assert "script" not in tags and "img" not in tags
    assert {"html", "head", "body", "h1", "h2", "table", "a"} <= set(tags)


def test_a_version_with_missing_sections_renders_not_recorded() -> None:
    bare = make_version(
        PAIR,
        2,
        "job-2",
        config={},
        metrics={},
        fairness={"age_band": {"passed": True}},
        gates={},
        reference_uri=None,
        lineage=Lineage(feature_set_version="3"),
        library_versions={},
    )

    card = build_card(bare, metrics_document={"calibration": "not a mapping"})

    assert card.owner is None and card.intended_use is None and card.metrics == [] and card.fairness == []
    assert card.calibration is None and card.training_data.positive_rate is None
    markdown = render_markdown(card)
    for heading in ("Ownership and intended use", "Metrics", "Fairness", "Calibration", "Approval history"):
        section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        assert "not recorded" in section, heading
    assert "- **Intended use:** not recorded" in markdown
    assert "not recorded" in render_html(card)
    assert ModelCard.model_validate_json(render_json(card)) == card


def test_a_threshold_on_an_unreported_metric_shows_in_the_card() -> None:
    record = make_version(
        PAIR,
        1,
        "job-1",
        config=_config(),
        metrics={"roc_auc": MetricValue(value=0.8)},
        gates={"metric:roc_auc": True, "metric:log_loss": False},
    )

    card = build_card(record)

    unreported = next(m for m in card.metrics if m.name == "log_loss")
    assert unreported.value is None and unreported.passed is False
    assert re.search(
        r"\| log_loss \| not recorded \| not recorded \| ≤ 0\.5 \| FAIL \|", render_markdown(card)
    )
    assert ModelCard.model_validate_json(render_json(card)) == card


def test_fairness_gap_of_differences_and_ratios() -> None:
    assert fairness_gap("demographic_parity_difference", -0.12) == 0.12
    assert round(fairness_gap("disparate_impact_ratio", 0.8), 6) == 0.2
    assert round(fairness_gap("disparate_impact_ratio", 1.25), 6) == 0.2
    assert fairness_gap("disparate_impact_ratio", 0.0) == 1.0


# ---------------------------------------------------------------- sweep, fairness notes, calibration


def _trial(run_id: str, auc: float | None, *, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    metrics = {} if auc is None else {"roc_auc": auc, "log_loss": {"value": 1 - auc, "ci_low": 0.1}}
    return {
        "run_id": run_id,
        "params": {"estimator.max_depth": int(run_id[-1]) + 2, "estimator.penalty": "l2"},
        "metrics": metrics,
        "status": status,
        "reason": None,
        "duration_s": 1.5,
        **extra,
    }


def _sweep(**overrides: Any) -> dict[str, Any]:
    sweep: dict[str, Any] = {
        "strategy": "grid",
        "selection": {"mode": "champion", "metric": "roc_auc", "k": None, "ensemble": None},
        "selected": ["trial-002"],
        "trials": [
            _trial("trial-000", 0.74),
            _trial("trial-001", None, status="failed", reason=f"fit ran out of memory {SCRIPT}"),
            _trial("trial-002", 0.83),
            _trial("trial-003", 0.79),
        ],
    }
    sweep.update(overrides)
    return sweep


def _table(markdown: str, heading: str) -> list[str]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_a_sweep_lists_trials_best_first_with_the_champion_marked_and_failures_explained() -> None:
    card = build_card(_full_version(), metrics_document={"sweep": _sweep()})

    assert card.sweep is not None and card.sweep.strategy == "grid"
    assert [t.run_id for t in card.sweep.trials] == ["trial-002", "trial-003", "trial-000", "trial-001"]
    assert [t.rank for t in card.sweep.trials] == [1, 2, 3, None]
    assert [t.selected for t in card.sweep.trials] == [True, False, False, False]
    assert card.sweep.trials[0].metrics == {"roc_auc": 0.83, "log_loss": pytest.approx(0.17)}
    assert ModelCard.model_validate_json(render_json(card)) == card

    markdown = render_markdown(card)
    rows = _table(markdown, "Sweep trials")
    assert rows[0].startswith("| 1 | trial-002 | ✔ selected | succeeded | 0.83 | log_loss: 0.17 |")
    assert "estimator.max_depth=4, estimator.penalty=l2" in rows[0]
    assert rows[3].startswith("|  | trial-001 |  | failed |  |  | estimator.max_depth=3")  # unranked, last
    assert "fit ran out of memory &lt;script>" in rows[3] and "<script>" not in markdown
    assert "- **Selection:** champion by roc_auc" in markdown
    assert "- **Trials:** 4 (3 succeeded, 1 failed)" in markdown
    assert "- **Selected:** trial-002" in markdown


def test_a_top_k_ensemble_on_a_lower_is_better_metric_ranks_ascending_and_marks_every_member() -> None:
    sweep = _sweep(
        strategy="random",
        selection={"mode": "top_k_ensemble", "metric": "log_loss", "k": 2, "ensemble": "stacking"},
        selected=["trial-002", "trial-003"],
    )

    card = build_card(_full_version(), metrics_document={"sweep": sweep})

    assert card.sweep is not None
    assert [t.run_id for t in card.sweep.trials][:3] == ["trial-002", "trial-003", "trial-000"]
    assert [t.run_id for t in card.sweep.trials if t.selected] == ["trial-002", "trial-003"]
    markdown = render_markdown(card)
    assert "- **Selection:** top 2 ensemble by log_loss, combined by stacking" in markdown
    assert "| rank | trial | selected | status | log_loss | other metrics |" in markdown
    assert sum("✔ selected" in row for row in _table(markdown, "Sweep trials")) == 2


def test_without_a_selection_metric_the_primary_metric_ranks_the_trials() -> None:
    sweep = _sweep(selection={"mode": "champion"})

    card = build_card(_full_version(), metrics_document={"sweep": sweep})

    assert card.sweep is not None and card.sweep.selection.metric == "roc_auc"  # the config's primary
    assert card.sweep.trials[0].run_id == "trial-002"


def test_the_html_sweep_highlights_the_selected_row_and_failed_trials_and_escapes_reasons() -> None:
    sweep = _sweep()
    sweep["trials"][0]["params"]["estimator.class_weight"] = '<img src=x onerror="alert(1)">'
    card = build_card(_full_version(), metrics_document={"sweep": sweep})
    tags: list[tuple[str, dict[str, str | None]]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, dict(attrs)))

    page = render_html(card)
    Collector().feed(page)

    assert not any(tag in ("script", "img") for tag, _ in tags)
    assert [attrs.get("class") for tag, attrs in tags if tag == "tr" and attrs] == ["selected"]
    assert "<td class='selected'>✔ selected</td><td>succeeded</td><td>0.83</td>" in page
    assert "<td class='fail'>failed</td>" in page
    assert "fit ran out of memory &lt;script&gt;" in page and "&lt;img src=x" in page


def test_a_malformed_sweep_never_breaks_the_card() -> None:
    broken = {
        "strategy": 7,
        "selection": "champion",
        "selected": "trial-000",
        "trials": [
            {"params": {}},  # no run id: skipped
            "not a trial",
            {"run_id": "trial-000", "metrics": {"roc_auc": "high", "f1": float("nan")}, "duration_s": -1},
        ],
    }

    card = build_card(_full_version(), metrics_document={"sweep": broken})

    assert card.sweep is not None and [t.run_id for t in card.sweep.trials] == ["trial-000"]
    trial = card.sweep.trials[0]
    assert (trial.metrics, trial.status, trial.duration_s, trial.selected) == ({}, "unknown", None, False)
    assert "- **Trials:** 1 (0 succeeded, 0 failed, 1 other)" in render_markdown(card)
    render_html(card)
    assert build_card(_full_version(), metrics_document={"sweep": ["no"]}).sweep is None


def test_a_card_without_a_sweep_says_so() -> None:
    card = build_card(_full_version(), metrics_document={"calibration": {"ece": 0.02}})

    markdown = render_markdown(card)

    assert card.sweep is None and "## Sweep trials" not in markdown
    assert "_not recorded_" in markdown.split("## Sweep\n", 1)[1].split("\n## ", 1)[0]


def test_fairness_notes_threshold_and_largest_gap_groups_are_rendered() -> None:
    record = _full_version()
    fairness = dict(record.fairness)
    fairness["gender"] = {
        **fairness["gender"],
        "threshold": 0.35,
        "largest_gap_groups": {"selection_rate": ["F", "M"], "tpr": {"groups": ["M", "F"], "gap": 0.12}},
        "notes": ["group 'X' has 12 rows: its rates are noisy", SCRIPT],
    }
    fairness["age_band"] = {"demographic_parity_difference": 0.02, "largest_gap_groups": ["18-30", "65+"]}
    fairness["region"] = {"demographic_parity_difference": 0.01}  # nothing to note
    card = build_card(record.model_copy(update={"fairness": fairness}))

    notes = {n.attribute: n for n in card.fairness_notes}
    assert set(notes) == {"gender", "age_band"}
    assert notes["gender"].decision_threshold == 0.35
    assert notes["gender"].largest_gap_groups == ["selection_rate: F vs M", "tpr: M vs F (gap 0.12)"]
    assert notes["age_band"].largest_gap_groups == ["18-30 vs 65+"] and notes["age_band"].notes == []
    markdown = render_markdown(card)
    assert (
        "| gender | 0.35 | selection_rate: F vs M; tpr: M vs F (gap 0.12) | "
        "group 'X' has 12 rows: its rates are noisy; &lt;script>alert('x')&lt;/script> |"
    ) in markdown
    assert "| age_band | not recorded | 18-30 vs 65+ | none |" in markdown
    assert "<script>" not in render_html(card)
    assert ModelCard.model_validate_json(render_json(card)) == card


def test_calibration_renders_the_ece_its_bins_and_a_curve_given_as_pairs() -> None:
    document = {"calibration": {"ece": 0.031, "bins": 10, "curve": [[0.1, 0.12, 50], [0.7, 0.64]]}}

    card = build_card(_full_version(), metrics_document=document)

    assert card.calibration is not None and card.calibration.bins == 10
    assert card.calibration.metrics["ece"] == 0.031
    assert [(b.predicted, b.observed, b.count) for b in card.calibration.curve] == [
        (0.1, 0.12, 50),
        (0.7, 0.64, None),
    ]
    markdown = render_markdown(card)
    assert "| expected calibration error (ECE) | 0.031 |" in markdown and "| bins | 10 |" in markdown
    assert "<td>expected calibration error (ECE)</td><td>0.031</td>" in render_html(card)
