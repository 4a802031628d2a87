"""The GX suite built from the declarations really fails on bad data, and says where, with examples."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from pfactory.materialiser.adapters.gx import GxPartitionValidator
from pfactory.materialiser.validation import Check, checks_for
from tests.workers.materialiser.conftest import feature_set

GOOD = {
    "applicant_id": [1, 2, 3, 4],
    "event_ts": ["2024-03-01"] * 4,
    "age": [30, 40, 50, 60],
    "income": [1.0, 2.0, 3.0, 4.0],
    "score": [500, 600, 700, 800],
    "grade": ["A", "B", None, "C"],
}


def table(**changes: list[Any]) -> pa.Table:
    """The good table with some columns replaced (or removed with an empty list)."""
    data = {**GOOD, **changes}
    return pa.table({k: v for k, v in data.items() if v != []})


def test_the_suite_passes_on_good_data(gx_validator: GxPartitionValidator) -> None:
    report = gx_validator.validate(table(), checks_for(feature_set().spec))
    assert report.success, report.summary()
    assert len(report.results) == 11


@pytest.mark.parametrize(
    ("bad", "expectation", "column", "examples"),
    [
        ({"age": [30, 17, 101, 40]}, "expect_column_values_to_be_between", "age", [17, 101]),
        ({"age": [30, None, 50, 60]}, "expect_column_values_to_not_be_null", "age", [None]),
        ({"grade": ["A", "Q", "B", "C"]}, "expect_column_values_to_be_in_set", "grade", ["Q"]),
        (
            {"grade": ["A", None, None, None]},
            "expect_column_values_to_not_be_null",
            "grade",
            [None, None, None],
        ),
        ({"grade": ["A", "BB", "B", "C"]}, "expect_column_values_to_match_regex", "grade", ["BB"]),
        ({"applicant_id": [1, 2, 2, 4]}, "expect_column_values_to_be_unique", "applicant_id", [2, 2]),
        ({"income": [1.0, -5.0, 3.0, 4.0]}, "expect_column_values_to_be_between", "income", [-5.0]),
        ({"score": []}, "expect_table_columns_to_match_set", None, ["missing column: score"]),
    ],
)
def test_each_declared_expectation_fails_on_data_that_breaks_it(
    gx_validator: GxPartitionValidator,
    bad: dict[str, list[Any]],
    expectation: str,
    column: str | None,
    examples: list[Any],
) -> None:
    report = gx_validator.validate(table(**bad), checks_for(feature_set().spec))

    assert not report.success
    failures = {(f.check.kind, f.check.column): f for f in report.failures()}
    assert (expectation, column) in failures, report.summary()
    assert failures[expectation, column].examples == examples
    summary = report.summary()
    assert summary["failed"] >= 1 and summary["passed"] + summary["failed"] == summary["evaluated"]


def test_an_empty_partition_fails_and_a_check_on_a_missing_column_fails_with_the_error(
    gx_validator: GxPartitionValidator,
) -> None:
    empty = gx_validator.validate(table().slice(0, 0), checks_for(feature_set().spec))
    assert [f.check.kind for f in empty.failures()] == ["expect_table_row_count_to_be_between"]
    assert empty.failures()[0].observed == 0

    missing = gx_validator.validate(
        table(score=[]), [Check("expect_column_values_to_be_between", "score", {"min_value": 0})]
    )
    assert not missing.success
    assert missing.results[0].error is not None and "score" in missing.results[0].error


def test_a_composite_entity_key_is_checked_for_uniqueness_as_a_whole(
    gx_validator: GxPartitionValidator,
) -> None:
    checks = checks_for(feature_set(entity=["applicant_id", "grade"]).spec)
    ok = gx_validator.validate(table(applicant_id=[1, 1, 2, 2], grade=["A", "B", "A", "B"]), checks)
    bad = gx_validator.validate(table(applicant_id=[1, 1, 2, 2], grade=["A", "A", "A", "B"]), checks)
    kind = "expect_compound_columns_to_be_unique"
    assert kind not in [f.check.kind for f in ok.failures()]
    assert [f.check.kind for f in bad.failures()] == [kind]
    assert bad.failures()[0].unexpected_count == 2
