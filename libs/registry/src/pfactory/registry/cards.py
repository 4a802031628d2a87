"""Model cards: what a version is for, how it was trained, how well and how fairly it does.

:func:`build_card` reads one :class:`ModelVersion` (its config's ``metadata`` and ``spec.card``,
lineage, metrics, fairness report, gates and audit trail) into a :class:`ModelCard`;
:func:`render_json`, :func:`render_markdown` and :func:`render_html` write it out. A section the
version does not record renders as "not recorded"; every piece of text from a config or a report
is escaped in HTML (and kept inert in Markdown).

The fairness report a trainer sends (``ModelTrained.fairness``) is read in this shape::

    {"<protected attribute>": {
        "<fairness measure>": 0.04,              # or {"value": 0.04}
        "groups": {"<group>": {"count": 120, "selection_rate": 0.31, "tpr": 0.72, "fpr": 0.08}},
        "threshold": 0.5,                        # optional: the decision threshold groups were cut at
        "largest_gap_groups": {"selection_rate": ["F", "M"]},   # optional: measure → the two groups
        "notes": ["group 'other' has 12 rows"]}} # optional: caveats, a string or a list

optionally wrapped in ``{"attributes": {...}}``. ``largest_gap_groups`` may also be one list of
groups, or map a measure to ``{"groups": [...], "gap": x}``. Gate names are ``metric:<metric>``
and ``fairness:<attribute>:<measure>`` (see :func:`metric_gate` and :func:`fairness_gate`).

The full metrics document (``metrics.json``) adds two sections: ``calibration``
(``{"curve": [{"predicted", "observed", "count"}], "ece": x, "bins": n}``) and ``sweep``, whose
shape is documented in :mod:`pfactory.registry.card_sweep`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pfactory.contracts.configs.metrics import LOWER_IS_BETTER
from pfactory.registry.card_sweep import SELECTED_MARK, Sweep, read_sweep, sweep_sections
from pfactory.registry.model import ArtifactInfo, Lineage, ModelVersion

NOT_RECORDED = "not recorded"
RATIO_MEASURES = frozenset({"disparate_impact_ratio"})
"""Fairness measures that are ratios: their gap is ``1 - min(r, 1/r)``."""
CALIBRATION_METRICS = frozenset(
    {"brier_score", "ece", "expected_calibration_error", "mce", "calibration_slope", "calibration_intercept"}
)
CALIBRATION_LABELS = {
    "ece": "expected calibration error (ECE)",
    "mce": "maximum calibration error (MCE)",
    "brier_score": "Brier score",
}


def metric_gate(metric: str) -> str:
    """The gate name of a metric threshold."""
    return f"metric:{metric}"


def fairness_gate(attribute: str, measure: str) -> str:
    """The gate name of a fairness constraint on one protected attribute."""
    return f"fairness:{attribute}:{measure}"


# ---------------------------------------------------------------- reading reports


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    """A finite float from a number or ``{"value": n}``; None for anything else."""
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def fairness_attributes(report: Mapping[str, Any]) -> Mapping[str, Any]:
    """Protected attribute → its section of a fairness report (unwrapping ``{"attributes": ...}``)."""
    inner = report.get("attributes")
    return inner if isinstance(inner, Mapping) else report


def fairness_measure(report: Mapping[str, Any], attribute: str, measure: str) -> float | None:
    """A fairness measure of one attribute from a report; None if absent or not a finite number."""
    section = _mapping(fairness_attributes(report).get(attribute))
    if measure in section:
        return _number(section[measure])
    return _number(_mapping(section.get("measures")).get(measure))


def fairness_gap(measure: str, value: float) -> float:
    """How far a measure is from parity: ``|difference|``, or ``1 - min(r, 1/r)`` for a ratio."""
    if measure in RATIO_MEASURES:
        if value <= 0:
            return 1.0
        return 1.0 - min(value, 1.0 / value)
    return abs(value)


# ---------------------------------------------------------------- the card


class _CardModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardMetric(_CardModel):
    """One evaluation metric, its confidence interval and its registration threshold."""

    name: str
    value: float | None = Field(description="None: the config sets a threshold the trainer did not report.")
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | None = None
    direction: Literal["min", "max"] | None = Field(
        default=None, description="'min': the value must reach the threshold; 'max': stay under it."
    )
    passed: bool | None = Field(default=None, description="The recorded gate; None when ungated.")


class FairnessCheck(_CardModel):
    """A fairness measure of one protected attribute against the config's constraint."""

    attribute: str
    measure: str
    value: float | None = None
    limit: float | None = Field(default=None, description="Largest allowed gap; None when unconstrained.")
    passed: bool | None = Field(default=None, description="The recorded gate; None when ungated.")


class FairnessGroup(_CardModel):
    """Per-group rates of one protected attribute (selection rate, TPR, FPR, count, ...)."""

    attribute: str
    group: str
    values: dict[str, float] = Field(default_factory=dict)


class FairnessNotes(_CardModel):
    """What the trainer noted about one protected attribute beyond its measures."""

    attribute: str
    decision_threshold: float | None = Field(
        default=None, description="The score at or above which a case counted as selected."
    )
    largest_gap_groups: list[str] = Field(
        default_factory=list, description="Which groups are furthest apart, e.g. 'selection_rate: F vs M'."
    )
    notes: list[str] = Field(default_factory=list)


class Gate(_CardModel):
    """A registration gate and whether the version passed it."""

    name: str
    passed: bool
    reason: str | None = Field(default=None, description="How the gate was decided, when known.")


class TrainingData(_CardModel):
    """What the version was trained on."""

    feature_set: str
    window_start: date | None = None
    window_end: date | None = None
    row_counts: dict[str, int] = Field(default_factory=dict)
    positive_rate: float | None = Field(default=None, description="Share of positive labels.")
    label_source: str | None = None
    partitions: int = Field(default=0, description="How many feature partitions were read.")


class CalibrationBin(_CardModel):
    """One bin of a reliability curve."""

    predicted: float
    observed: float
    count: int | None = None


class Calibration(_CardModel):
    """How far predicted probabilities can be read as frequencies."""

    metrics: dict[str, float] = Field(default_factory=dict, description="e.g. ece, brier_score.")
    bins: int | None = Field(default=None, description="How many bins the curve and the ECE use.")
    curve: list[CalibrationBin] = Field(default_factory=list)


class ApprovalEvent(_CardModel):
    """One entry of the version's audit trail."""

    at: datetime
    actor: str
    action: str
    from_status: str | None = None
    to_status: str | None = None
    reason: str | None = None


class ModelCard(_CardModel):
    """The model card of one registered version."""

    model_name: str
    feature_set: str
    version: int
    status: str
    aliases: list[str] = Field(default_factory=list)
    description: str | None = None
    owner: str | None = None
    contact: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    ethical_considerations: str | None = None
    caveats: str | None = None
    references: list[str] = Field(default_factory=list)
    task: str | None = None
    estimator: str | None = None
    framework: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    training_data: TrainingData
    metrics: list[CardMetric] = Field(default_factory=list)
    primary_metric: str | None = None
    gates: list[Gate] = Field(default_factory=list)
    fairness: list[FairnessCheck] = Field(default_factory=list)
    fairness_groups: list[FairnessGroup] = Field(default_factory=list)
    fairness_notes: list[FairnessNotes] = Field(default_factory=list)
    calibration: Calibration | None = None
    sweep: Sweep | None = Field(default=None, description="The hyper-parameter sweep, when there was one.")
    lineage: Lineage
    artifact: ArtifactInfo
    reference_uri: str | None = None
    auto_approve: bool | None = None
    approval_history: list[ApprovalEvent] = Field(default_factory=list)
    created_by: str
    created_at: datetime

    @property
    def failed_gates(self) -> list[str]:
        """Names of the gates the version failed."""
        return [gate.name for gate in self.gates if not gate.passed]


def build_card(
    version: ModelVersion,
    *,
    metrics_document: Mapping[str, Any] | None = None,
    gate_reasons: Mapping[str, str] | None = None,
) -> ModelCard:
    """Build a version's model card.

    Args:
        version: the version record (as committed, or about to be).
        metrics_document: the full metrics the trainer reported (``metrics.json``), read for the
            calibration curve and the sweep's trials, which the record's scalar metrics cannot hold.
        gate_reasons: gate name → how it was decided (the registrar knows; the record keeps only
            pass/fail).

    Returns:
        The card; absent sections are None or empty, never an error.
    """
    config = _mapping(version.config)
    metadata = _mapping(config.get("metadata"))
    spec = _mapping(config.get("spec"))
    card = _mapping(spec.get("card"))
    metrics_spec = _mapping(spec.get("metrics"))
    references = card.get("references")
    primary_metric = _text(metrics_spec.get("primary"))
    return ModelCard(
        model_name=version.model_name,
        feature_set=str(version.feature_set),
        version=version.version,
        status=version.status.value,
        aliases=sorted(version.aliases),
        description=_text(metadata.get("description")),
        owner=_text(metadata.get("owner")),
        contact=_text(card.get("contact")),
        intended_use=_text(card.get("intended_use")),
        limitations=_text(card.get("limitations")),
        ethical_considerations=_text(card.get("ethical_considerations")),
        caveats=_text(card.get("caveats")),
        references=[str(ref) for ref in references] if isinstance(references, list) else [],
        task=_text(spec.get("task")),
        estimator=_text(_mapping(_mapping(spec.get("pipeline")).get("estimator")).get("import")),
        framework=version.framework,
        library_versions=dict(version.library_versions),
        training_data=_training_data(version, spec),
        metrics=_metrics(version, _mapping(metrics_spec.get("thresholds"))),
        primary_metric=primary_metric,
        gates=[
            Gate(name=name, passed=passed, reason=(gate_reasons or {}).get(name))
            for name, passed in sorted(version.gates.items())
        ],
        fairness=_fairness_checks(version, _mapping(spec.get("fairness"))),
        fairness_groups=_fairness_groups(version.fairness),
        fairness_notes=_fairness_notes(version.fairness),
        calibration=_calibration(version, _mapping(metrics_document)),
        sweep=read_sweep(_mapping(metrics_document), default_metric=primary_metric),
        lineage=version.lineage,
        artifact=version.artifact,
        reference_uri=version.reference_uri,
        auto_approve=_flag(_mapping(spec.get("approval")).get("auto_approve")),
        approval_history=[
            ApprovalEvent(
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                from_status=entry.from_,
                to_status=entry.to,
                reason=entry.reason,
            )
            for entry in version.audit
        ],
        created_by=version.created_by,
        created_at=version.created_at,
    )


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)) if value is not None else None
    except ValueError:
        return None


def _training_data(version: ModelVersion, spec: Mapping[str, Any]) -> TrainingData:
    lineage = version.lineage
    window = _mapping(_mapping(spec.get("training")).get("window"))
    counts = dict(lineage.row_counts)
    positives = counts.get("positive", counts.get("positives"))
    negatives = counts.get("negative", counts.get("negatives"))
    total = counts.get("total", counts.get("rows"))
    if total is None and positives is not None and negatives is not None:
        total = positives + negatives
    if total is None and "train" in counts and "test" in counts:
        total = counts["train"] + counts["test"]
    positive_rate = positives / total if positives is not None and total else None
    reported_rate = version.metrics.get("positive_rate")
    if positive_rate is None and reported_rate is not None:
        positive_rate = reported_rate.value
    return TrainingData(
        feature_set=str(version.feature_set),
        window_start=lineage.start_ds or _as_date(window.get("start")),
        window_end=lineage.end_ds or _as_date(window.get("end")),
        row_counts=counts,
        positive_rate=positive_rate,
        label_source=lineage.label_source,
        partitions=len(lineage.partitions),
    )


def _metrics(version: ModelVersion, thresholds: Mapping[str, Any]) -> list[CardMetric]:
    rows = []
    for name, metric in sorted(version.metrics.items()):
        threshold = _number(thresholds.get(name))
        rows.append(
            CardMetric(
                name=name,
                value=metric.value,
                ci_low=metric.ci_low,
                ci_high=metric.ci_high,
                threshold=threshold,
                direction=None if threshold is None else ("max" if name in LOWER_IS_BETTER else "min"),
                passed=version.gates.get(metric_gate(name)),
            )
        )
    # a threshold on a metric the trainer never reported is still part of the card
    for name in sorted(set(thresholds) - set(version.metrics)):
        threshold = _number(thresholds.get(name))
        gate = version.gates.get(metric_gate(name))
        if threshold is not None:
            rows.append(
                CardMetric(
                    name=name,
                    value=None,
                    threshold=threshold,
                    direction="max" if name in LOWER_IS_BETTER else "min",
                    passed=gate,
                )
            )
    return rows


def _fairness_checks(version: ModelVersion, fairness_spec: Mapping[str, Any]) -> list[FairnessCheck]:
    constraints = _mapping(fairness_spec.get("constraints"))
    measures = [str(m) for m in fairness_spec.get("metrics") or [] if isinstance(m, str)]
    attributes = [str(a) for a in fairness_spec.get("protected_attributes") or [] if isinstance(a, str)]
    reported = fairness_attributes(version.fairness)
    attributes += [a for a in reported if a not in attributes and isinstance(reported[a], Mapping)]
    measures += [m for m in constraints if m not in measures]
    checks = []
    for attribute in attributes:
        for measure in measures:
            value = fairness_measure(version.fairness, attribute, measure)
            limit = _number(constraints.get(measure))
            passed = version.gates.get(fairness_gate(attribute, measure))
            if value is None and limit is None and passed is None:
                continue
            checks.append(
                FairnessCheck(attribute=attribute, measure=measure, value=value, limit=limit, passed=passed)
            )
    return checks


def _fairness_groups(report: Mapping[str, Any]) -> list[FairnessGroup]:
    rows = []
    for attribute, section in fairness_attributes(report).items():
        for group, stats in _mapping(_mapping(section).get("groups")).items():
            values = {
                str(k): number for k, v in _mapping(stats).items() if (number := _number(v)) is not None
            }
            rows.append(FairnessGroup(attribute=str(attribute), group=str(group), values=values))
    return rows


def _notes(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [text for item in value if (text := _text(item))]
    text = _text(value)
    return [text] if text else []


def _gap_text(value: Any) -> str | None:
    """``["F", "M"]`` → ``F vs M``; ``{"groups": [...], "gap": x}`` adds the gap; text stays text."""
    if isinstance(value, list | tuple):
        return " vs ".join(_notes(value)) or None
    if isinstance(value, Mapping):
        groups = _gap_text(value.get("groups"))
        gap = _number(value.get("gap"))
        if groups is not None:
            return groups + (f" (gap {_fmt(gap)})" if gap is not None else "")
        parts = [f"{k}: {text}" for k, v in value.items() if (text := _gap_text(v))]
        return "; ".join(parts) or None
    number = _number(value)
    return _fmt(number) if number is not None else _text(value)


def _fairness_notes(report: Mapping[str, Any]) -> list[FairnessNotes]:
    rows = []
    for attribute, raw in fairness_attributes(report).items():
        section = _mapping(raw)
        gaps = section.get("largest_gap_groups")
        if isinstance(gaps, Mapping) and "groups" not in gaps:
            largest = [f"{measure}: {text}" for measure, v in gaps.items() if (text := _gap_text(v))]
        else:
            largest = [text] if (text := _gap_text(gaps)) else []
        entry = FairnessNotes(
            attribute=str(attribute),
            decision_threshold=_number(section.get("threshold")),
            largest_gap_groups=largest,
            notes=_notes(section.get("notes")),
        )
        if entry.decision_threshold is not None or entry.largest_gap_groups or entry.notes:
            rows.append(entry)
    return rows


def _calibration(version: ModelVersion, metrics_document: Mapping[str, Any]) -> Calibration | None:
    section = _mapping(metrics_document.get("calibration"))
    scalars = {name: m.value for name, m in version.metrics.items() if name in CALIBRATION_METRICS}
    scalars.update(
        {
            str(k): n
            for k, v in section.items()
            if k not in ("curve", "bins") and (n := _number(v)) is not None
        }
    )
    curve = _curve(section)
    if not scalars and not curve:
        return None
    bins = section.get("bins")
    count = bins if isinstance(bins, int) and not isinstance(bins, bool) and bins > 0 else None
    return Calibration(metrics=scalars, bins=count, curve=curve)


def _curve(section: Mapping[str, Any]) -> list[CalibrationBin]:
    """Bins as ``[{"predicted", "observed", "count"}]`` (or ``[predicted, observed, count?]`` lists), or
    sklearn's ``prob_pred``/``prob_true`` lists."""
    bins: list[CalibrationBin] = []
    raw = section.get("curve", section.get("bins"))
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, list | tuple) and len(item) in (2, 3):
                item = dict(zip(("predicted", "observed", "count"), item, strict=False))
            entry = _mapping(item)
            predicted = _number(entry.get("predicted", entry.get("mean_predicted")))
            observed = _number(entry.get("observed", entry.get("fraction_positive")))
            count = entry.get("count")
            if predicted is not None and observed is not None:
                bins.append(
                    CalibrationBin(
                        predicted=predicted,
                        observed=observed,
                        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
                    )
                )
    elif isinstance(section.get("prob_pred"), list) and isinstance(section.get("prob_true"), list):
        for p, t in zip(section["prob_pred"], section["prob_true"], strict=False):
            predicted, observed = _number(p), _number(t)
            if predicted is not None and observed is not None:
                bins.append(CalibrationBin(predicted=predicted, observed=observed))
    return bins


# ---------------------------------------------------------------- rendering


def render_json(card: ModelCard) -> str:
    """The card as indented JSON."""
    return card.model_dump_json(indent=2)


def _fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RECORDED
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _ci(metric: CardMetric) -> str:
    if metric.ci_low is None or metric.ci_high is None:
        return NOT_RECORDED
    return f"{_fmt(metric.ci_low)} to {_fmt(metric.ci_high)}"


def _threshold(metric: CardMetric) -> str:
    if metric.threshold is None:
        return "none"
    return f"{'≥' if metric.direction == 'min' else '≤'} {_fmt(metric.threshold)}"


def _verdict(passed: bool | None) -> str:
    return "not gated" if passed is None else ("pass" if passed else "FAIL")


def _date(value: date | None) -> str:
    return NOT_RECORDED if value is None else str(value)


def _sections(card: ModelCard) -> list[tuple[str, list[tuple[str, str]] | list[list[str]], list[str]]]:
    """The card as (heading, rows, header) sections; both renderers draw from this one list.

    A section with an empty header holds key/value rows; otherwise it is a table.
    """
    data = card.training_data
    lineage = card.lineage
    return [
        (
            "Overview",
            [
                ("Model", card.model_name),
                ("Feature set", card.feature_set),
                ("Version", str(card.version)),
                ("Status", card.status),
                ("Aliases", ", ".join(card.aliases) or "none"),
                ("Description", card.description or NOT_RECORDED),
                ("Task", card.task or NOT_RECORDED),
                ("Estimator", card.estimator or NOT_RECORDED),
                ("Framework", card.framework),
                (
                    "Libraries",
                    ", ".join(f"{k} {v}" for k, v in sorted(card.library_versions.items())) or NOT_RECORDED,
                ),
                ("Registered by", card.created_by),
                ("Registered at", card.created_at.isoformat()),
            ],
            [],
        ),
        (
            "Ownership and intended use",
            [
                ("Owner", card.owner or NOT_RECORDED),
                ("Contact", card.contact or NOT_RECORDED),
                ("Intended use", card.intended_use or NOT_RECORDED),
                ("Limitations", card.limitations or NOT_RECORDED),
                ("Ethical considerations", card.ethical_considerations or NOT_RECORDED),
                ("Caveats", card.caveats or NOT_RECORDED),
                ("References", ", ".join(card.references) or NOT_RECORDED),
            ],
            [],
        ),
        (
            "Training data",
            [
                ("Feature set", data.feature_set),
                ("Window", f"{_date(data.window_start)} to {_date(data.window_end)}"),
                (
                    "Rows",
                    ", ".join(f"{k}: {v}" for k, v in sorted(data.row_counts.items())) or NOT_RECORDED,
                ),
                ("Positive rate", _fmt(data.positive_rate)),
                ("Label source", data.label_source or NOT_RECORDED),
                ("Partitions read", str(data.partitions) if data.partitions else NOT_RECORDED),
            ],
            [],
        ),
        (
            "Metrics",
            [
                [
                    m.name + (" (primary)" if m.name == card.primary_metric else ""),
                    _fmt(m.value),
                    _ci(m),
                    _threshold(m),
                    _verdict(m.passed),
                ]
                for m in card.metrics
            ],
            ["metric", "value", "confidence interval", "threshold", "gate"],
        ),
        (
            "Fairness",
            [
                [f.attribute, f.measure, _fmt(f.value), _fmt(f.limit), _verdict(f.passed)]
                for f in card.fairness
            ],
            ["protected attribute", "measure", "value", "largest allowed gap", "gate"],
        ),
        (
            "Fairness by group",
            [
                [g.attribute, g.group, ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(g.values.items()))]
                for g in card.fairness_groups
            ],
            ["protected attribute", "group", "rates"],
        ),
        (
            "Fairness notes",
            [
                [
                    n.attribute,
                    _fmt(n.decision_threshold),
                    "; ".join(n.largest_gap_groups) or NOT_RECORDED,
                    "; ".join(n.notes) or "none",
                ]
                for n in card.fairness_notes
            ],
            ["protected attribute", "decision threshold", "largest gaps between groups", "notes"],
        ),
        (
            "Gates",
            [[gate.name, _verdict(gate.passed), gate.reason or ""] for gate in card.gates],
            ["gate", "result", "why"],
        ),
        (
            "Calibration",
            (
                [
                    [CALIBRATION_LABELS.get(name, name), _fmt(value)]
                    for name, value in sorted(card.calibration.metrics.items())
                ]
                + ([["bins", str(card.calibration.bins)]] if card.calibration.bins is not None else [])
                + [
                    [f"bin predicted {_fmt(b.predicted, 3)}", f"observed {_fmt(b.observed, 3)}"]
                    for b in card.calibration.curve
                ]
            )
            if card.calibration
            else [],
            ["measure", "value"],
        ),
        *sweep_sections(card.sweep, NOT_RECORDED),
        (
            "Lineage",
            [
                ("Feature set version", lineage.feature_set_version),
                ("Partitions", ", ".join(lineage.partitions) or NOT_RECORDED),
                (
                    "Query hashes",
                    ", ".join(f"{k}: {v[:12]}" for k, v in sorted(lineage.query_hashes.items()))
                    or NOT_RECORDED,
                ),
                ("Artifact", card.artifact.uri),
                ("sha256", card.artifact.sha256),
                ("Size (bytes)", str(card.artifact.size_bytes)),
                ("Reference distributions", card.reference_uri or NOT_RECORDED),
            ],
            [],
        ),
        (
            "Approval history",
            [
                [
                    e.at.isoformat(),
                    e.actor,
                    e.action,
                    f"{e.from_status or ''} → {e.to_status or ''}".strip(" →") or "",
                    e.reason or "",
                ]
                for e in card.approval_history
            ],
            ["when", "who", "action", "change", "reason"],
        ),
        (
            "Approval policy",
            [
                (
                    "Auto-approve",
                    NOT_RECORDED if card.auto_approve is None else ("yes" if card.auto_approve else "no"),
                ),
            ],
            [],
        ),
    ]


_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", "|": "\\|", "[": "\\[", "]": "\\]"})


def _md(text: str) -> str:
    """Inert Markdown text: no raw HTML (``<``, ``&`` as entities), no links, no table breaks, one line."""
    return " ".join(text.translate(_MD_ESCAPES).split())


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown; text is escaped so a Markdown renderer never emits raw HTML."""
    lines = [f"# Model card: {_md(card.model_name)} v{card.version} ({_md(card.feature_set)})", ""]
    if card.failed_gates:
        lines += [f"> **Failed gates:** {_md(', '.join(card.failed_gates))}", ""]
    for heading, rows, header in _sections(card):
        lines += [f"## {heading}", ""]
        if not rows:
            lines += [f"_{NOT_RECORDED}_", ""]
            continue
        if header:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md(str(cell)) for cell in row) + " |" for row in rows]
        else:
            lines += [f"- **{_md(str(row[0]))}:** {_md(str(row[1]))}" for row in rows]
        lines.append("")
    return "\n".join(lines)


_CELL_CLASSES = {"FAIL": "fail", "failed": "fail", SELECTED_MARK: "selected"}
"""Table cells the HTML page highlights: failed gates and trials, and the selected trials."""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _link(reference: str) -> str:
    """A reference as a link when it is an http(s) URL, else as text (no ``javascript:`` hrefs)."""
    if reference.startswith(("https://", "http://")):
        return f'<a href="{_h(reference)}" rel="noopener noreferrer">{_h(reference)}</a>'
    return _h(reference)


def _rows_html(rows: Iterable[tuple[str, str]], *, raw_values: Mapping[str, str]) -> str:
    cells = []
    for key, value in rows:
        rendered = raw_values.get(key, _h(value))
        cells.append(f"<tr><th scope='row'>{_h(key)}</th><td>{rendered}</td></tr>")
    return "<table class='kv'>" + "".join(cells) + "</table>"


def render_html(card: ModelCard) -> str:
    """The card as a self-contained HTML page; every piece of text is escaped with ``html.escape``."""
    title = f"Model card: {card.model_name} v{card.version} ({card.feature_set})"
    references = ", ".join(_link(ref) for ref in card.references) if card.references else _h(NOT_RECORDED)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_h(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}"
        "table{border-collapse:collapse;margin-bottom:1rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;"
        "text-align:left;vertical-align:top}.fail{color:#b00;font-weight:bold}"
        "tr.selected{background:#eef7ee}.selected{color:#060;font-weight:bold}</style>",
        "</head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    if card.failed_gates:
        parts.append(f"<p class='fail'>Failed gates: {_h(', '.join(card.failed_gates))}</p>")
    for heading, rows, header in _sections(card):
        parts.append(f"<h2>{_h(heading)}</h2>")
        if not rows:
            parts.append(f"<p><em>{_h(NOT_RECORDED)}</em></p>")
        elif header:
            head = "".join(f"<th scope='col'>{_h(col)}</th>" for col in header)
            body = "".join(
                ("<tr class='selected'>" if SELECTED_MARK in row else "<tr>")
                + "".join(
                    f"<td class='{_CELL_CLASSES[c]}'>{_h(str(c))}</td>"
                    if c in _CELL_CLASSES
                    else f"<td>{_h(str(c))}</td>"
                    for c in row
                )
                + "</tr>"
                for row in rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            pairs = [(str(row[0]), str(row[1])) for row in rows]
            parts.append(_rows_html(pairs, raw_values={"References": references}))
    parts.append("</body></html>")
    return "\n".join(parts)
