"""What a feature partition must satisfy, and the report of checking it. No GX import here.

The suite comes from the FeatureSet declaration:

============================  ===================================================================
declaration                   check (GX 1.x expectation)
============================  ===================================================================
every partition               ``table_row_count_between(min=1)``
declared columns              ``table_columns_match_set(entity + timestamp + features, exact=False)``
entity key (one column)       ``column_values_not_null`` + ``column_values_unique``
entity key (several)          ``compound_columns_unique``
feature ``nullable: false``   ``column_values_not_null``
``not_null``                  ``column_values_not_null``
``max_null_fraction: f``      ``column_values_not_null(mostly=1 - f)``
``between: min/max``          ``column_values_between(min_value, max_value)``
``in_set: values``            ``column_values_in_set(value_set)``
``unique``                    ``column_values_unique``
``regex: pattern``            ``column_values_match_regex(^(?:pattern)$)`` (the whole value)
============================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from pfactory.contracts.configs.featureset import (
    Between,
    FeatureSetSpec,
    InSet,
    MaxNullFraction,
    NotNull,
    Regex,
    Unique,
)

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Check:
    """One expectation to run: its kind (the GX expectation type), column(s) and arguments."""

    kind: str
    column: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    """Where it comes from, for people: ``feature 'age': between``, ``entity key``."""

    def describe(self) -> str:
        """``kind(column, args)`` in one line."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        target = self.column or ""
        return f"{self.kind}({target}{', ' if target and args else ''}{args})"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    check: Check
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in reports and events)."""
        return {
            "expectation": self.check.kind,
            "column": self.check.column,
            "kwargs": self.check.kwargs,
            "origin": self.check.origin,
            "success": self.success,
            "observed_value": self.observed,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "unexpected_examples": self.examples[:MAX_EXAMPLES],
            "error": self.error,
        }


@dataclass(frozen=True)
class ValidationReport:
    """All checks of one partition."""

    results: list[CheckResult]
    engine: str = "great_expectations"

    @property
    def success(self) -> bool:
        """True when every check passed."""
        return all(r.success for r in self.results)

    def failures(self) -> list[CheckResult]:
        """The checks that failed, in suite order."""
        return [r for r in self.results if not r.success]

    def summary(self) -> dict[str, Any]:
        """Counts and the failing checks, small enough for an event."""
        failed = self.failures()
        return {
            "success": self.success,
            "evaluated": len(self.results),
            "passed": len(self.results) - len(failed),
            "failed": len(failed),
            "failures": [f.to_dict() for f in failed],
        }

    def to_dict(self) -> dict[str, Any]:
        """The full report (``_validation.json``)."""
        return {"engine": self.engine, **self.summary(), "results": [r.to_dict() for r in self.results]}


class PartitionValidator(Protocol):
    """Runs a list of checks on a partition's rows."""

    def validate(self, table: pa.Table, checks: Sequence[Check]) -> ValidationReport:
        """Check ``table``.

        Args:
            table: the partition's rows.
            checks: from :func:`checks_for`.

        Returns:
            One result per check, in order, each with up to five unexpected example values.
        """
        ...


def checks_for(spec: FeatureSetSpec) -> list[Check]:
    """The suite for a feature set: row count, declared columns, entity key, then each feature's checks."""
    declared = _unique([*spec.entity, spec.timestamp, *(f.name for f in spec.features)])
    checks = [
        Check(
            "expect_table_row_count_to_be_between", kwargs={"min_value": 1}, origin="partition is not empty"
        ),
        Check(
            "expect_table_columns_to_match_set",
            kwargs={"column_set": declared, "exact_match": False},
            origin="declared columns are present",
        ),
    ]
    if len(spec.entity) == 1:
        key = spec.entity[0]
        checks.append(Check("expect_column_values_to_not_be_null", key, origin="entity key"))
        checks.append(Check("expect_column_values_to_be_unique", key, origin="entity key"))
    else:
        checks.append(
            Check(
                "expect_compound_columns_to_be_unique",
                kwargs={"column_list": list(spec.entity)},
                origin="entity key",
            )
        )
    for feature in spec.features:
        origin = f"feature '{feature.name}'"
        if not feature.nullable:
            checks.append(
                Check("expect_column_values_to_not_be_null", feature.name, origin=f"{origin}: nullable false")
            )
        for expectation in feature.expectations:
            where = f"{origin}: {expectation.type}"
            match expectation:
                case NotNull():
                    checks.append(Check("expect_column_values_to_not_be_null", feature.name, origin=where))
                case MaxNullFraction(value=value):
                    mostly = {"mostly": round(1.0 - value, 12)}
                    checks.append(Check("expect_column_values_to_not_be_null", feature.name, mostly, where))
                case Between(min=low, max=high):
                    bounds = {k: v for k, v in (("min_value", low), ("max_value", high)) if v is not None}
                    checks.append(Check("expect_column_values_to_be_between", feature.name, bounds, where))
                case InSet(values=values):
                    checks.append(
                        Check(
                            "expect_column_values_to_be_in_set",
                            feature.name,
                            {"value_set": list(values)},
                            where,
                        )
                    )
                case Unique():
                    checks.append(Check("expect_column_values_to_be_unique", feature.name, origin=where))
                case Regex(pattern=pattern):
                    whole = {"regex": f"^(?:{pattern})$"}
                    checks.append(Check("expect_column_values_to_match_regex", feature.name, whole, where))
    return checks


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))
