"""Registration gates: the config's metric thresholds and fairness constraints against what was measured.

A gate that cannot be evaluated (the metric or fairness measure was not reported, or is not a
finite number) is recorded as *failed* with that reason, never silently passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pfactory.contracts.configs.metrics import LOWER_IS_BETTER
from pfactory.contracts.configs.model import Fairness, Metrics
from pfactory.registry.cards import fairness_gap, fairness_gate, fairness_measure, metric_gate
from pfactory.registry.model import MetricValue


class ConfigSectionError(ValueError):
    """The config's metrics or fairness section does not match the Model schema."""


@dataclass(frozen=True)
class GateResult:
    """One gate: its name, the verdict and why."""

    name: str
    passed: bool
    reason: str


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigSectionError(f"spec.{name} of the model config is not a mapping")
    return value


def read_gate_config(config: Mapping[str, Any]) -> tuple[Metrics | None, Fairness | None]:
    """The config's ``spec.metrics`` and ``spec.fairness``, validated against the Model schema.

    Raises:
        ConfigSectionError: either section does not validate.
    """
    spec = config.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigSectionError("the model config has no spec")
    try:
        raw_metrics, raw_fairness = _section(spec, "metrics"), _section(spec, "fairness")
        metrics = Metrics.model_validate(raw_metrics) if raw_metrics is not None else None
        fairness = Fairness.model_validate(raw_fairness) if raw_fairness is not None else None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ConfigSectionError(f"the model config's gates do not validate: {problems}") from None
    return metrics, fairness


def evaluate_gates(
    metrics_config: Metrics | None,
    fairness_config: Fairness | None,
    measured: Mapping[str, MetricValue],
    fairness_report: Mapping[str, Any],
) -> list[GateResult]:
    """Decide every gate the config sets.

    Args:
        metrics_config: ``spec.metrics`` (thresholds: a minimum per metric, a maximum for
            lower-is-better metrics).
        fairness_config: ``spec.fairness`` (constraints: the largest allowed gap per measure,
            checked on every protected attribute).
        measured: the evaluation metrics.
        fairness_report: the trainer's fairness report (shape in :mod:`pfactory.registry.cards`).

    Returns:
        One result per gate, metrics first, in a stable order.
    """
    results: list[GateResult] = []
    thresholds = metrics_config.thresholds if metrics_config else {}
    for metric, threshold in sorted(thresholds.items()):
        name = metric_gate(metric.value)
        value = measured.get(metric.value)
        lower = metric in LOWER_IS_BETTER
        bound = f"{'maximum' if lower else 'minimum'} {_fmt(threshold)}"
        if value is None:
            results.append(GateResult(name, False, f"{metric.value} was not reported; {bound} unchecked"))
            continue
        passed = value.value <= threshold if lower else value.value >= threshold
        comparison = ("≤" if lower else "≥") if passed else (">" if lower else "<")
        results.append(GateResult(name, passed, f"{metric.value} {_fmt(value.value)} {comparison} {bound}"))
    if fairness_config is not None:
        for attribute in fairness_config.protected_attributes:
            for measure, limit in sorted(fairness_config.constraints.items()):
                name = fairness_gate(attribute, measure.value)
                found = fairness_measure(fairness_report, attribute, measure.value)
                if found is None:
                    results.append(
                        GateResult(
                            name,
                            False,
                            f"{measure.value} for {attribute} was not reported (or is not a finite number); "
                            f"largest allowed gap {_fmt(limit)} unchecked",
                        )
                    )
                    continue
                gap = fairness_gap(measure.value, found)
                passed = gap <= limit
                results.append(
                    GateResult(
                        name,
                        passed,
                        f"{measure.value} for {attribute}: gap {_fmt(gap)} "
                        f"{'≤' if passed else '>'} largest allowed {_fmt(limit)}",
                    )
                )
    return results
