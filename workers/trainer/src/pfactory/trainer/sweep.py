"""Sweeps: expand the trials, rank their scores, select the champion or the top k, build ensembles.

Pure functions over the config and trial scores; fitting and evaluating happen elsewhere.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue
from sklearn.ensemble import (  # type: ignore[import-untyped]
    StackingClassifier,
    StackingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.linear_model import LogisticRegression, RidgeCV  # type: ignore[import-untyped]

from pfactory.contracts.configs.metrics import LOWER_IS_BETTER, Metric, Task
from pfactory.contracts.configs.model import ModelSpec
from pfactory.contracts.configs.pipeline import EnsembleMethod, Selection, SelectionMode, Sweep, SweepStrategy
from pfactory.contracts.imports import ImportAllowlist
from pfactory.trainer.assembly import build_pipeline, check_interface

_MAX_EXACT_SAMPLE = 2**62  # random.sample needs len(range(...)) to fit in a C ssize_t


class SelectionError(ValueError):
    """Too few trials succeeded for the configured selection."""


@dataclass(frozen=True)
class TrialScore:
    """One trial's outcome: its run id, the sweep parameters it used, and its score.

    A trial failed when ``value`` is None or NaN; ``error`` says why, when known.
    """

    run_id: str
    params: Mapping[str, JsonValue]
    value: float | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the trial produced a usable score."""
        return self.error is None and self.value is not None and not math.isnan(self.value)


@dataclass(frozen=True)
class Selected:
    """What a sweep produces: the run ids to register (one champion, or the ensemble's members)."""

    mode: SelectionMode
    metric: Metric
    run_ids: tuple[str, ...]
    ranking: tuple[TrialScore, ...] = field(repr=False)
    """Every trial, best first; failed trials last."""


def expand_trials(sweep: Sweep, *, seed: int) -> list[dict[str, JsonValue]]:
    """List the parameter sets of a sweep's trials, in a stable order.

    Args:
        sweep: the sweep section.
        seed: seeds random draws (the spec's ``training.split.seed``), so a job re-run draws the same trials.

    Returns:
        Grid: every combination, the last parameter varying fastest (the config's key order).
        Random: ``n_trials`` draws, without replacement while unused combinations remain (a grid
        smaller than ``n_trials`` is exhausted first, then drawn again).
    """
    keys = list(sweep.params)
    values = [sweep.params[k] for k in keys]
    if sweep.strategy is SweepStrategy.GRID:
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    n_trials = sweep.n_trials or 1
    size = math.prod(len(v) for v in values)
    rng = random.Random(seed)
    indices: list[int] = []
    if size > _MAX_EXACT_SAMPLE:  # a vast grid: independent draws, a repeat is drawn again
        drawn: dict[int, None] = {}
        while len(drawn) < n_trials:
            drawn.setdefault(rng.randrange(size))
        indices = list(drawn)
    while len(indices) < n_trials:  # each round draws without replacement
        indices += rng.sample(range(size), min(size, n_trials - len(indices)))
    return [_combination(keys, values, index) for index in indices]


def _combination(keys: list[str], values: list[list[JsonValue]], index: int) -> dict[str, JsonValue]:
    """The ``index``-th grid combination, in ``itertools.product`` order (mixed-radix digits)."""
    picked: list[JsonValue] = []
    for options in reversed(values):
        index, digit = divmod(index, len(options))
        picked.append(options[digit])
    return dict(zip(keys, reversed(picked), strict=True))


def rank_trials(results: Sequence[TrialScore], metric: Metric) -> list[TrialScore]:
    """Order trials best first by ``metric`` (lower first for LOWER_IS_BETTER metrics).

    Failed trials (no value, NaN, or an error) come last; ties are broken by run id.
    """
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(trial: TrialScore) -> tuple[bool, float, str]:
        ok = trial.succeeded
        return (not ok, sign * trial.value if ok and trial.value is not None else 0.0, trial.run_id)

    return sorted(results, key=key)


def select(results: Sequence[TrialScore], selection: Selection, primary: Metric) -> Selected:
    """Choose the champion, or the top k trials for an ensemble.

    Args:
        results: every trial's score.
        selection: the sweep's selection section.
        primary: ``metrics.primary``, used when the selection names no metric.

    Returns:
        The selected run ids (one, or k) and the full ranking.

    Raises:
        SelectionError: fewer trials succeeded than the selection needs.
    """
    metric = selection.metric or primary
    ranking = rank_trials(results, metric)
    succeeded = [t for t in ranking if t.succeeded]
    needed = (selection.k or 1) if selection.mode is SelectionMode.TOP_K_ENSEMBLE else 1
    if len(succeeded) < needed:
        failed = [t for t in ranking if not t.succeeded]
        reasons = "; ".join(f"{t.run_id}: {t.error or f'no {metric.value} value'}" for t in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        why = (
            f"an ensemble of fewer than k={needed} members is not the model the config describes; fix "
            "the failing trials, or lower spec.sweep.selection.k"
            if selection.mode is SelectionMode.TOP_K_ENSEMBLE
            else "there is no champion to register; fix the failing trials"
        )
        raise SelectionError(
            f"{selection.mode.value} needs {needed} successful trial(s) but {len(succeeded)} of "
            f"{len(ranking)} succeeded; {len(failed)} failed: {reasons}{more}. {why}"
        )
    chosen = tuple(t.run_id for t in succeeded[:needed])
    return Selected(mode=selection.mode, metric=metric, run_ids=chosen, ranking=tuple(ranking))


def build_ensemble(
    spec: ModelSpec,
    *,
    allowlist: ImportAllowlist,
    member_params: Sequence[Mapping[str, JsonValue]],
    method: EnsembleMethod,
    names: Sequence[str],
) -> Any:
    """Combine full pipelines, one per selected trial, into an unfitted ensemble.

    Args:
        spec: the model spec the trials came from.
        allowlist: which import paths may be imported.
        member_params: each member's sweep parameters.
        method: soft voting (average probabilities, or predictions for regressors) or stacking
            (a LogisticRegression, or RidgeCV for regressors, on the members' out-of-fold outputs).
        names: each member's name (its trial's run id), unique.

    Returns:
        A VotingClassifier/VotingRegressor or StackingClassifier/StackingRegressor.

    Raises:
        ValueError: names and parameters do not pair up, or a name is unusable.
        AssemblyError, InterfaceError, DisallowedImportError: as :func:`build_pipeline`.
    """
    if len(names) != len(member_params) or len(names) < 2:
        raise ValueError(
            f"an ensemble needs 2+ members with one name each; got {len(names)} names "
            f"for {len(member_params)} parameter sets"
        )
    if len(set(names)) != len(names) or any("__" in n or not n for n in names):
        raise ValueError(f"ensemble member names must be unique, non-empty and free of '__': {list(names)}")
    members = [
        (name, build_pipeline(spec, allowlist=allowlist, params=params))
        for name, params in zip(names, member_params, strict=True)
    ]
    regression = spec.task is Task.REGRESSION
    ensemble: Any
    if method is EnsembleMethod.SOFT_VOTING:
        ensemble = VotingRegressor(members) if regression else VotingClassifier(members, voting="soft")
    elif regression:
        ensemble = StackingRegressor(members, final_estimator=RidgeCV())
    else:
        ensemble = StackingClassifier(members, final_estimator=LogisticRegression(max_iter=1000))
    check_interface(ensemble, spec.task, name=f"the {method.value} ensemble")
    return ensemble
