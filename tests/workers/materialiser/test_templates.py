"""Rendering feature-set SQL templates: context, macros, sql_file, determinism, and every way to get it wrong."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.loader import load_config, load_config_dict
from pfactory.materialiser.templates import (
    RenderedFeatureSet,
    TemplateError,
    TemplateIssue,
    builtin_macros,
    model_view,
    render_feature_set,
    source_view,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "credit_features.yaml"
DS = date(2024, 3, 1)


def feature_set(
    models: list[dict[str, Any]],
    *,
    sources: tuple[str, ...] = ("applicants", "bureau"),
    variables: dict[str, Any] | None = None,
    output: str | None = None,
) -> FeatureSetConfig:
    """A minimal valid FeatureSet config around the given models."""
    spec: dict[str, Any] = {
        "entity": "applicant_id",
        "timestamp": "event_ts",
        "version": 1,
        "sources": {
            name: {"format": "parquet", "path": f"/data/{name}/ds={{{{ ds }}}}/"} for name in sources
        },
        "models": models,
        "features": [{"name": "applicant_id", "dtype": "string"}],
        "vars": variables or {},
    }
    if output is not None:
        spec["output"] = output
    data = {
        "apiVersion": "pfactory.io/v1",
        "kind": "FeatureSet",
        "metadata": {"name": "fs", "owner": "team@example.com"},
        "spec": spec,
    }
    return load_config_dict(data, expect=FeatureSetConfig)


def render_sql(sql: str, **kwargs: Any) -> str:
    """Render a one-model feature set and return that model's SQL."""
    return render_feature_set(feature_set([{"name": "m", "sql": sql}]), DS, **kwargs).models[0].sql


def problems(config: FeatureSetConfig, **kwargs: Any) -> list[TemplateIssue]:
    """Render, expecting failure; return the issues."""
    with pytest.raises(TemplateError) as caught:
        render_feature_set(config, DS, **kwargs)
    return caught.value.issues


def one_problem(sql: str, **kwargs: Any) -> TemplateIssue:
    """The single issue of a one-model feature set."""
    issues = problems(feature_set([{"name": "m", "sql": sql}]), **kwargs)
    assert len(issues) == 1, issues
    return issues[0]


# --- the happy path -----------------------------------------------------------------------------


def test_the_example_renders_in_ref_order_with_views_dates_and_vars() -> None:
    config = load_config(EXAMPLE, expect=FeatureSetConfig)
    rendered = render_feature_set(config, DS)

    assert [m.name for m in rendered.models] == ["applicant_base", "bureau_summary", "credit_features"]
    assert rendered.output == "credit_features"
    final = rendered.model("credit_features")
    assert final.refs == ("applicant_base", "bureau_summary")
    assert final.sources == ("transactions",)
    assert final.ref_lines == {"applicant_base": 14, "bureau_summary": 15}
    assert "from mdl_applicant_base a" in final.sql
    assert "left join mdl_bureau_summary b using" in final.sql
    assert "from src_transactions" in final.sql
    assert "date_sub('2024-03-01', 90) and '2024-03-01'" in final.sql
    assert "days_past_due > 30" in final.sql
    assert "{{" not in final.sql and "{%" not in final.sql
    assert rendered.sources == ("applicants", "bureau", "transactions")
    assert set(rendered.sql_hashes) == {"applicant_base", "bureau_summary", "credit_features"}


def test_view_names() -> None:
    assert source_view("bureau") == "src_bureau"
    assert model_view("bureau_summary") == "mdl_bureau_summary"


def test_models_declared_out_of_order_run_after_what_they_ref() -> None:
    config = feature_set(
        [
            {"name": "final", "sql": "select * from {{ ref('mid') }} join {{ ref('base') }} using (id)"},
            {"name": "mid", "sql": "select * from {{ ref('base') }}"},
            {"name": "base", "sql": "select * from {{ source('applicants') }}"},
            {"name": "other", "sql": "select 1 as id"},
        ],
        output="final",
    )
    rendered = render_feature_set(config, DS)
    assert [m.name for m in rendered.models] == ["base", "mid", "final", "other"]
    assert rendered.output == "final"


def test_output_defaults_to_the_last_declared_model() -> None:
    config = feature_set([{"name": "a", "sql": "select 1"}, {"name": "b", "sql": "select 2"}])
    assert render_feature_set(config, DS).output == "b"


def test_context_ds_ds_nodash_and_var_defaults() -> None:
    config = feature_set(
        [
            {
                "name": "m",
                "sql": "{{ ds }} {{ ds_nodash }} {{ var('n') }} {{ var('missing', 7) }} {{ var('s') }}",
            }
        ],
        variables={"n": 30, "s": "abc"},
    )
    assert render_feature_set(config, DS).models[0].sql == "2024-03-01 20240301 30 7 abc"


def test_rendering_is_deterministic_and_hashed() -> None:
    config = load_config(EXAMPLE, expect=FeatureSetConfig)
    first = render_feature_set(config, DS)
    second = render_feature_set(config, DS)
    assert first == second
    assert first.sql_hashes == second.sql_hashes
    for model in first.models:
        assert model.sql_hash == hashlib.sha256(model.sql.encode()).hexdigest()
    other_day = render_feature_set(config, date(2024, 3, 2))
    assert other_day.sql_hashes["credit_features"] != first.sql_hashes["credit_features"]


def test_refs_are_recorded_by_rendering_not_by_regex() -> None:
    config = feature_set(
        [
            {"name": "a", "sql": "select 1 as id"},
            {"name": "b", "sql": "select 2 as id"},
            {
                "name": "c",
                "sql": "-- ref('b') in a comment is just text\n"
                "{% for m in ['a'] %}select * from {{ ref(m) }}{% endfor %}\n"
                "{% if false %}{{ ref('b') }}{% endif %}",
            },
        ]
    )
    rendered = render_feature_set(config, DS)
    assert rendered.model("c").refs == ("a",)
    assert rendered.model("c").ref_lines == {"a": 2}


# --- macros -------------------------------------------------------------------------------------


def test_builtin_macros() -> None:
    sql = render_sql(
        "{{ safe_divide('sum(balance)', 'sum(credit_limit)') }}\n"
        "{{ days_ago(7) }}\n"
        "{{ in_last_days('ds', 90) }}\n"
        "{{ this_partition() }} {{ this_partition('event_date') }}\n"
        "{{ surrogate_key('a', 'b') }}"
    )
    assert sql.splitlines() == [
        "(sum(balance)) / nullif(sum(credit_limit), 0)",
        "date_sub('2024-03-01', 7)",
        "ds between date_sub('2024-03-01', 90) and '2024-03-01'",
        "ds = '2024-03-01' event_date = '2024-03-01'",
        "sha2(concat_ws('||', coalesce(cast(a as string), '∅'), coalesce(cast(b as string), '∅')), 256)",
    ]
    assert set(builtin_macros(DS)) == {
        "safe_divide",
        "days_ago",
        "in_last_days",
        "this_partition",
        "surrogate_key",
    }


def test_a_builtin_macro_called_wrongly_reports_the_line() -> None:
    issue = one_problem("select\n{{ days_ago('a week') }}")
    assert issue.line == 2
    assert "days_ago() needs a whole number of days" in issue.message


def test_user_macros_from_a_folder_are_available_to_every_model(tmp_path: Path) -> None:
    macros = tmp_path / "macros"
    macros.mkdir()
    (macros / "money.sql").write_text(
        "{% macro cents_to_units(column) %}({{ column }} / 100.0){% endmacro %}\n"
        "{% macro latest(model) %}select * from {{ ref(model) }} where ds = '{{ ds }}'{% endmacro %}\n"
    )
    (macros / "override.sql").write_text(
        "{% macro safe_divide(a, b) %}try_divide({{ a }}, {{ b }}){% endmacro %}"
    )
    (macros / "README.md").write_text("not a macro file {{ broken")
    config = feature_set(
        [
            {
                "name": "base",
                "sql": "select {{ cents_to_units('amount') }} as amount from {{ source('bureau') }}",
            },
            {"name": "final", "sql": "-- latest base\n{{ latest('base') }}\n{{ safe_divide('x', 'y') }}"},
        ]
    )
    rendered = render_feature_set(config, DS, macros_dir=macros)
    assert rendered.model("base").sql == "select (amount / 100.0) as amount from src_bureau"
    final = rendered.model("final")
    assert final.sql.splitlines()[1] == "select * from mdl_base where ds = '2024-03-01'"
    assert final.sql.splitlines()[2] == "try_divide(x, y)"
    assert final.refs == ("base",)
    assert final.ref_lines == {"base": 2}  # the line in the model that called the macro


def test_a_macro_files_failing_top_level_code_is_reported_once_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "m.sql").write_text("{% macro m() %}1{% endmacro %}\n{{ nope }}")
    config = feature_set([{"name": "a", "sql": "select 1"}, {"name": "b", "sql": "select 2"}])
    [issue] = problems(config, macros_dir=tmp_path)
    assert (issue.model, issue.file, issue.line, issue.code) == (None, "m.sql", 2, "undefined")


def test_a_macro_files_top_level_text_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "m.sql").write_text("{{ ref('a') }} {{ source('nope') }}\n{% macro m() %}1{% endmacro %}")
    config = feature_set([{"name": "a", "sql": "select {{ m() }}"}, {"name": "b", "sql": "select 2"}])
    rendered = render_feature_set(config, DS, macros_dir=tmp_path)
    assert [(m.name, m.refs, m.sources, m.sql) for m in rendered.models] == [
        ("a", (), (), "select 1"),
        ("b", (), (), "select 2"),
    ]


def test_a_macro_file_with_a_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text("{% macro ok() %}1{% endmacro %}\n\n{% macro broken( %}\n")
    issue = one_problem("select 1", macros_dir=tmp_path)
    assert (issue.model, issue.file, issue.line, issue.code) == (None, "bad.sql", 3, "syntax_error")


def test_a_macro_may_not_hide_ref(tmp_path: Path) -> None:
    (tmp_path / "sneaky.sql").write_text("{% macro ref(name) %}{{ name }}{% endmacro %}")
    config = feature_set([{"name": "a", "sql": "select 1"}, {"name": "b", "sql": "select 2"}])
    [issue] = problems(config, macros_dir=tmp_path)  # reported once, not once per model
    assert (issue.model, issue.file, issue.code) == (None, "sneaky.sql", "macro")
    assert "would hide the built-in 'ref'" in issue.message


def test_a_missing_macros_folder_is_an_issue(tmp_path: Path) -> None:
    issue = one_problem("select 1", macros_dir=tmp_path / "nope")
    assert issue.code == "macro"
    assert "does not exist" in issue.message


def test_templates_cannot_include_files_outside_the_macros_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password")
    macros = tmp_path / "macros"
    macros.mkdir()
    issue = one_problem("{% include '../secret.txt' %}", macros_dir=macros)
    assert "password" not in str(issue)
    issue = one_problem("{% include '/etc/passwd' %}")
    assert issue.code == "render_error"
    assert "root" not in issue.message


# --- sql_file -----------------------------------------------------------------------------------


def test_sql_file_models_read_from_sql_root(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "base.sql").write_text(
        "select *\nfrom {{ source('applicants') }}\nwhere ds = '{{ ds }}'\n"
    )
    config = feature_set([{"name": "base", "sql_file": "sql/base.sql"}])
    model = render_feature_set(config, DS, sql_root=tmp_path).models[0]
    assert model.sql == "select *\nfrom src_applicants\nwhere ds = '2024-03-01'"
    assert model.sources == ("applicants",)


def test_sql_file_problems_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text("select 1\nfrom {{ ref('nope') }}")
    (tmp_path.parent / "outside.sql").write_text("select 1")
    config = feature_set(
        [
            {"name": "missing", "sql_file": "missing.sql"},
            {"name": "escape", "sql_file": "../outside.sql"},
            {"name": "bad", "sql_file": "bad.sql"},
        ]
    )
    issues = problems(config, sql_root=tmp_path)
    assert [(i.model, i.code, i.file, i.line) for i in issues] == [
        ("missing", "sql_file", "missing.sql", None),
        ("escape", "sql_file", "../outside.sql", None),
        ("bad", "unknown_ref", "bad.sql", 2),
    ]
    assert "cannot read sql_file 'missing.sql'" in issues[0].message
    assert "outside the config folder" in issues[1].message


# --- errors, compiler style ---------------------------------------------------------------------


def test_unknown_ref_names_the_model_the_line_and_a_suggestion() -> None:
    config = feature_set(
        [
            {"name": "bureau_summary", "sql": "select 1 as applicant_id"},
            {
                "name": "final",
                "sql": "select *\nfrom x\njoin {{ ref('bureau_sumary') }} using (applicant_id)",
            },
        ]
    )
    [issue] = problems(config)
    assert (issue.model, issue.line, issue.code, issue.suggestion) == (
        "final",
        3,
        "unknown_ref",
        "bureau_summary",
    )
    assert str(issue) == (
        "model 'final', line 3: ref('bureau_sumary'): no model named 'bureau_sumary'"
        " — did you mean 'bureau_summary'?"
    )


def test_unknown_source_and_unknown_var_are_reported_with_suggestions() -> None:
    config = feature_set(
        [{"name": "m", "sql": "select *\nfrom {{ source('bureu') }}\nwhere x > {{ var('late_dys') }}"}],
        variables={"late_days": 30},
    )
    issues = problems(config)
    assert [(i.line, i.code, i.suggestion) for i in issues] == [
        (2, "unknown_source", "bureau"),
        (3, "unknown_var", "late_days"),
    ]
    assert "no var named 'late_dys' and no default given" in issues[1].message


def test_an_unknown_name_is_reported_once_per_model_at_its_first_use() -> None:
    issues = problems(feature_set([{"name": "m", "sql": "{{ ref('x') }}\n{{ ref('x') }}\n{{ ref('y') }}"}]))
    assert [(i.line, i.message.split(":")[0]) for i in issues] == [(1, "ref('x')"), (3, "ref('y')")]


def test_an_undefined_variable_reports_its_line() -> None:
    issue = one_problem("select 1\nwhere a = {{ nope }}")
    assert (issue.line, issue.code) == (2, "undefined")
    assert "'nope' is undefined" in issue.message


def test_a_syntax_error_reports_its_line() -> None:
    issue = one_problem("select 1\nfrom t\n{% if %}\n")
    assert (issue.line, issue.code) == (3, "syntax_error")
    assert issue.message.startswith("syntax error:")


def test_a_ref_with_a_non_string_argument_is_an_issue() -> None:
    issue = one_problem("select 1\n{{ ref(3) }}")
    assert issue.line == 2
    assert "ref() takes a name string, got int" in issue.message


def test_every_problem_in_every_model_is_reported_at_once() -> None:
    config = feature_set(
        [
            {"name": "a", "sql": "select *\nfrom {{ source('aplicants') }}"},
            {"name": "b", "sql": "{% for %}"},
            {"name": "c", "sql": "select {{ var('v') }}\nfrom {{ ref('aa') }}\njoin {{ ref('b') }}"},
        ]
    )
    # the config validator refuses an unknown output too; the renderer must not rely on it
    config = config.model_copy(update={"spec": config.spec.model_copy(update={"output": "d"})})
    with pytest.raises(TemplateError) as caught:
        render_feature_set(config, DS)
    error = caught.value
    assert [(i.model, i.line, i.code) for i in error.issues] == [
        (None, None, "unknown_output"),
        ("a", 2, "unknown_source"),
        ("b", 1, "syntax_error"),
        ("c", 1, "unknown_var"),
        ("c", 2, "unknown_ref"),
    ]
    text = str(error)
    assert text.startswith("5 problems in feature set templates:")
    assert "feature set: output 'd' is not one of the models" in text
    assert error.as_dicts()[1] == {
        "model": "a",
        "line": 2,
        "message": "source('aplicants'): no source named 'aplicants'",
        "suggestion": "applicants",
        "file": None,
        "code": "unknown_source",
    }


def test_a_cycle_names_the_models_and_the_line_of_each_ref() -> None:
    config = feature_set(
        [
            {"name": "a", "sql": "select *\nfrom {{ ref('b') }}"},
            {"name": "b", "sql": "select *\nfrom x\njoin {{ ref('a') }}"},
            {"name": "c", "sql": "select * from {{ ref('a') }}"},
        ]
    )
    issues = problems(config)
    assert [(i.model, i.line, i.code) for i in issues] == [("a", 2, "cycle"), ("b", 3, "cycle")]
    assert issues[0].message == "ref('b') closes a cycle: a → b → a"
    assert issues[1].message == "ref('a') closes a cycle: a → b → a"


def test_a_model_that_refs_itself_is_a_cycle() -> None:
    [issue] = problems(
        feature_set([{"name": "a", "sql": "select 1\nunion all select * from {{ ref('a') }}"}])
    )
    assert (issue.model, issue.line, issue.message) == ("a", 2, "ref('a') closes a cycle: a → a")


# --- the sandbox --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "access to attribute '__class__'"),
        ("{{ ref.__globals__ }}", "access to attribute '__globals__' of 'method' object is unsafe"),
        ("{{ ref.__self__.variables }}", "access to attribute '__self__' of 'method' object is unsafe"),
        ("{{ safe_divide.__closure__ }}", "access to attribute '__closure__' of 'function' object is unsafe"),
        ("{{ ref.__name__ }}", "access to attribute '__name__' of 'method' object is unsafe"),
        ("{{ range.__init__.__globals__ }}", "access to attribute '__init__' of 'function' object is unsafe"),
        ("{{ namespace.__init__ }}", "access to attribute '__init__' of 'type' object is unsafe"),
        ("{{ self.__dict__ }}", "access to attribute '__dict__' of 'TemplateReference' object is unsafe"),
        ("{{ '{0.__class__}'.format(1) }}", "access to attribute '__class__' of 'int' object is unsafe"),
        ("{% set l = [1] %}{{ l.append(2) }}", "access to attribute 'append' of 'list' object is unsafe"),
    ],
)
def test_sandbox_escapes_are_refused(sql: str, refusal: str) -> None:
    issue = one_problem(f"select 1\n{sql}")
    assert issue.code == "sandbox"
    assert issue.line == 2
    assert issue.message.startswith("refused by the template sandbox: ")
    assert refusal in issue.message


def test_the_cycler_joiner_and_lipsum_globals_are_not_available() -> None:
    issue = one_problem("{{ cycler.__init__.__globals__ }}")
    assert issue.code == "sandbox"
    assert "access to attribute '__init__' of 'StrictUndefined' object is unsafe" in issue.message
    for name in ("cycler", "joiner", "lipsum"):
        issue = one_problem(f"{{{{ {name}() }}}}")
        assert issue.code == "undefined"
        assert f"'{name}' is undefined" in issue.message


def test_a_user_macros_attributes_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m.sql").write_text("{% macro m() %}1{% endmacro %}")
    issue = one_problem("{{ m.arguments }}", macros_dir=tmp_path)
    assert issue.code == "sandbox"
    assert "access to attribute 'arguments' of 'Macro' object is unsafe" in issue.message


def test_a_missing_attribute_is_undefined_not_a_leak() -> None:
    issue = one_problem("{{ days_ago.anything }}")
    assert issue.code == "undefined"
    assert "has no attribute 'anything'" in issue.message


def test_a_user_macro_is_also_sandboxed(tmp_path: Path) -> None:
    (tmp_path / "evil.sql").write_text("{% macro evil() %}{{ ''.__class__.__base__ }}{% endmacro %}")
    issue = one_problem("select 1\n{{ evil() }}", macros_dir=tmp_path)
    assert (issue.code, issue.line) == ("sandbox", 2)


def test_a_runaway_template_is_refused() -> None:
    issue = one_problem("{% for i in range(99999) %}{{ 'x' * 100 }}{% endfor %}")
    assert issue.code == "render_error"
    assert "limit" in issue.message
    assert one_problem("{% for i in range(10**9) %}{% endfor %}").code == "render_error"
    for huge in ("{{ 'x' * 10**10 }}", "{{ [1] * 10**10 }}", "{{ 9 ** (10**9) }}"):
        issue = one_problem(huge)
        assert issue.code == "sandbox"
        assert "over the size limit" in issue.message
    assert render_sql("{{ 'ab' * 3 }} {{ 2 ** 10 }}") == "ababab 1024"


def test_plain_value_methods_still_work() -> None:
    assert (
        render_sql("{{ 'abc'.upper() }} {{ [3, 1, 2] | sort | join(',') }} {{ {'a': 1}.get('a') }}")
        == "ABC 1,2,3 1"
    )


def test_rendered_feature_set_model_lookup_fails_for_unknown_names() -> None:
    rendered: RenderedFeatureSet = render_feature_set(feature_set([{"name": "m", "sql": "select 1"}]), DS)
    with pytest.raises(KeyError):
        rendered.model("nope")
