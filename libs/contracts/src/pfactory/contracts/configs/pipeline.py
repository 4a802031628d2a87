"""Pipeline, estimator and hyper-parameter sweep sections of the ``Model`` config."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import Discriminator, Field, JsonValue, Tag, ValidationInfo, field_validator, model_validator

from pfactory.contracts.catalog import KNOWN_PARAMS
from pfactory.contracts.configs.common import Identifier, ImportPath, StrictModel, config_error
from pfactory.contracts.configs.metrics import Metric
from pfactory.contracts.suggest import did_you_mean

MAX_GRID_SIZE = 500
_PARAM_TYPO_CUTOFF = 0.8


def check_params(params: dict[str, JsonValue], info: ValidationInfo) -> dict[str, JsonValue]:
    """Refuse parameter names that look like misspellings of a catalogued class's parameters."""
    known = KNOWN_PARAMS.get(str(info.data.get("import_path")))
    if known is None:
        return params
    typos = [
        (name, guess)
        for name in params
        if name not in known and (guess := did_you_mean(name, known, cutoff=_PARAM_TYPO_CUTOFF))
    ]
    if len(typos) == 1:
        name, guess = typos[0]
        raise config_error("unknown_param", f"unknown field '{name}'", suggestion=guess, key=name)
    if typos:
        listed = ", ".join(f"'{name}' (did you mean '{guess}'?)" for name, guess in typos)
        raise config_error("unknown_param", f"unknown fields {listed}", key=typos[0][0])
    return params


class DtypeSelector(StrEnum):
    """Column selection by type, for steps that apply to every column of a kind."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    DATETIME = "datetime"


class _ColumnSelection(StrictModel):
    columns: list[str] | None = Field(
        default=None, min_length=1, description="Feature columns the step applies to."
    )
    dtype_include: list[DtypeSelector] | None = Field(
        default=None, min_length=1, description="Select columns by type instead of by name."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> Self:
        if self.columns is not None and self.dtype_include is not None:
            raise config_error("column_selector", "give 'columns' or 'dtype_include', not both")
        return self


class TransformerStep(_ColumnSelection):
    """A transformer applied in sequence, by import path (scikit-learn transformer interface)."""

    name: Identifier = Field(description="Step name; sweep parameters address it as '<name>.<param>'.")
    import_path: ImportPath = Field(
        alias="import", description="Class path, e.g. 'sklearn.preprocessing.StandardScaler'."
    )
    params: dict[str, JsonValue] = Field(default_factory=dict, description="Constructor keyword arguments.")

    _params_spelled_right = field_validator("params")(check_params)


class ColumnTransformerEntry(_ColumnSelection):
    """One transformer inside a column transformer; it must select its columns."""

    name: Identifier = Field(description="Transformer name, unique within the column transformer.")
    import_path: ImportPath = Field(
        alias="import", description="Class path, e.g. 'sklearn.preprocessing.OneHotEncoder'."
    )
    params: dict[str, JsonValue] = Field(default_factory=dict, description="Constructor keyword arguments.")

    _params_spelled_right = field_validator("params")(check_params)

    @model_validator(mode="after")
    def _selects_columns(self) -> Self:
        if self.columns is None and self.dtype_include is None:
            raise config_error(
                "column_selector",
                f"transformer '{self.name}' must select its input",
                expected="'columns: [...]' or 'dtype_include: [numeric]'",
            )
        return self


class ColumnTransformerStep(StrictModel):
    """Different transformers for different columns (``sklearn.compose.ColumnTransformer``)."""

    name: Identifier = Field(description="Step name.")
    transformers: list[ColumnTransformerEntry] = Field(min_length=1, description="Per-column transformers.")
    remainder: Literal["drop", "passthrough"] = Field(
        default="drop", description="What happens to columns no transformer selects."
    )


def _step_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "column_transformer" if "transformers" in value else "transformer"
    return "column_transformer" if isinstance(value, ColumnTransformerStep) else "transformer"


PipelineStep = Annotated[
    Annotated[TransformerStep, Tag("transformer")]
    | Annotated[ColumnTransformerStep, Tag("column_transformer")],
    Discriminator(_step_kind),
]
"""A transformer step, or a column transformer when the step has ``transformers``."""


class Estimator(StrictModel):
    """The final estimator (scikit-learn estimator interface)."""

    import_path: ImportPath = Field(
        alias="import", description="Class path, e.g. 'sklearn.ensemble.HistGradientBoostingClassifier'."
    )
    params: dict[str, JsonValue] = Field(default_factory=dict, description="Constructor keyword arguments.")

    _params_spelled_right = field_validator("params")(check_params)


class Pipeline(StrictModel):
    """Preprocessing steps followed by an estimator."""

    steps: list[PipelineStep] = Field(default_factory=list, description="Transformers, applied in order.")
    estimator: Estimator = Field(description="The model fitted on the transformed features.")


class SweepStrategy(StrEnum):
    """How sweep candidates are drawn."""

    GRID = "grid"
    RANDOM = "random"


class SelectionMode(StrEnum):
    """What the sweep produces."""

    CHAMPION = "champion"
    TOP_K_ENSEMBLE = "top_k_ensemble"


class EnsembleMethod(StrEnum):
    """How the top-k trials are combined."""

    SOFT_VOTING = "soft_voting"
    STACKING = "stacking"


class Selection(StrictModel):
    """How the sweep's result is chosen."""

    mode: SelectionMode = Field(
        default=SelectionMode.CHAMPION,
        description="champion: best trial; top_k_ensemble: average the k best.",
    )
    k: int | None = Field(default=None, ge=2, description="Ensemble size; required for top_k_ensemble.")
    metric: Metric | None = Field(
        default=None, description="Metric to rank trials by; default: metrics.primary."
    )
    ensemble: EnsembleMethod = Field(
        default=EnsembleMethod.SOFT_VOTING,
        description="top_k_ensemble only: soft_voting averages the k models' probabilities (their "
        "predictions, for regressors); stacking fits a linear model on their out-of-fold outputs.",
    )

    @model_validator(mode="after")
    def _k_matches_mode(self) -> Self:
        if self.mode is SelectionMode.TOP_K_ENSEMBLE and self.k is None:
            raise config_error("selection_k", "top_k_ensemble needs 'k' (the number of trials to ensemble)")
        if self.mode is SelectionMode.CHAMPION and self.k is not None:
            raise config_error("selection_k", "'k' is only used with mode 'top_k_ensemble'")
        return self


class Sweep(StrictModel):
    """Hyper-parameter search over pipeline parameters."""

    strategy: SweepStrategy = Field(description="grid: every combination; random: n_trials draws.")
    n_trials: int | None = Field(default=None, ge=1, description="Number of trials; required for random.")
    params: dict[str, Annotated[list[JsonValue], Field(min_length=1)]] = Field(
        min_length=1,
        description="Candidate values by '<step>.<param>', e.g. {'estimator.max_depth': [3, 5]}.",
    )
    selection: Selection = Field(default_factory=Selection, description="How the result is chosen.")

    @model_validator(mode="after")
    def _size(self) -> Self:
        if self.strategy is SweepStrategy.RANDOM and self.n_trials is None:
            raise config_error("sweep_trials", "random sweeps need 'n_trials'")
        grid = math.prod(len(values) for values in self.params.values())
        if self.strategy is SweepStrategy.GRID and grid > MAX_GRID_SIZE:
            raise config_error(
                "sweep_size",
                f"the grid has {grid} combinations; the limit is {MAX_GRID_SIZE}",
                expected="fewer values, or strategy 'random' with n_trials",
            )
        return self
