"""The ``FeatureSet`` config kind: sources, dbt-like SQL models, declared features."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, JsonValue, model_validator

from pfactory.contracts.configs.common import (
    ColumnList,
    ConfigBase,
    Identifier,
    Schedule,
    StrictModel,
    Version,
    config_error,
)
from pfactory.contracts.issues import SemanticIssue
from pfactory.contracts.suggest import did_you_mean

_ALLOWED_SCHEMES = ("s3", "s3a", "file")


class SourceFormat(StrEnum):
    """File format of a source."""

    PARQUET = "parquet"
    CSV = "csv"


class Dtype(StrEnum):
    """Logical type of a feature column."""

    INT = "int"
    LONG = "long"
    FLOAT = "float"
    DOUBLE = "double"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"


def _check_data_path(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if sep and scheme not in _ALLOWED_SCHEMES:
        raise config_error(
            "invalid_path",
            f"unsupported scheme '{scheme}://' in path '{value}'",
            expected="a local path or an s3:// URI",
        )
    if value.count("{{") != value.count("}}") or "{%" in value:
        raise config_error(
            "invalid_path",
            f"path '{value}' has unbalanced '{{{{ }}}}' or a '{{%' block",
            expected="placeholders like 'ds={{ ds }}' only",
        )
    return value


DataPath = Annotated[str, Field(min_length=1), AfterValidator(_check_data_path)]
"""A local path or s3:// URI, optionally with ``{{ ds }}``-style placeholders."""


class Source(StrictModel):
    """A raw input table read by the SQL models through ``source('<name>')``."""

    format: SourceFormat = Field(description="File format: parquet or csv.")
    path: DataPath = Field(
        description="Local path or s3:// URI; may hold a partition placeholder, e.g. "
        "'s3://raw/applicants/ds={{ ds }}/'.",
    )
    partitioned_by: Identifier | None = Field(
        default=None,
        description="Partition column filled from the run date (usually 'ds'); none if unpartitioned.",
    )
    options: dict[str, JsonValue] = Field(
        default_factory=dict, description="Reader options passed to Spark, e.g. {header: true} for csv."
    )


class SqlModel(StrictModel):
    """One SQL step (Jinja text with ``ref()``, ``source()``, ``{{ ds }}``), like a dbt model."""

    name: Identifier = Field(description="Model name; other models reference it with ref('<name>').")
    sql: str | None = Field(default=None, description="Inline SQL (Jinja) text. Give this or sql_file.")
    sql_file: str | None = Field(
        default=None, description="Path of a .sql file, relative to the config file. Give this or sql."
    )
    description: str = Field(default="", description="What this model computes.")

    @model_validator(mode="after")
    def _exactly_one_body(self) -> Self:
        if (self.sql is None) == (self.sql_file is None):
            raise config_error(
                "sql_body",
                f"model '{self.name}' needs exactly one of 'sql' or 'sql_file'",
                expected="either inline 'sql' text or a 'sql_file' path",
            )
        return self


class NotNull(StrictModel):
    """No value may be null."""

    type: Literal["not_null"] = Field(description="Expectation type.")


class Unique(StrictModel):
    """Values must be unique within a partition."""

    type: Literal["unique"] = Field(description="Expectation type.")


class Between(StrictModel):
    """Values must lie within [min, max] (either bound may be omitted)."""

    type: Literal["between"] = Field(description="Expectation type.")
    min: float | None = Field(default=None, description="Inclusive lower bound.")
    max: float | None = Field(default=None, description="Inclusive upper bound.")

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise config_error("between_bounds", "'between' needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise config_error("between_bounds", f"'between' min {self.min} is greater than max {self.max}")
        return self


class InSet(StrictModel):
    """Values must be one of a fixed set."""

    type: Literal["in_set"] = Field(description="Expectation type.")
    values: list[str | int | float | bool] = Field(min_length=1, description="The allowed values.")


class Regex(StrictModel):
    """String values must match a regular expression."""

    type: Literal["regex"] = Field(description="Expectation type.")
    pattern: str = Field(min_length=1, description="Python regular expression the whole value must match.")

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise config_error("invalid_regex", f"pattern '{self.pattern}' does not compile: {exc}") from exc
        return self


class MaxNullFraction(StrictModel):
    """At most this fraction of values may be null."""

    type: Literal["max_null_fraction"] = Field(description="Expectation type.")
    value: float = Field(ge=0, le=1, description="Largest allowed null fraction, in [0, 1].")


Expectation = Annotated[
    NotNull | Unique | Between | InSet | Regex | MaxNullFraction, Field(discriminator="type")
]
"""A data-quality expectation on one feature, checked after materialisation."""


class Feature(StrictModel):
    """One declared output column of the feature set."""

    name: Identifier = Field(description="Column name in the output model.")
    dtype: Dtype = Field(description="Logical type of the column.")
    description: str = Field(
        default="", description="What the feature means; shown in lineage and model cards."
    )
    nullable: bool = Field(default=True, description="Whether nulls are allowed.")
    expectations: list[Expectation] = Field(
        default_factory=list, description="Data-quality checks on the column."
    )
    source_columns: list[str] = Field(
        default_factory=list,
        description="Lineage: source columns this feature derives from, as '<source>.<column>'.",
    )


class FeatureSetSpec(StrictModel):
    """How a feature set is computed and what it yields."""

    entity: ColumnList = Field(description="Entity key column(s), e.g. 'applicant_id'.")
    timestamp: Identifier = Field(description="Event-time column used for point-in-time joins.")
    sources: dict[Identifier, Source] = Field(min_length=1, description="Raw inputs, by name.")
    models: list[SqlModel] = Field(min_length=1, description="SQL models, in any order (ordered by ref()).")
    output: Identifier | None = Field(
        default=None,
        description="Name of the model whose result is the feature table; default: the last model.",
    )
    features: list[Feature] = Field(min_length=1, description="Declared output features.")
    vars: dict[str, JsonValue] = Field(
        default_factory=dict, description="Values templates read with var('<name>')."
    )
    schedule: Schedule | None = Field(
        default=None, description="When to materialise; none for on-demand only."
    )
    version: Version = Field(description="Feature set version: an integer or 'MAJOR.MINOR.PATCH'.")

    @property
    def output_model(self) -> str:
        """The name of the model that produces the features."""
        return self.output or self.models[-1].name


class FeatureSetConfig(ConfigBase):
    """A FeatureSet config: sources and SQL models that materialise declared features."""

    kind: Literal["FeatureSet"] = Field(description="Config kind.")
    spec: FeatureSetSpec = Field(description="What to compute.")

    def semantic_issues(self) -> list[SemanticIssue]:
        """Return cross-field problems: duplicate names, unknown output model, unknown lineage sources."""
        spec, issues = self.spec, []
        model_names = [m.name for m in spec.models]
        issues += _duplicates([f.name for f in spec.features], ("spec", "features"), "feature")
        issues += _duplicates(model_names, ("spec", "models"), "model")
        if spec.output is not None and spec.output not in model_names:
            issues.append(
                SemanticIssue(
                    ("spec", "output"),
                    f"output '{spec.output}' is not one of the models",
                    suggestion=did_you_mean(spec.output, model_names),
                    code="unknown_reference",
                )
            )
        for i, feature in enumerate(spec.features):
            for j, column in enumerate(feature.source_columns):
                source = column.split(".", 1)[0]
                if "." in column and source not in spec.sources:
                    issues.append(
                        SemanticIssue(
                            ("spec", "features", i, "source_columns", j),
                            f"lineage column '{column}' names unknown source '{source}'",
                            suggestion=did_you_mean(source, spec.sources),
                            code="unknown_reference",
                        )
                    )
        return issues


def _duplicates(names: list[str], loc: tuple[str, ...], what: str) -> list[SemanticIssue]:
    seen: set[str] = set()
    issues = []
    for index, name in enumerate(names):
        if name in seen:
            issues.append(
                SemanticIssue(
                    (*loc, index, "name"),
                    f"duplicate {what} name '{name}'; {what} names must be unique",
                    code="duplicate_name",
                )
            )
        seen.add(name)
    return issues
