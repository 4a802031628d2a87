"""deploy/datadog/ against the metric catalog, both ways: what is queried exists, what exists is queried and emitted."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pfactory.telemetry.catalog import CATALOG, Metric
from tests.deploy.catalog_usage import metric_constants, scan, scan_source
from tests.deploy.datadog_files import (
    DATADOG,
    MONITOR_TEAM_TAG,
    README,
    REPO,
    check_dashboard,
    check_monitor,
    dashboard_paths,
    load,
    monitor_paths,
    readme_anchors,
)
from tests.deploy.query_syntax import (
    BinaryOp,
    Call,
    MetricQuery,
    QuerySyntaxError,
    ScopeTerm,
    metric_queries,
    names,
    parse_classic,
    parse_formula,
    parse_metric_expression,
    parse_monitor_query,
)

ANCHORS = readme_anchors(README.read_text())


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def _dashboard(name: str) -> dict[str, Any]:
    return load(DATADOG / "dashboards" / f"{name}.json")


def _monitor(name: str) -> dict[str, Any]:
    return load(DATADOG / "monitors" / f"{name}.json")


# ------------------------------------------------------------------------------ the files


def test_the_expected_dashboards_and_monitors_exist() -> None:
    assert [path.stem for path in dashboard_paths()] == ["model", "platform"]
    assert {path.stem for path in monitor_paths()} >= {
        "job_failure_rate",
        "consumer_lag",
        "dead_letters",
        "drift",
        "missing_partition",
        "missing_scoring_run",
        "pagerduty_failures",
    }


@pytest.mark.parametrize("path", dashboard_paths(), ids=lambda path: path.name)
def test_each_dashboard_is_valid_and_queries_only_catalog_metrics_and_tags(path: Path) -> None:
    findings = check_dashboard(load(path), _name(path))
    assert findings.problems == []
    assert findings.queried  # a dashboard that queries nothing would pass the checks vacuously


@pytest.mark.parametrize("path", monitor_paths(), ids=lambda path: path.name)
def test_each_monitor_is_valid_queries_only_catalog_metrics_and_links_its_runbook(path: Path) -> None:
    findings = check_monitor(load(path), _name(path), ANCHORS)
    assert findings.problems == []
    assert findings.queried


def test_the_model_dashboard_has_the_model_selectors() -> None:
    variables = {v["name"]: v["prefix"] for v in _dashboard("model")["template_variables"]}
    assert variables == {
        "env": "env",
        "model": "model",
        "feature_set": "feature_set",
        "model_version": "model_version",
    }


def test_every_runbook_section_is_linked_by_a_monitor_and_every_monitor_is_listed_on_the_platform() -> None:
    readme = README.read_text()
    runbook = readme[readme.index("## Runbook") :]
    sections = {anchor for anchor in readme_anchors(runbook) if anchor != "runbook"}
    messages = " ".join(load(path)["message"] for path in monitor_paths())
    assert {anchor for anchor in sections if f"README.md#{anchor}" not in messages} == set()
    for path in monitor_paths():
        assert f"monitors/{path.name}" in runbook, f"the runbook does not describe {path.name}"
    status = [
        widget["definition"]
        for widget in _dashboard("platform")["widgets"]
        if widget["definition"]["type"] == "manage_status"
    ]
    assert [widget["query"] for widget in status] == [f"tag:({MONITOR_TEAM_TAG})"]


# ------------------------------------------------------------------------------ both ways


def test_every_catalog_metric_is_queried_by_a_dashboard_or_a_monitor() -> None:
    queried: set[str] = set()
    for path in dashboard_paths():
        queried |= check_dashboard(load(path), _name(path)).queried
    for path in monitor_paths():
        queried |= check_monitor(load(path), _name(path), ANCHORS).queried
    assert sorted(set(CATALOG) - queried) == []


def test_every_catalog_metric_is_emitted_by_the_platform_and_spelt_only_in_the_catalog() -> None:
    constants = metric_constants()
    assert {metric.name for metric in constants.values()} == set(CATALOG), "a catalog entry has no constant"
    references, strings = scan_source(REPO)
    referenced = {reference.constant for reference in references}
    not_emitted = sorted(f"{name} ({constants[name].name})" for name in set(constants) - referenced)
    assert not_emitted == [], (
        f"catalog metrics nothing in libs/, workers/, gateway/ or cli/ emits: {not_emitted}"
    )
    spelt = [f"{s.path}:{s.line}: {s.metric!r}" for s in strings]
    assert spelt == [], f"metric names written outside the catalog (use the catalog constant): {spelt}"


# ------------------------------------------------------------------------------ the parser


def test_a_full_metric_query_parses_into_its_parts() -> None:
    node = parse_metric_expression(
        "sum:pf.bus.handled{$env,outcome:retried,!group:pf-test} by {group,topic}.as_count().rollup(sum, 3600)"
    )
    assert node == MetricQuery(
        "sum",
        "pf.bus.handled",
        (
            ScopeTerm("env", variable=True),
            ScopeTerm("outcome", "retried"),
            ScopeTerm("group", "pf-test", negated=True),
        ),
        ("group", "topic"),
        ("as_count", "rollup"),
        "sum:pf.bus.handled{$env,outcome:retried,!group:pf-test} by {group,topic}.as_count().rollup(sum, 3600)",
    )


def test_functions_and_arithmetic_between_queries_parse() -> None:
    node = parse_metric_expression(
        "top(per_second(sum:pf.jobs.failed{*} by {kind}.as_count()), 10, 'max', 'desc') "
        "/ (timeshift(sum:pf.jobs.succeeded{env:prod} by {kind}.as_count(), -86400) + 1)"
    )
    assert [query.metric for query in metric_queries(node)] == ["pf.jobs.failed", "pf.jobs.succeeded"]
    assert [query.group_by for query in metric_queries(node)] == [("kind",), ("kind",)]
    assert isinstance(node, BinaryOp) and node.operator == "/"  # the division is the root
    assert isinstance(node.left, Call) and node.left.function == "top"
    assert node.left.arguments == (10.0, "max", "desc")
    shifted = parse_metric_expression("timeshift(avg:pf.bus.consumer_lag{*}, -604800)")
    assert isinstance(shifted, Call) and shifted.arguments == (-604800.0,)
    classic = parse_classic(
        "sum:pf.jobs.submitted{*}.as_count(), week_before(sum:pf.jobs.submitted{*}.as_count())"
    )
    assert len(classic) == 2


def test_formulas_refer_to_query_names() -> None:
    assert names(parse_formula("100 * failed / (succeeded + failed)")) == ["failed", "succeeded", "failed"]
    assert names(parse_formula("top(psi, 10, 'last', 'desc')")) == ["psi"]
    with pytest.raises(QuerySyntaxError, match="refers to queries by name"):
        parse_formula("sum:pf.jobs.failed{*}.as_count()")


def test_a_monitor_query_parses_with_its_window_comparison_and_threshold() -> None:
    query = parse_monitor_query(
        "sum(last_1h):sum:pf.jobs.failed{env:prod} by {kind}.as_count() / "
        "(default_zero(sum:pf.jobs.succeeded{env:prod} by {kind}.as_count()) + "
        "sum:pf.jobs.failed{env:prod} by {kind}.as_count()) >= 0.25"
    )
    assert (query.time_aggregator, query.window_minutes, query.comparator, query.threshold) == (
        "sum",
        60,
        ">=",
        0.25,
    )
    assert len(query.metric_queries) == 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sum:pf.jobs.failed.as_count()", r"expected '\{' right after pf\.jobs\.failed"),
        ("sum:pf.jobs.failed{kind:train", r"',' or '\}' in the scope"),
        ("sum:pf.jobs.failed{kind}.as_count()", r"':' and a value after the tag 'kind'"),
        ("sum:pf.jobs.failed{kind:a OR kind:b}", r"',' or '\}'"),
        ("sum:pf.jobs.failed{*} by {kind,kind}.as_count()", "appears twice"),
        ("median:pf.jobs.duration{*}", "unknown space aggregator 'median'"),
        ("sum:pf.jobs.failed{*}.as_count().as_rate()", "contradict"),
        ("sum:pf.jobs.failed{*}.as_cnt()", r"unknown method \.as_cnt\(\)"),
        ("sum:pf.jobs.failed{*}.rollup(mean, 60)", "rollup method must be one of"),
        ("persecond(sum:pf.jobs.failed{*}.as_count())", "unknown function 'persecond'"),
        ("top(sum:pf.jobs.failed{*}.as_count(), 7, 'max', 'desc')", "limit must be one of"),
        ("top(sum:pf.jobs.failed{*}.as_count(), 10, 'biggest', 'desc')", "takes one of"),
        ("timeshift(sum:pf.jobs.failed{*}.as_count())", "',' and the integer argument of timeshift"),
        ("(sum:pf.jobs.failed{*}.as_count()", "closing the group"),
        ("sum:pf.jobs.failed{*}.as_count() sum:pf.jobs.failed{*}.as_count()", "after a complete query"),
        ("failed / succeeded", "bare word 'failed'"),
        ("sum:pf.jobs.failed{!$env}", "cannot be negated"),
    ],
)
def test_malformed_queries_are_refused_with_where_and_why(text: str, problem: str) -> None:
    with pytest.raises(QuerySyntaxError, match=problem):
        parse_metric_expression(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sum:pf.jobs.failed{*}.as_count() > 0", r"time_aggr\(last_"),
        ("sum(last_1h):sum:pf.jobs.failed{*}.as_count()", "comparison"),
        ("median(last_1h):sum:pf.jobs.failed{*}.as_count() > 0", "time aggregator"),
        ("sum(last_200h):sum:pf.jobs.failed{*}.as_count() > 0", "outside 1..168"),
        ("sum(last_1h):sum:pf.jobs.failed{*}.as_count() + > 0", "expected a query"),
    ],
)
def test_malformed_monitor_queries_are_refused(text: str, problem: str) -> None:
    with pytest.raises(QuerySyntaxError, match=problem):
        parse_monitor_query(text)


# ------------------------------------------------------------------------------ the checker catches mistakes


def _platform_with(old: str, new: str) -> dict[str, Any]:
    text = json.dumps(_dashboard("platform"))
    assert old in text, f"the platform dashboard no longer contains {old!r}; pick another example"
    return json.loads(text.replace(old, new, 1))  # type: ignore[no-any-return]


def _platform_problems(old: str, new: str) -> list[str]:
    return check_dashboard(_platform_with(old, new), "platform.json").problems


def test_a_misspelt_metric_is_caught_with_a_suggestion() -> None:
    problems = _platform_problems(
        "sum:pf.jobs.submitted{$env} by {kind}", "sum:pf.jobs.submited{$env} by {kind}"
    )
    assert len(problems) == 1
    assert "unknown metric 'pf.jobs.submited'" in problems[0]
    assert "did you mean 'pf.jobs.submitted'?" in problems[0]
    assert "Jobs submitted, succeeded and failed, by kind" in problems[0]  # where it is


def test_a_misspelt_metric_in_a_monitor_is_caught() -> None:
    monitor = _monitor("dead_letters")
    monitor["query"] = monitor["query"].replace("pf.bus.dead_lettered", "pf.bus.deadlettered")
    monitor["options"]["thresholds"] = {"critical": 0}
    problems = check_monitor(monitor, "dead_letters.json", ANCHORS).problems
    assert len(problems) == 1 and "unknown metric 'pf.bus.deadlettered'" in problems[0]


def test_an_undeclared_tag_in_a_scope_or_a_grouping_is_caught() -> None:
    scoped = _platform_problems(
        "sum:pf.jobs.failed{$env} by {kind}", "sum:pf.jobs.failed{$env,model:m} by {kind}"
    )
    assert len(scoped) == 1 and "filters on the undeclared tag 'model'" in scoped[0]
    assert "pf.jobs.failed is tagged ['kind']" in scoped[0]
    grouped = _platform_problems(
        "sum:pf.features.rows_materialised{$env} by {feature_set}",
        "sum:pf.features.rows_materialised{$env} by {feature_set,host}",
    )
    assert len(grouped) == 1 and "groups by the undeclared tag 'host'" in grouped[0]
    monitor = _monitor("consumer_lag")
    monitor["query"] = monitor["query"].replace("by {group,topic}", "by {group,customer_id}")
    problems = check_monitor(monitor, "consumer_lag.json", ANCHORS).problems
    assert any("groups by the undeclared tag 'customer_id'" in problem for problem in problems)
    assert any("{{topic.name}}: the monitor does not group by 'topic'" in problem for problem in problems)


def test_a_template_variable_must_filter_a_tag_its_metrics_declare() -> None:
    model = _dashboard("model")
    bad = copy.deepcopy(model)
    for variable in bad["template_variables"]:
        if variable["name"] == "model_version":
            variable["prefix"] = "version_of_model"
    problems = check_dashboard(bad, "model.json").problems
    assert any("a tag no catalog metric declares" in problem for problem in problems)
    applied = json.loads(
        json.dumps(model).replace(
            "sum:pf.registry.registered{$env,$model,$feature_set}",
            "sum:pf.registry.registered{$env,$model,$feature_set,$model_version}",
        )
    )
    problems = check_dashboard(applied, "model.json").problems
    assert len(problems) == 1
    assert (
        "$model_version filters on 'model_version'" in problems[0] and "pf.registry.registered" in problems[0]
    )


def test_a_query_that_ignores_a_selector_or_an_unknown_variable_is_caught() -> None:
    ignored = _platform_problems("sum:pf.jobs.failed{$env} by {kind}", "sum:pf.jobs.failed{*} by {kind}")
    assert len(ignored) == 1 and "ignores the dashboard's $env selector" in ignored[0]
    unknown = _platform_problems(
        "sum:pf.jobs.failed{$env} by {kind}", "sum:pf.jobs.failed{$env,$kind} by {kind}"
    )
    assert len(unknown) == 1 and "$kind is not a template variable" in unknown[0]


def test_aggregators_and_methods_must_fit_the_metric_type() -> None:
    percentile = _platform_problems(
        "sum:pf.bus.consumer_lag{$env} by {group,topic}", "p95:pf.bus.consumer_lag{$env} by {group,topic}"
    )
    assert (
        len(percentile) == 1 and "p95 needs a distribution; pf.bus.consumer_lag is a gauge" in percentile[0]
    )
    counted = _platform_problems(
        "sum:pf.bus.consumer_lag{$env} by {group,topic}",
        "sum:pf.bus.consumer_lag{$env} by {group,topic}.as_count()",
    )
    assert len(counted) == 1 and ".as_count() applies to counts" in counted[0]
    bare = _platform_problems(
        "sum:pf.jobs.failed{$env} by {kind}.as_count()", "sum:pf.jobs.failed{$env} by {kind}"
    )
    assert len(bare) == 1 and "is a count: say .as_count() or .as_rate()" in bare[0]


def test_formulas_must_name_existing_queries_and_use_each_one() -> None:
    typo = _platform_problems(
        '"formula": "100 * failed / (succeeded + failed)"', '"formula": "100 * failed / (sucseeded + failed)"'
    )
    assert any("refers to 'sucseeded'" in problem for problem in typo)
    assert any("the query 'succeeded' is in no formula" in problem for problem in typo)


def test_a_widget_request_must_have_its_api_shape() -> None:
    dashboard = _dashboard("platform")
    del dashboard["layout_type"]
    dashboard["widgets"][0]["definition"]["type"] = "sparkline"
    problems = check_dashboard(dashboard, "platform.json").problems
    assert any("missing the required field 'layout_type'" in problem for problem in problems)
    assert any("unsupported widget type 'sparkline'" in problem for problem in problems)
    scalar = _platform_problems('"aggregator": "sum"', '"aggregator": "median"')
    assert len(scalar) == 1 and "a scalar query needs an aggregator" in scalar[0]


def test_monitor_thresholds_options_and_messages_are_checked() -> None:
    monitor = _monitor("job_failure_rate")
    monitor["options"]["thresholds"] = {"critical": 0.5, "warning": 0.6}
    monitor["options"]["notify_no_data"] = True
    monitor["options"]["no_data_timeframe"] = 30
    monitor["message"] = monitor["message"].replace("#job-failure-rate", "#job-failures")
    monitor["message"] = monitor["message"].replace("@pagerduty-pfactory-platform", "@nobody")
    problems = " | ".join(check_monitor(monitor, "job_failure_rate.json", ANCHORS).problems)
    assert "options.thresholds.critical (0.5) must equal the query's 0.25" in problems
    assert "warning threshold 0.6 is not milder" in problems
    assert "no_data_timeframe must be whole minutes ≥ the 60-minute window" in problems
    assert "{{#is_no_data}}" in problems
    assert "#job-failures matches no heading" in problems
    assert "add an @pagerduty-<service> handle" in problems
    unclosed = _monitor("drift")
    unclosed["message"] = unclosed["message"].replace("{{/is_alert}}", "", 1)
    assert any(
        "closes a block that is not open" in p or "left open" in p
        for p in check_monitor(unclosed, "drift.json", ANCHORS).problems
    )
    simple = _monitor("job_failure_rate")
    simple["type"] = "metric alert"
    assert any(
        "'metric alert' is one metric query" in p for p in check_monitor(simple, "x.json", ANCHORS).problems
    )
    averaged = _monitor("dead_letters")
    averaged["query"] = averaged["query"].replace("sum(last_10m)", "avg(last_10m)")
    assert any("use sum(last_" in p for p in check_monitor(averaged, "x.json", ANCHORS).problems)


# ------------------------------------------------------------------------------ the emission scan


def _scan(source: str) -> tuple[set[str], list[str]]:
    references, strings = scan(ast.parse(source), Path("example.py"), set(metric_constants()))
    return {reference.constant for reference in references}, [string.metric for string in strings]


def test_the_scan_counts_catalog_attributes_and_imported_names_passed_to_emit() -> None:
    found, _ = _scan(
        "from pfactory.telemetry import catalog as cat\n"
        "from pfactory.telemetry.catalog import SCORING_ROWS, DRIFT_PSI as PSI, SCORING_RUNS\n"
        "import pfactory.telemetry.catalog\n"
        "cat.JOBS_SUBMITTED\n"
        "pfactory.telemetry.catalog.ALERTS\n"
        "metrics.emit(SCORING_ROWS, 3, model='m')\n"
        "with metrics.timer(metric=PSI): pass\n"
        "print(SCORING_RUNS)\n"  # imported but never emitted
        "catalog.JOB_DURATION\n"  # 'catalog' is not bound to the module here
    )
    assert found == {"JOBS_SUBMITTED", "ALERTS", "SCORING_ROWS", "DRIFT_PSI"}


def test_the_scan_finds_metric_names_spelt_as_strings() -> None:
    _, spelt = _scan(
        'TOPIC = "pf.features.materialised"\n'  # a topic sharing the prefix is not a metric
        'NAME = "pf.jobs.submitted"\n'
        'line = f"pf.scoring.rows:{n}|c"\n'
        '"""Docs naming pf.bus.consumer_lag."""\n'
        'OTHER = "pf.jobs.submitted_total"\n'
    )
    assert spelt == ["pf.jobs.submitted", "pf.scoring.rows", "pf.bus.consumer_lag"]


def test_every_catalog_metric_has_one_constant() -> None:
    constants = metric_constants()
    assert all(isinstance(metric, Metric) for metric in constants.values())
    assert len(constants) == len(CATALOG)


def test_a_tag_value_the_metric_never_carries_is_caught() -> None:
    """``status:success`` on a metric whose status is succeeded or failed would silently match nothing."""
    monitor = _monitor("missing_scoring_run")
    assert "status:succeeded" in monitor["query"]
    monitor["query"] = monitor["query"].replace("status:succeeded", "status:success")
    problems = check_monitor(monitor, "missing_scoring_run.json", ANCHORS).problems
    assert any("filters on status:success, which pf.scoring.runs never carries" in p for p in problems), (
        problems
    )
