"""Column-level lineage with sqlglot: through refs, CTEs, joins, aggregates, stars and unions, on the real example."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest

from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.loader import load_config
from pfactory.materialiser.lineage import column_lineage, lineage_report
from pfactory.materialiser.templates import RenderedFeatureSet, RenderedModel, render_feature_set

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "credit_features.yaml"
DS = date(2024, 3, 1)
SCHEMAS = {
    "applicants": [
        "applicant_id",
        "age",
        "gender",
        "annual_income",
        "monthly_debt_payments",
        "months_at_address",
        "employment_status",
        "ds",
    ],
    "bureau": ["applicant_id", "balance", "credit_limit", "ds"],
    "transactions": ["applicant_id", "days_past_due", "amount", "ds"],
}


def rendered(*models: tuple[str, str]) -> RenderedFeatureSet:
    """A rendered feature set from (name, sql) pairs already in execution order; the last is the output."""
    return RenderedFeatureSet(
        ds=DS,
        models=tuple(RenderedModel(name, sql, (), _sources(sql)) for name, sql in models),
        output=models[-1][0],
    )


def _sources(sql: str) -> tuple[str, ...]:
    return tuple(name for name in SCHEMAS if f"src_{name}" in sql)


def test_lineage_of_the_credit_example() -> None:
    config = load_config(EXAMPLE, expect=FeatureSetConfig)
    report = lineage_report(render_feature_set(config, DS), SCHEMAS)
    assert report.warnings == []
    assert report.columns == {
        "applicant_id": ["applicants.applicant_id"],
        "event_ts": [],  # a constant: cast('<ds>' as timestamp)
        "age": ["applicants.age"],
        "age_band": ["applicants.age"],
        "gender": ["applicants.gender"],
        "income": ["applicants.annual_income"],
        "debt_to_income": ["applicants.annual_income", "applicants.monthly_debt_payments"],
        "months_at_address": ["applicants.months_at_address"],
        "employment_status": ["applicants.employment_status"],
        "utilisation": ["bureau.balance", "bureau.credit_limit"],
        # count(*) derives from the rows it counts: group-by keys and where-filter columns
        "n_open_accounts": ["bureau.applicant_id", "bureau.ds"],
        "n_late_payments_90d": ["transactions.applicant_id", "transactions.days_past_due", "transactions.ds"],
    }
    assert list(report.models) == ["applicant_base", "bureau_summary", "credit_features"]
    assert report.models["bureau_summary"]["utilisation"] == ["bureau.balance", "bureau.credit_limit"]


def test_the_examples_declared_source_columns_are_a_subset_of_the_derived_lineage() -> None:
    config = load_config(EXAMPLE, expect=FeatureSetConfig)
    derived = column_lineage(render_feature_set(config, DS), SCHEMAS)
    extra = {}
    for feature in config.spec.features:
        assert set(feature.source_columns) <= set(derived[feature.name]), feature.name
        if set(derived[feature.name]) != set(feature.source_columns):
            extra[feature.name] = sorted(set(derived[feature.name]) - set(feature.source_columns))
    # the declared lineage of the two count(*) features omits the grouping key / the filters
    assert extra == {
        "n_open_accounts": ["bureau.ds"],
        "n_late_payments_90d": ["transactions.applicant_id", "transactions.ds"],
    }


def test_select_star_and_join_using_through_intermediate_models() -> None:
    result = column_lineage(
        rendered(
            ("base", "select * from src_applicants"),
            ("bur", "select applicant_id, balance as bal from src_bureau"),
            ("final", "select * from mdl_base join mdl_bur using (applicant_id)"),
        ),
        SCHEMAS,
    )
    assert result["applicant_id"] == ["applicants.applicant_id", "bureau.applicant_id"]
    assert result["age"] == ["applicants.age"]
    assert result["bal"] == ["bureau.balance"]
    assert list(result)[:2] == ["applicant_id", "age"]


def test_case_coalesce_arithmetic_and_windows() -> None:
    result = column_lineage(
        rendered(
            (
                "m",
                """
                select
                  case when age < 25 then annual_income else monthly_debt_payments end as c,
                  coalesce(gender, employment_status, 'x') as g,
                  (annual_income - monthly_debt_payments) / 12 as monthly_free,
                  row_number() over (partition by employment_status order by months_at_address) as rn
                from src_applicants
                """,
            )
        ),
        SCHEMAS,
    )
    assert result == {
        "c": ["applicants.age", "applicants.annual_income", "applicants.monthly_debt_payments"],
        "g": ["applicants.employment_status", "applicants.gender"],
        "monthly_free": ["applicants.annual_income", "applicants.monthly_debt_payments"],
        "rn": ["applicants.employment_status", "applicants.months_at_address"],
    }


def test_ctes_derived_tables_unions_and_scalar_subqueries() -> None:
    sql = """
    with recent as (select applicant_id, amount from src_transactions where days_past_due > 0),
         totals as (select applicant_id, sum(amount) as total from recent group by applicant_id)
    select t.applicant_id,
           t.total,
           d.limit_total,
           (select max(balance) from src_bureau) as max_balance
    from totals t
    join (select applicant_id, sum(credit_limit) as limit_total from src_bureau group by applicant_id) d
      on t.applicant_id = d.applicant_id
    union all
    select applicant_id, annual_income, 0, 0 from src_applicants
    """
    result = column_lineage(rendered(("m", sql)), SCHEMAS)
    assert result == {
        "applicant_id": ["applicants.applicant_id", "transactions.applicant_id"],
        "total": ["applicants.annual_income", "transactions.amount"],
        "limit_total": ["bureau.credit_limit"],
        "max_balance": ["bureau.balance"],
    }


def test_count_star_derives_from_group_keys_and_filters_but_sum_only_from_its_argument() -> None:
    result = column_lineage(
        rendered(
            (
                "m",
                "select count(*) as n, count(1) as n1, sum(amount) as s, count(amount) as c "
                "from src_transactions where days_past_due > 30 group by applicant_id having count(*) > 1",
            )
        ),
        SCHEMAS,
    )
    rows = ["transactions.applicant_id", "transactions.days_past_due"]
    assert result == {"n": rows, "n1": rows, "s": ["transactions.amount"], "c": ["transactions.amount"]}
    ungrouped = column_lineage(rendered(("m", "select count(*) as n from src_bureau")), SCHEMAS)
    assert ungrouped == {"n": []}


def test_an_unknown_source_schema_is_a_warning_and_qualified_columns_still_resolve() -> None:
    report = lineage_report(
        rendered(("m", "select b.balance, b.nope as x from src_bureau b")),
        {"applicants": SCHEMAS["applicants"]},
    )
    assert report.columns == {"balance": ["bureau.balance"], "x": ["bureau.nope"]}
    assert report.warnings == ["model 'm': no schema given for source 'bureau'"]


def test_unresolvable_things_map_to_empty_lists_with_warnings() -> None:
    report = lineage_report(
        rendered(
            ("broken", "select from where ((("),
            ("m", "select x.a, y.b, c from mdl_broken x join some_table y on x.a = y.b"),
        ),
        SCHEMAS,
    )
    assert report.columns == {"a": [], "b": [], "c": []}
    assert report.warnings[0].startswith("model 'broken': SQL could not be analysed:")
    assert "model 'm', column 'a': reads 'mdl_broken', which is neither a source() nor an analysed ref()" in (
        report.warnings
    )
    assert "model 'm', column 'b': reads 'some_table', which is neither a source() nor an analysed ref()" in (
        report.warnings
    )
    assert any(
        w.startswith("model 'm', column 'c': column 'c' is not tied to a table") for w in report.warnings
    )


def test_an_output_model_that_cannot_be_parsed_gives_no_columns_and_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pfactory.materialiser.lineage"):
        assert column_lineage(rendered(("m", "select from where (((")), SCHEMAS) == {}
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("lineage: model 'm': SQL could not be analysed: Expected table name") for m in messages
    )
    assert "lineage: output model 'm' could not be analysed" in messages
    not_a_query = lineage_report(rendered(("m", "selec nonsense")), SCHEMAS)
    assert not_a_query.columns == {}
    assert not_a_query.warnings == ["model 'm': not a query", "output model 'm' could not be analysed"]


def test_a_star_over_an_unknown_table_is_a_warning() -> None:
    report = lineage_report(rendered(("m", "select * from src_bureau")), {})
    assert report.columns == {}
    assert "model 'm': 'select *' over a table of unknown columns" in report.warnings


def test_lineage_is_deterministic() -> None:
    config = load_config(EXAMPLE, expect=FeatureSetConfig)
    first = lineage_report(render_feature_set(config, DS), SCHEMAS)
    second = lineage_report(render_feature_set(config, date(2024, 3, 2)), SCHEMAS)
    assert first == second
