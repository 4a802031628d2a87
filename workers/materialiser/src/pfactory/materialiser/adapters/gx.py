"""``GxPartitionValidator``: runs :mod:`pfactory.materialiser.validation` checks with Great Expectations 1.x.

An ephemeral context (in memory, no project folder, analytics and progress bars off) validates a
pandas DataFrame made from the partition's Arrow table; each check becomes one GX expectation.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import great_expectations as gx
import pyarrow as pa
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations import Expectation

from pfactory.materialiser.validation import MAX_EXAMPLES, Check, CheckResult, ValidationReport

EXPECTATIONS: dict[str, type[Expectation]] = {
    "expect_table_row_count_to_be_between": gx.expectations.ExpectTableRowCountToBeBetween,
    "expect_table_columns_to_match_set": gx.expectations.ExpectTableColumnsToMatchSet,
    "expect_column_values_to_not_be_null": gx.expectations.ExpectColumnValuesToNotBeNull,
    "expect_column_values_to_be_unique": gx.expectations.ExpectColumnValuesToBeUnique,
    "expect_compound_columns_to_be_unique": gx.expectations.ExpectCompoundColumnsToBeUnique,
    "expect_column_values_to_be_between": gx.expectations.ExpectColumnValuesToBeBetween,
    "expect_column_values_to_be_in_set": gx.expectations.ExpectColumnValuesToBeInSet,
    "expect_column_values_to_match_regex": gx.expectations.ExpectColumnValuesToMatchRegex,
}
"""Check kind → GX expectation class."""

_INDEX = "pfactory_check_index"


class GxPartitionValidator:
    """Validates partitions in one ephemeral GX context, created on first use."""

    def __init__(self) -> None:
        self._context: Any = None
        self._lock = threading.Lock()

    def validate(self, table: pa.Table, checks: Sequence[Check]) -> ValidationReport:
        """Run ``checks`` on ``table``; a check GX could not evaluate fails with its error."""
        with self._lock:
            context = self._get_context()
            name = f"partition-{uuid.uuid4().hex[:12]}"
            source = context.data_sources.add_pandas(name)
            try:
                batch_definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
                suite = gx.ExpectationSuite(name=name)
                for index, check in enumerate(checks):
                    suite.add_expectation(_expectation(check, index))
                batch = batch_definition.get_batch(batch_parameters={"dataframe": table.to_pandas()})
                result = batch.validate(
                    suite,
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
                )
            finally:
                context.data_sources.delete(name)
        # GX reorders results; each expectation carries its check's index in ``meta``
        by_index = {int(r.expectation_config.meta[_INDEX]): r for r in result.results}
        return ValidationReport([_result(check, by_index[i]) for i, check in enumerate(checks)])

    def _get_context(self) -> Any:
        if self._context is None:
            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            )
            self._context = gx.get_context(mode="ephemeral", project_config=config)
        return self._context


def _expectation(check: Check, index: int) -> Expectation:
    cls = EXPECTATIONS[check.kind]
    kwargs: dict[str, Any] = {**check.kwargs, "meta": {_INDEX: index}}
    if check.column is not None:
        kwargs["column"] = check.column
    return cls(**kwargs)


def _result(check: Check, result: Any) -> CheckResult:
    details: dict[str, Any] = dict(result.result or {})
    error = _exception_message(result.exception_info or {})
    if check.kind == "expect_table_columns_to_match_set":
        missing = details.get("details", {}).get("mismatched", {}).get("missing", [])
        examples = [f"missing column: {name}" for name in missing]
    else:
        examples = [_plain(v) for v in details.get("partial_unexpected_list", [])][:MAX_EXAMPLES]
    return CheckResult(
        check=check,
        success=bool(result.success),
        observed=_plain(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=_plain(details.get("unexpected_percent")),
        examples=examples,
        error=error,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX nests exception info per metric when a metric failed to compute (e.g. a missing column)."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message")).strip().splitlines()[-1]
    return None


def _plain(value: Any) -> Any:
    """JSON-safe: NaN → None, numpy scalars → Python, containers recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
