"""The sweep section of a model card: every trial of a hyper-parameter sweep and which were selected.

The trainer reports a sweep in ``ModelTrained.metrics["sweep"]`` (kept in the version's
``metrics.json``) in this shape::

    {"strategy": "grid",                          # or "random"
     "selection": {"mode": "champion",            # or "top_k_ensemble"
                   "metric": "roc_auc",           # the metric trials are ranked by
                   "k": None,                     # ensemble size (top_k_ensemble)
                   "ensemble": None},             # "soft_voting" | "stacking" (top_k_ensemble)
     "selected": ["trial-003"],                   # run ids of the selected trial(s)
     "trials": [{"run_id": "trial-000",
                 "params": {"estimator.max_depth": 3},   # sweep overrides by parameter path
                 "metrics": {"roc_auc": 0.81},           # or {"roc_auc": {"value": 0.81, ...}}
                 "status": "succeeded",                  # or "failed"
                 "reason": None,                         # why a failed trial failed
                 "duration_s": 4.2}]}

:func:`read_sweep` turns it into a :class:`Sweep` whose trials are ranked by the selection metric
(best first, lower-is-better metrics ascending), then succeeded trials without that metric, then
failed ones. Anything malformed is skipped, never an error: a card always renders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from pfactory.contracts.configs.metrics import LOWER_IS_BETTER

SELECTED_MARK = "✔ selected"
"""How a selected trial is marked in the trials table (the HTML renderer highlights it)."""
SUCCEEDED = "succeeded"
FAILED = "failed"

Section = tuple[str, list[tuple[str, str]] | list[list[str]], list[str]]
"""(heading, rows, header): key/value rows when the header is empty, else a table."""


class _SweepModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SweepSelection(_SweepModel):
    """How the registered model was chosen among the trials."""

    mode: str | None = Field(default=None, description="'champion' or 'top_k_ensemble'.")
    metric: str | None = Field(default=None, description="The metric trials are ranked by.")
    k: int | None = Field(default=None, description="How many trials the ensemble combines.")
    ensemble: str | None = Field(default=None, description="'soft_voting' or 'stacking'.")


class SweepTrial(_SweepModel):
    """One trial: its parameters, metrics, outcome and whether it was selected."""

    run_id: str
    status: str = Field(description="'succeeded' or 'failed' (as reported).")
    selected: bool = False
    rank: int | None = Field(default=None, description="1 = best by the selection metric; None: unranked.")
    params: dict[str, JsonValue] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    reason: str | None = Field(default=None, description="Why the trial failed.")
    duration_s: float | None = None


class Sweep(_SweepModel):
    """A sweep's strategy, selection and trials (ranked best first, failed trials last)."""

    strategy: str | None = None
    selection: SweepSelection = Field(default_factory=SweepSelection)
    selected: list[str] = Field(default_factory=list)
    trials: list[SweepTrial] = Field(default_factory=list)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _json(value: Any) -> JsonValue:
    """A JSON-safe copy of a parameter value (anything else becomes its text)."""
    try:
        loaded: JsonValue = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return str(value)
    return loaded


def read_sweep(metrics_document: Mapping[str, Any], *, default_metric: str | None = None) -> Sweep | None:
    """The sweep a trainer reported, or None when ``metrics_document`` has no sweep section.

    Args:
        metrics_document: the trainer's full metrics (``metrics.json``).
        default_metric: ranks the trials when the sweep does not name its selection metric
            (the config's primary metric).
    """
    section = metrics_document.get("sweep")
    if not isinstance(section, Mapping):
        return None
    raw_selection = _mapping(section.get("selection"))
    k = raw_selection.get("k")
    selection = SweepSelection(
        mode=_text(raw_selection.get("mode")),
        metric=_text(raw_selection.get("metric")) or default_metric,
        k=k if isinstance(k, int) and not isinstance(k, bool) else None,
        ensemble=_text(raw_selection.get("ensemble")),
    )
    raw_selected = section.get("selected")
    selected = [str(s) for s in raw_selected if _text(s)] if isinstance(raw_selected, list) else []
    trials = []
    raw_trials = section.get("trials")
    for raw in raw_trials if isinstance(raw_trials, list) else []:
        entry = _mapping(raw)
        run_id = _text(entry.get("run_id"))
        if run_id is None:
            continue
        metrics = {
            str(k): n for k, v in _mapping(entry.get("metrics")).items() if (n := _number(v)) is not None
        }
        duration = _number(entry.get("duration_s"))
        trials.append(
            SweepTrial(
                run_id=run_id,
                status=(_text(entry.get("status")) or "unknown").lower(),
                selected=run_id in selected,
                params={str(k): _json(v) for k, v in _mapping(entry.get("params")).items()},
                metrics=metrics,
                reason=_text(entry.get("reason")),
                duration_s=duration if duration is not None and duration >= 0 else None,
            )
        )
    return Sweep(
        strategy=_text(section.get("strategy")),
        selection=selection,
        selected=selected,
        trials=_ranked(trials, selection.metric),
    )


def _ranked(trials: list[SweepTrial], metric: str | None) -> list[SweepTrial]:
    """Succeeded trials with the metric best first and numbered, then the other succeeded, then failed."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(trial: SweepTrial) -> tuple[int, float, str]:
        value = trial.metrics.get(metric) if metric else None
        if trial.status != SUCCEEDED:
            return (2, 0.0, trial.run_id)
        if value is None:
            return (1, 0.0, trial.run_id)
        return (0, sign * value, trial.run_id)

    ordered = sorted(trials, key=key)
    ranked = []
    for position, trial in enumerate(ordered, start=1):
        scored = trial.status == SUCCEEDED and metric is not None and metric in trial.metrics
        ranked.append(trial.model_copy(update={"rank": position if scored else None}))
    return ranked


# ---------------------------------------------------------------- rows for the renderers


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _param(value: JsonValue) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _selection_text(selection: SweepSelection) -> str:
    by = f" by {selection.metric}" if selection.metric else ""
    if selection.mode == "top_k_ensemble":
        size = f"top {selection.k}" if selection.k is not None else "top k"
        method = f", combined by {selection.ensemble}" if selection.ensemble else ""
        return f"{size} ensemble{by}{method}"
    return f"{selection.mode or 'not recorded'}{by}"


def sweep_sections(sweep: Sweep | None, not_recorded: str) -> list[Section]:
    """The card's "Sweep" summary and "Sweep trials" table (only the summary when there is no sweep)."""
    if sweep is None:
        return [("Sweep", [], [])]
    succeeded = sum(1 for t in sweep.trials if t.status == SUCCEEDED)
    failed = sum(1 for t in sweep.trials if t.status == FAILED)
    other = len(sweep.trials) - succeeded - failed
    counts = f"{succeeded} succeeded, {failed} failed" + (f", {other} other" if other else "")
    summary: list[tuple[str, str]] = [
        ("Strategy", sweep.strategy or not_recorded),
        ("Selection", _selection_text(sweep.selection)),
        ("Trials", f"{len(sweep.trials)} ({counts})"),
        ("Selected", ", ".join(sweep.selected) or not_recorded),
    ]
    metric = sweep.selection.metric
    rows = [
        [
            str(t.rank) if t.rank is not None else "",
            t.run_id,
            SELECTED_MARK if t.selected else "",
            t.status,
            _fmt(t.metrics.get(metric)) if metric else "",
            ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(t.metrics.items()) if k != metric),
            ", ".join(f"{k}={_param(v)}" for k, v in sorted(t.params.items())),
            _fmt(t.duration_s),
            t.reason or "",
        ]
        for t in sweep.trials
    ]
    header = ["rank", "trial", "selected", "status", metric or "selection metric"]
    header += ["other metrics", "params", "duration (s)", "reason"]
    return [("Sweep", summary, []), ("Sweep trials", rows, header)]
