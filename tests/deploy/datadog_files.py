"""Checks of deploy/datadog/: dashboards and monitors against the Datadog API shapes and the metric catalog.

Each ``check_*`` returns a list of problems (empty when the document is good) and records the metrics
it queried, so one run reports every mistake in a file, each with where it is and what to do.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfactory.telemetry.catalog import CATALOG, UNIFIED_TAGS, Kind
from tests.deploy.query_syntax import (
    DISTRIBUTION_AGGREGATORS,
    MetricQuery,
    QuerySyntaxError,
    metric_queries,
    names,
    parse_classic,
    parse_formula,
    parse_metric_expression,
    parse_monitor_query,
)

REPO = Path(__file__).resolve().parents[2]
DATADOG = REPO / "deploy" / "datadog"
README = DATADOG / "README.md"

DASHBOARD_FIELDS = ("title", "description", "layout_type", "widgets")
DASHBOARD_OPTIONAL = frozenset({"template_variables", "notify_list", "reflow_type", "tags"})
MONITOR_FIELDS = ("name", "type", "query", "message", "tags", "options", "priority")
MONITOR_TYPES = frozenset({"metric alert", "query alert"})
OPTION_FIELDS = ("thresholds", "notify_no_data", "no_data_timeframe", "renotify_interval", "evaluation_delay")
OPTION_OPTIONAL = frozenset({"require_full_window", "include_tags", "new_group_delay", "notify_audit"})
THRESHOLD_KEYS = frozenset({"critical", "warning", "critical_recovery", "warning_recovery"})
MONITOR_TEAM_TAG = "team:pfactory"
"""Every monitor carries it; the platform dashboard's monitor list selects by it."""

RESPONSE_FORMAT = {"timeseries": "timeseries", "query_value": "scalar", "toplist": "scalar"}
WIDGETS_WITHOUT_REQUESTS = frozenset({"group", "note", "manage_status"})
SCALAR_AGGREGATORS = frozenset({"avg", "sum", "min", "max", "last"})
DISPLAY_TYPES = frozenset({"line", "bars", "area"})

MESSAGE_CONDITIONS = frozenset(
    {
        "is_alert",
        "is_warning",
        "is_recovery",
        "is_alert_recovery",
        "is_warning_recovery",
        "is_no_data",
        "is_no_data_recovery",
        "is_renotify",
    }
)
MESSAGE_VARIABLES = frozenset({"value", "threshold", "warn_threshold", "comparator", "last_triggered_at"})
_MESSAGE_TOKEN = re.compile(r"\{\{\s*([#/^]?)([A-Za-z0-9_.]+)\s*\}\}")
_PAGERDUTY = re.compile(r"@pagerduty-[A-Za-z0-9_-]+")
_RUNBOOK = re.compile(r"https://\S+/deploy/datadog/README\.md#([a-z0-9-]+)")
_QUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Findings:
    """Problems found in one document and the metrics it queries."""

    problems: list[str] = field(default_factory=list)
    queried: set[str] = field(default_factory=set)

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


def load(path: Path) -> dict[str, Any]:
    """One JSON document (an object), or an error naming the file and the line."""
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AssertionError(f"{path.relative_to(REPO)}: not JSON ({error})") from error
    if not isinstance(document, dict):
        raise AssertionError(
            f"{path.relative_to(REPO)}: expected a JSON object, found {type(document).__name__}"
        )
    return document


def dashboard_paths() -> list[Path]:
    return sorted((DATADOG / "dashboards").glob("*.json"))


def monitor_paths() -> list[Path]:
    return sorted((DATADOG / "monitors").glob("*.json"))


# --------------------------------------------------------------------------- one metric query


def check_metric_query(
    query: MetricQuery, where: str, findings: Findings, variables: Mapping[str, str] | None
) -> None:
    """The metric exists, every tag it filters or groups by is declared, the aggregator and methods fit.

    Args:
        query: the parsed query.
        where: where it is, for the message.
        findings: where problems and the queried metric go.
        variables: the dashboard's template variables (name to tag prefix); None in a monitor, which
            has none. A dashboard query must also apply every variable whose tag its metric carries.
    """
    metric = CATALOG.get(query.metric)
    where = f"{where}: {query.text!r}"
    if metric is None:
        close = difflib.get_close_matches(query.metric, CATALOG, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        findings.add(
            where,
            f"unknown metric {query.metric!r}: not in pfactory.telemetry.catalog{hint} "
            "(query a catalog metric, or declare it in the catalog and emit it)",
        )
        return
    findings.queried.add(metric.name)
    allowed = set(metric.tags) | set(UNIFIED_TAGS)
    declared = f"{metric.name} is tagged {sorted(metric.tags)} plus the unified {list(UNIFIED_TAGS)}"
    pinned: list[str] = []
    applied: set[str] = set()
    for term in query.scope:
        if term.variable:
            if variables is None:
                findings.add(where, f"${term.key}: a monitor has no template variables; filter on a value")
                continue
            if term.key not in variables:
                findings.add(where, f"${term.key} is not a template variable of this dashboard")
                continue
            applied.add(term.key)
            tag = variables[term.key]
            if tag not in allowed:
                findings.add(where, f"${term.key} filters on {tag!r}, which {declared} does not include")
            pinned.append(tag)
        elif term.key not in allowed:
            findings.add(where, f"filters on the undeclared tag {term.key!r}; {declared}")
        else:
            known = metric.values.get(term.key)
            if known is not None and term.value is not None and term.value not in known:
                findings.add(
                    where,
                    f"filters on {term.key}:{term.value}, which {metric.name} never carries "
                    f"(its {term.key} is one of {list(known)})",
                )
            if not term.negated:
                pinned.append(term.key)
    for tag in sorted({tag for tag in pinned if pinned.count(tag) > 1}):
        findings.add(where, f"the tag {tag!r} is filtered twice (a variable and a value, or two values)")
    for tag in query.group_by:
        if tag not in allowed:
            findings.add(where, f"groups by the undeclared tag {tag!r}; {declared}")
    if variables is not None:
        for name, tag in sorted(variables.items()):
            if tag in allowed and tag not in pinned and name not in applied:
                findings.add(where, f"ignores the dashboard's ${name} selector; add ${name} to the scope")
    if query.aggregator in DISTRIBUTION_AGGREGATORS and metric.kind is not Kind.DISTRIBUTION:
        findings.add(
            where, f"{query.aggregator} needs a distribution; {metric.name} is a {metric.kind.name.lower()}"
        )
    rate_method = {"as_count", "as_rate"} & set(query.methods)
    if metric.kind is Kind.COUNT and not rate_method:
        findings.add(where, f"{metric.name} is a count: say .as_count() or .as_rate()")
    if rate_method and metric.kind is not Kind.COUNT:
        findings.add(
            where, f".{rate_method.pop()}() applies to counts; {metric.name} is a {metric.kind.name.lower()}"
        )


# --------------------------------------------------------------------------- dashboards


def _widgets(widgets: Iterable[Any], trail: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for index, widget in enumerate(widgets):
        definition = widget.get("definition") if isinstance(widget, dict) else None
        if not isinstance(definition, dict):
            yield f"{trail} > widget {index}", {}
            continue
        where = f"{trail} > {definition.get('title') or definition.get('type') or index}"
        yield where, definition
        if definition.get("type") == "group":
            yield from _widgets(definition.get("widgets", []), where)


def check_dashboard(document: Mapping[str, Any], where: str) -> Findings:
    """A POST /api/v1/dashboard body whose every query is a catalog metric with declared tags."""
    findings = Findings()
    for key in DASHBOARD_FIELDS:
        if key not in document:
            findings.add(where, f"missing the required field {key!r}")
    for key in sorted(set(document) - set(DASHBOARD_FIELDS) - DASHBOARD_OPTIONAL):
        findings.add(where, f"unknown top-level field {key!r}")
    if document.get("layout_type") not in ("ordered", "free"):
        findings.add(where, f"layout_type must be 'ordered' or 'free', not {document.get('layout_type')!r}")
    variables = _template_variables(document.get("template_variables", []), where, findings)
    used: set[str] = set()
    widgets = document.get("widgets")
    if not isinstance(widgets, list) or not widgets:
        findings.add(where, "widgets must be a non-empty list")
        return findings
    for trail, definition in _widgets(widgets, where):
        kind = definition.get("type")
        if not definition:
            findings.add(trail, "a widget needs a 'definition' object")
        elif kind in WIDGETS_WITHOUT_REQUESTS:
            if kind == "group" and not definition.get("widgets"):
                findings.add(trail, "an empty group")
            if kind == "note" and not definition.get("content"):
                findings.add(trail, "a note without content")
        elif kind in RESPONSE_FORMAT:
            if not definition.get("title"):
                findings.add(trail, "a widget that shows data needs a title")
            requests = definition.get("requests")
            if not isinstance(requests, list) or not requests:
                findings.add(trail, "requests must be a non-empty list")
                continue
            for request in requests:
                used |= _check_request(request, str(kind), trail, findings, variables)
        else:
            findings.add(trail, f"unsupported widget type {kind!r}")
    for name in sorted(set(variables) - used):
        findings.add(where, f"the template variable ${name} is defined but no query applies it")
    return findings


def _template_variables(raw: Any, where: str, findings: Findings) -> dict[str, str]:
    variables: dict[str, str] = {}
    if not isinstance(raw, list):
        findings.add(where, "template_variables must be a list")
        return variables
    for variable in raw:
        name, prefix = variable.get("name"), variable.get("prefix")
        if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name) or not isinstance(prefix, str):
            findings.add(where, f"a template variable needs a name and a tag prefix: {variable!r}")
            continue
        if "default" not in variable:
            findings.add(where, f"${name} needs a default ('*' for all)")
        if name in variables:
            findings.add(where, f"${name} is defined twice")
        tagged = prefix in UNIFIED_TAGS or any(prefix in metric.tags for metric in CATALOG.values())
        if not tagged:
            findings.add(where, f"${name} filters on {prefix!r}, a tag no catalog metric declares")
        variables[name] = prefix
    return variables


def _check_request(
    request: Any, kind: str, where: str, findings: Findings, variables: Mapping[str, str]
) -> set[str]:
    """One request; returns the template variables its queries applied."""
    found: list[MetricQuery] = []
    if not isinstance(request, dict):
        findings.add(where, "a request must be an object")
        return set()
    if request.get("display_type", "line") not in DISPLAY_TYPES:
        findings.add(where, f"display_type must be one of {sorted(DISPLAY_TYPES)}")
    if "q" in request:
        if "queries" in request or "formulas" in request:
            findings.add(where, "a request has either the classic 'q' or queries+formulas, not both")
        try:
            for expression in parse_classic(str(request["q"])):
                found += metric_queries(expression)
        except QuerySyntaxError as error:
            findings.add(where, f"q does not parse: {error}")
    else:
        found = _check_formula_request(request, kind, where, findings)
    for query in found:
        check_metric_query(query, where, findings, variables)
    return {term.key for query in found for term in query.scope if term.variable}


def _check_formula_request(
    request: dict[str, Any], kind: str, where: str, findings: Findings
) -> list[MetricQuery]:
    found: list[MetricQuery] = []
    if request.get("response_format") != RESPONSE_FORMAT[kind]:
        findings.add(where, f"a {kind} request needs response_format {RESPONSE_FORMAT[kind]!r}")
    queries, formulas = request.get("queries"), request.get("formulas")
    if not isinstance(queries, list) or not queries or not isinstance(formulas, list) or not formulas:
        findings.add(where, "a request needs non-empty 'queries' and 'formulas' (or a classic 'q')")
        return found
    named: set[str] = set()
    for query in queries:
        name = query.get("name")
        label = f"{where} > query {name!r}"
        if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name) or name in named:
            findings.add(label, "each query needs a unique name (letters, digits, _)")
        named.add(str(name))
        if query.get("data_source") != "metrics":
            findings.add(label, f"data_source must be 'metrics', not {query.get('data_source')!r}")
        scalar = RESPONSE_FORMAT[kind] == "scalar"
        if scalar and query.get("aggregator") not in SCALAR_AGGREGATORS:
            findings.add(label, f"a scalar query needs an aggregator in {sorted(SCALAR_AGGREGATORS)}")
        if not scalar and "aggregator" in query:
            findings.add(label, "a timeseries query takes no aggregator")
        try:
            parsed = parse_metric_expression(str(query.get("query", "")))
        except QuerySyntaxError as error:
            findings.add(label, f"query does not parse: {error}")
            continue
        if not isinstance(parsed, MetricQuery):
            findings.add(
                label, "a named query is one metric query; put functions and arithmetic in a formula"
            )
        found += metric_queries(parsed)
    referenced: set[str] = set()
    for formula in formulas:
        try:
            referenced |= set(names(parse_formula(str(formula.get("formula", "")))))
        except QuerySyntaxError as error:
            findings.add(where, f"formula does not parse: {error}")
        limit = formula.get("limit")
        if limit is not None and (
            not isinstance(limit.get("count"), int) or limit.get("order") not in ("asc", "desc")
        ):
            findings.add(where, f"a formula limit is {{count: int, order: asc|desc}}, not {limit!r}")
    for name in sorted(referenced - named):
        findings.add(where, f"a formula refers to {name!r}, which is not one of the queries {sorted(named)}")
    for name in sorted(named - referenced):
        findings.add(where, f"the query {name!r} is in no formula (it would not be shown)")
    return found


# --------------------------------------------------------------------------- monitors


def readme_anchors(text: str) -> set[str]:
    """GitHub's anchors for the README's headings."""
    anchors = set()
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return anchors


def check_monitor(document: Mapping[str, Any], where: str, anchors: set[str]) -> Findings:
    """A POST /api/v1/monitor body: its query, thresholds, options and an actionable message."""
    findings = Findings()
    for key in MONITOR_FIELDS:
        if key not in document:
            findings.add(where, f"missing the required field {key!r}")
    for key in sorted(set(document) - set(MONITOR_FIELDS)):
        findings.add(where, f"unknown top-level field {key!r}")
    if findings.problems:
        return findings
    if document["type"] not in MONITOR_TYPES:
        findings.add(where, f"type must be one of {sorted(MONITOR_TYPES)}, not {document['type']!r}")
    try:
        query = parse_monitor_query(str(document["query"]))
    except QuerySyntaxError as error:
        findings.add(where, f"query does not parse: {error}")
        return findings
    if document["type"] == "metric alert" and not isinstance(query.expression, MetricQuery):
        findings.add(
            where, "a 'metric alert' is one metric query; arithmetic or functions need 'query alert'"
        )
    groupings = {tuple(sorted(q.group_by)) for q in query.metric_queries}
    if len(groupings) > 1:
        findings.add(
            where, f"the queries group differently ({sorted(groupings)}); arithmetic needs one grouping"
        )
    for metric_query in query.metric_queries:
        check_metric_query(metric_query, where, findings, None)
        if "as_count" in metric_query.methods and query.time_aggregator != "sum":
            findings.add(
                where, f"{metric_query.text!r}: an .as_count() monitor sums its window: use sum(last_…)"
            )
    options = document["options"]
    _check_options(options, query.comparator, query.threshold, query.window_minutes, where, findings)
    group_tags = {tag for q in query.metric_queries for tag in q.group_by}
    _check_message(str(document["message"]), options, group_tags, anchors, where, findings)
    tags = document["tags"]
    if not isinstance(tags, list) or not all(isinstance(tag, str) and ":" in tag for tag in tags):
        findings.add(where, "tags must be a list of 'key:value' strings")
    elif MONITOR_TEAM_TAG not in tags:
        findings.add(where, f"tag the monitor {MONITOR_TEAM_TAG!r} so the platform dashboard lists it")
    if not isinstance(document["priority"], int) or not 1 <= document["priority"] <= 5:
        findings.add(where, f"priority must be an integer 1 (highest) to 5, not {document['priority']!r}")
    return findings


def _check_options(
    options: Any, comparator: str, threshold: float, window: int, where: str, findings: Findings
) -> None:
    if not isinstance(options, dict):
        findings.add(where, "options must be an object")
        return
    for key in OPTION_FIELDS:
        if key not in options:
            findings.add(where, f"options lacks {key!r}")
    for key in sorted(set(options) - set(OPTION_FIELDS) - OPTION_OPTIONAL):
        findings.add(where, f"unknown option {key!r}")
    thresholds = options.get("thresholds", {})
    for key in sorted(set(thresholds) - THRESHOLD_KEYS):
        findings.add(where, f"unknown threshold {key!r}")
    if thresholds.get("critical") != threshold:
        findings.add(
            where,
            f"options.thresholds.critical ({thresholds.get('critical')!r}) must equal the query's {threshold:g}",
        )
    warning = thresholds.get("warning")
    if warning is not None:
        milder = warning < threshold if comparator.startswith(">") else warning > threshold
        if not milder:
            findings.add(where, f"the warning threshold {warning} is not milder than critical {threshold:g}")
    if not isinstance(options.get("notify_no_data"), bool):
        findings.add(where, "notify_no_data must be true or false")
    no_data = options.get("no_data_timeframe")
    if options.get("notify_no_data") is True:
        if not isinstance(no_data, int) or no_data < window:
            findings.add(where, f"no_data_timeframe must be whole minutes ≥ the {window}-minute window")
    elif no_data is not None:
        findings.add(where, "no_data_timeframe is set but notify_no_data is false")
    for key in ("renotify_interval", "evaluation_delay"):
        if key in options and (not isinstance(options[key], int) or options[key] < 0):
            findings.add(where, f"{key} must be a whole number ≥ 0")


def _check_message(
    message: str,
    options: Mapping[str, Any],
    group_tags: set[str],
    anchors: set[str],
    where: str,
    findings: Findings,
) -> None:
    open_blocks: list[str] = []
    seen: set[str] = set()
    for match in _MESSAGE_TOKEN.finditer(message):
        sigil, name = match.groups()
        if sigil in ("#", "^"):
            if name not in MESSAGE_CONDITIONS:
                findings.add(where, f"unknown message condition {{{{{sigil}{name}}}}}")
            open_blocks.append(name)
            seen.add(name)
        elif sigil == "/":
            if not open_blocks or open_blocks.pop() != name:
                findings.add(where, f"{{{{/{name}}}}} closes a block that is not open")
        elif name.endswith(".name"):
            if name.removesuffix(".name") not in group_tags:
                findings.add(
                    where, f"{{{{{name}}}}}: the monitor does not group by {name.removesuffix('.name')!r}"
                )
        elif name not in MESSAGE_VARIABLES:
            findings.add(where, f"unknown message variable {{{{{name}}}}}")
    if open_blocks:
        findings.add(where, f"message blocks left open: {open_blocks}")
    if "is_alert" not in seen:
        findings.add(where, "the message needs an {{#is_alert}} block saying what to do")
    thresholds = options.get("thresholds", {}) if isinstance(options, dict) else {}
    if ("warning" in thresholds) != ("is_warning" in seen):
        findings.add(where, "a warning threshold and an {{#is_warning}} block go together")
    if isinstance(options, dict) and options.get("notify_no_data") and "is_no_data" not in seen:
        findings.add(where, "notify_no_data is on: say what missing data means in an {{#is_no_data}} block")
    if not _PAGERDUTY.search(message):
        findings.add(where, "the message notifies nobody: add an @pagerduty-<service> handle")
    links = _RUNBOOK.findall(message)
    if not links:
        findings.add(where, "the message needs a link to its runbook section in deploy/datadog/README.md")
    for anchor in links:
        if anchor not in anchors:
            findings.add(where, f"the runbook link #{anchor} matches no heading of deploy/datadog/README.md")
