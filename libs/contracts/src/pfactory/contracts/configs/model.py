"""The ``Model`` config kind: what to train on, how, how to judge it, and how to run it."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal, Self

from pydantic import Field, model_validator

from pfactory.contracts.configs.common import (
    ColumnList,
    ConfigBase,
    Cron,
    Identifier,
    Slug,
    StrictModel,
    Timezone,
    Version,
    config_error,
)
from pfactory.contracts.configs.featureset import DataPath, SourceFormat
from pfactory.contracts.configs.metrics import FairnessMetric, Metric, Task
from pfactory.contracts.configs.model_checks import model_semantic_issues
from pfactory.contracts.configs.pipeline import Pipeline, Sweep
from pfactory.contracts.issues import SemanticIssue


class FeatureSetRef(StrictModel):
    """Which materialised feature set version to train on."""

    name: Slug = Field(description="metadata.name of the FeatureSet.")
    version: Version = Field(description="Its spec.version.")


class Labels(StrictModel):
    """Where the training labels come from."""

    path: DataPath = Field(description="Local path or s3:// URI of the label table.")
    format: SourceFormat = Field(default=SourceFormat.PARQUET, description="File format: parquet or csv.")
    entity: ColumnList = Field(description="Entity key column(s), matching the feature set's entity.")
    date_column: Identifier = Field(description="Date the label is known as of (for point-in-time joins).")
    label_column: Identifier = Field(description="Column holding the target.")
    positive_class: str | int | bool | None = Field(
        default=None, description="Label value counted as positive (binary classification)."
    )


class TrainingWindow(StrictModel):
    """Dates of the labelled rows used for training."""

    start: dt.date = Field(description="First label date, inclusive (YYYY-MM-DD).")
    end: dt.date = Field(description="Last label date, inclusive (YYYY-MM-DD).")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise config_error("window_order", f"window start {self.start} is after end {self.end}")
        return self


class SplitStrategy(StrEnum):
    """How the test set is held out."""

    TIME = "time"
    RANDOM = "random"


class Split(StrictModel):
    """Train/test split."""

    strategy: SplitStrategy = Field(
        default=SplitStrategy.TIME, description="time: latest rows are the test set; random: shuffled."
    )
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of rows held out for testing, in (0, 1)."
    )
    seed: int = Field(default=42, description="Random seed for reproducible splits and fits.")


class Training(StrictModel):
    """Training data window and split."""

    window: TrainingWindow = Field(description="Label dates to train on.")
    lookback_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="How many days before a label's date its features may come from: each label is "
        "joined with its entity's row in the latest validated partition on or before the label date "
        "and at most this many days earlier (0: that day's partition only). Never after the label date.",
    )
    split: Split = Field(default_factory=Split, description="How the test set is held out.")


class Metrics(StrictModel):
    """How models are evaluated."""

    primary: Metric = Field(description="The metric that decides; sweeps rank by it unless told otherwise.")
    report: list[Metric] = Field(default_factory=list, description="Further metrics to compute and record.")
    thresholds: dict[Metric, float] = Field(
        default_factory=dict,
        description="Gate for registration: a minimum per metric "
        "(a maximum for log_loss, brier_score, rmse, mae, mape).",
    )
    bootstrap_resamples: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="Bootstrap resamples of the test set behind each metric's 95% confidence interval; "
        "0 reports the point estimate alone.",
    )


class Fairness(StrictModel):
    """Fairness evaluation across protected groups."""

    protected_attributes: list[Identifier] = Field(
        min_length=1, description="Feature columns defining the groups."
    )
    metrics: list[FairnessMetric] = Field(min_length=1, description="Fairness measures to compute.")
    constraints: dict[FairnessMetric, float] = Field(
        default_factory=dict, description="Largest allowed gap per measure; a model over it is not approved."
    )
    min_group_size: int = Field(
        default=30,
        ge=1,
        description="Groups with fewer test rows are reported but left out of the gaps: a rate from a "
        "handful of rows is noise, and one such group could fail (or pass) a gate on its own.",
    )
    decision_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Score at or above which an applicant counts as selected (predicted positive) when "
        "selection rates, TPR and FPR are compared across groups.",
    )


class Resources(StrictModel):
    """What one training job may use."""

    cpu: float = Field(default=1.0, gt=0, description="CPU cores.")
    memory: str = Field(
        default="2Gi", pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$", description="Memory, e.g. '4Gi'."
    )
    timeout_seconds: int = Field(default=3600, gt=0, description="Wall-clock limit; the job fails after it.")
    gpu: int = Field(default=0, ge=0, description="GPUs.")


class Drift(StrictModel):
    """Input drift monitoring against the training reference."""

    psi_threshold: float = Field(
        default=0.2, gt=0, description="Population stability index that raises a drift alert."
    )


class Scoring(StrictModel):
    """Daily batch scoring of the live version."""

    schedule: Cron = Field(description="5-field cron expression, e.g. '0 6 * * *'.")
    timezone: Timezone = Field(default="UTC", description="IANA timezone the cron is read in.")
    drift: Drift = Field(default_factory=Drift, description="Drift monitoring.")


class Approval(StrictModel):
    """How a trained version becomes deployable."""

    auto_approve: bool = Field(
        default=False, description="Deploy without a human approval when all gates pass."
    )


class ModelCard(StrictModel):
    """Model-card fields written next to every registered version."""

    intended_use: str = Field(min_length=1, description="What decisions the model supports, and for whom.")
    limitations: str = Field(default="", description="Known weaknesses and out-of-scope uses.")
    ethical_considerations: str = Field(default="", description="Risks to people and how they are mitigated.")
    caveats: str = Field(default="", description="Anything else a reader should know.")
    contact: str = Field(min_length=1, description="Who to ask about the model.")
    references: list[str] = Field(default_factory=list, description="Links to documents, policies, papers.")


class ModelSpec(StrictModel):
    """What to train and how to run it."""

    feature_set: FeatureSetRef = Field(description="The features to train on.")
    labels: Labels = Field(description="The target.")
    task: Task = Field(description="binary_classification, multiclass_classification or regression.")
    training: Training = Field(description="Training window and split.")
    pipeline: Pipeline = Field(description="Preprocessing steps and estimator.")
    sweep: Sweep | None = Field(default=None, description="Optional hyper-parameter search.")
    metrics: Metrics = Field(description="Evaluation metrics and gates.")
    fairness: Fairness | None = Field(default=None, description="Fairness evaluation and constraints.")
    resources: Resources = Field(default_factory=Resources, description="Training job resources.")
    scoring: Scoring | None = Field(
        default=None, description="Batch scoring schedule; none for on-demand only."
    )
    approval: Approval = Field(default_factory=Approval, description="Approval policy.")
    card: ModelCard = Field(description="Model-card fields.")


class ModelConfig(ConfigBase):
    """A Model config: train an estimator on a feature set, evaluate it, and schedule its scoring."""

    kind: Literal["Model"] = Field(description="Config kind.")
    spec: ModelSpec = Field(description="What to train and how.")

    def semantic_issues(self) -> list[SemanticIssue]:
        """Return cross-field problems: metrics vs task, sweep targets, fairness constraints, params."""
        return model_semantic_issues(self.spec)
