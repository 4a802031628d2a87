"""Column-level lineage of a rendered feature set, with sqlglot (Spark dialect). Pure domain code.

Each model's rendered SQL is parsed and qualified against the schemas known so far (the sources'
columns, then the output columns of every earlier model), so ``select *`` and ``join ... using``
are expanded and every column is tied to its table. Lineage then walks the scopes (CTEs, derived
tables, subqueries, unions) down to the ``src_<source>`` / ``mdl_<model>`` views, and follows
``mdl_`` views through the earlier models' lineage, until only ``<source>.<column>`` remain.

What a column "derives from" (the rule, decided here):

* the columns referenced in its select expression (``coalesce``, ``case``, arithmetic, aggregate
  arguments, window partitions and orders), traced through every intermediate step;
* a value computed from rows rather than columns, i.e. an aggregate with no column argument such as
  ``count(*)``, derives from the columns that decide *which rows* are counted: the ``GROUP BY``
  keys and the ``WHERE``/``HAVING`` columns of that select. So ``n_late_payments_90d`` (a
  ``count(*)`` of late payments per applicant) derives from ``transactions.applicant_id``,
  ``transactions.days_past_due`` and ``transactions.ds``;
* a constant (``cast('2024-01-01' as timestamp)``) derives from nothing: an empty list, no warning.

Filters never add lineage to a column whose value comes from columns (``sum(balance)`` derives from
``balance`` only, whatever the ``WHERE``). Anything that cannot be resolved (a parse error, an
unknown table, a column without a table, a star over an unknown schema) gives an empty or partial
list and a warning, never an exception. Column names are Spark-normalised (lowercase).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from pfactory.materialiser.templates import (
    MODEL_VIEW_PREFIX,
    SOURCE_VIEW_PREFIX,
    RenderedFeatureSet,
    RenderedModel,
)

DIALECT = "spark"
log = logging.getLogger(__name__)

Leaf = tuple[str, str]
"""A physical (view, column) pair: ``("src_bureau", "balance")`` or ``("mdl_base", "age")``."""


@dataclass
class LineageReport:
    """Lineage of a feature set: the output model's columns, every model's columns, and warnings."""

    columns: dict[str, list[str]]
    """Output column → sorted ``<source>.<column>`` it derives from, in select order."""
    models: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Model → (column → sorted ``<source>.<column>``), for every model that could be analysed."""
    warnings: list[str] = field(default_factory=list)
    """What could not be resolved, as ``model 'm', column 'c': reason``."""


def column_lineage(
    rendered: RenderedFeatureSet, source_columns: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Map every output column of the output model to the source columns it derives from.

    Unresolvable parts are logged as warnings (see `lineage_report` for them as data).

    Args:
        rendered: the rendered feature set (models in execution order).
        source_columns: source name → its column names.

    Returns:
        Output column → sorted ``<source>.<column>`` list, in the output model's select order.
    """
    report = lineage_report(rendered, source_columns)
    for warning in report.warnings:
        log.warning("lineage: %s", warning)
    return report.columns


def lineage_report(
    rendered: RenderedFeatureSet, source_columns: Mapping[str, Sequence[str]]
) -> LineageReport:
    """Compute lineage for every model of a rendered feature set, with warnings instead of errors.

    Args:
        rendered: the rendered feature set (models in execution order).
        source_columns: source name → its column names.

    Returns:
        The output model's lineage, every model's lineage, and the warnings.
    """
    warnings: list[str] = []
    schema: dict[str, object] = {
        f"{SOURCE_VIEW_PREFIX}{name}": dict.fromkeys(columns, "STRING")
        for name, columns in source_columns.items()
    }
    resolved: dict[str, dict[str, set[str]]] = {}
    for model in rendered.models:
        for source in model.sources:
            if source not in source_columns:
                warnings.append(f"model '{model.name}': no schema given for source '{source}'")
        columns = _model_lineage(model, schema, resolved, warnings)
        if columns is None:
            continue
        resolved[model.name] = columns
        schema[f"{MODEL_VIEW_PREFIX}{model.name}"] = dict.fromkeys(columns, "STRING")
    as_lists = {
        name: {column: sorted(leaves) for column, leaves in columns.items()}
        for name, columns in resolved.items()
    }
    if rendered.output not in as_lists:
        warnings.append(f"output model '{rendered.output}' could not be analysed")
    return LineageReport(columns=as_lists.get(rendered.output, {}), models=as_lists, warnings=warnings)


def _model_lineage(
    model: RenderedModel,
    schema: dict[str, object],
    resolved: dict[str, dict[str, set[str]]],
    warnings: list[str],
) -> dict[str, set[str]] | None:
    """Column → set of ``source.column`` for one model; None if the SQL cannot be analysed at all."""
    try:
        parsed = sqlglot.parse_one(model.sql, read=DIALECT)
        qualified = qualify(
            parsed,
            schema=MappingSchema(schema, dialect=DIALECT),
            dialect=DIALECT,
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
        root = build_scope(qualified)
    except (SqlglotError, ValueError, KeyError) as exc:
        warnings.append(f"model '{model.name}': SQL could not be analysed: {_first_line(exc)}")
        return None
    if root is None or not isinstance(root.expression, exp.Query):
        warnings.append(f"model '{model.name}': not a query")
        return None
    walker = _Walker(model.name, resolved, warnings)
    result: dict[str, set[str]] = {}
    for position, name in enumerate(root.expression.named_selects):
        if name == "*":
            warnings.append(f"model '{model.name}': 'select *' over a table of unknown columns")
            continue
        walker.column = name
        result[name] = walker.leaves_to_sources(walker.projection(root, position))
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Walker:
    """Walks one model's scopes; ``column`` names the output column being traced (for warnings)."""

    def __init__(self, model: str, resolved: dict[str, dict[str, set[str]]], warnings: list[str]) -> None:
        self.model = model
        self.resolved = resolved
        self.warnings = warnings
        self.column = ""

    def warn(self, reason: str) -> None:
        message = f"model '{self.model}', column '{self.column}': {reason}"
        if message not in self.warnings:
            self.warnings.append(message)

    def projection(self, scope: Scope, position: int) -> set[Leaf]:
        """Leaves of the ``position``-th output column of a scope's query."""
        query = scope.expression
        if isinstance(query, exp.SetOperation):
            leaves: set[Leaf] = set()
            for branch in _branches(scope):
                leaves |= self.projection(branch, position)
            return leaves
        if not isinstance(query, exp.Select):
            self.warn(f"unsupported query kind {type(query).__name__}")
            return set()
        selects = query.expressions
        if position >= len(selects):
            self.warn("a union branch has fewer columns than the first")
            return set()
        expression = selects[position]
        if isinstance(expression, exp.Star) or (
            isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)
        ):
            self.warn("'select *' over a table of unknown columns")
            return set()
        leaves = self.expression_leaves(scope, expression)
        if not leaves and _counts_rows(expression):
            for clause in ("where", "group", "having"):
                node = query.args.get(clause)
                if node is not None:
                    leaves |= self.expression_leaves(scope, node)
        return leaves

    def by_name(self, scope: Scope, name: str) -> set[Leaf]:
        """Leaves of the output column called ``name`` of a scope's query."""
        query = scope.expression
        first = query
        while isinstance(first, exp.SetOperation):
            first = first.left
        names = first.named_selects if isinstance(first, exp.Query) else []
        if name in names:
            return self.projection(scope, names.index(name))
        self.warn(f"no column '{name}' in a subquery")
        return set()

    def expression_leaves(self, scope: Scope, expression: exp.Expr) -> set[Leaf]:
        """Leaves of every column an expression of ``scope`` references, nested subqueries included."""
        leaves: set[Leaf] = set()
        own = scope.expression
        for column in expression.find_all(exp.Column):
            if isinstance(column.this, exp.Star) or column.find_ancestor(exp.Query) is not own:
                continue
            leaves |= self.column_leaves(scope, column)
        for subquery in scope.subquery_scopes:
            if _inside(subquery.expression, expression):
                query = subquery.expression
                width = len(query.named_selects) if isinstance(query, exp.Query) else 0
                for position in range(width):
                    leaves |= self.projection(subquery, position)
        return leaves

    def column_leaves(self, scope: Scope, column: exp.Column) -> set[Leaf]:
        """Follow one qualified column to the view(s) it comes from (outer scopes for correlation)."""
        table = column.table
        if not table:
            self.warn(f"column '{column.name}' is not tied to a table (ambiguous or unknown)")
            return set()
        current: Scope | None = scope
        while current is not None:
            source = current.sources.get(table)
            if isinstance(source, exp.Table):
                return {(source.name, column.name)}
            if isinstance(source, Scope):
                return self.by_name(source, column.name)
            if source is not None:
                self.warn(f"column '{column.sql(DIALECT)}' comes from an unsupported {type(source).__name__}")
                return set()
            current = current.parent
        self.warn(f"column '{column.sql(DIALECT)}' names an unknown table '{table}'")
        return set()

    def leaves_to_sources(self, leaves: set[Leaf]) -> set[str]:
        """Turn ``src_`` leaves into ``source.column`` and follow ``mdl_`` leaves through earlier models."""
        out: set[str] = set()
        for view, column in leaves:
            if view.startswith(SOURCE_VIEW_PREFIX):
                out.add(f"{view[len(SOURCE_VIEW_PREFIX) :]}.{column}")
            elif view.startswith(MODEL_VIEW_PREFIX) and view[len(MODEL_VIEW_PREFIX) :] in self.resolved:
                upstream = self.resolved[view[len(MODEL_VIEW_PREFIX) :]]
                if column in upstream:
                    out |= upstream[column]
                else:
                    self.warn(f"model view '{view}' has no column '{column}'")
            else:
                self.warn(f"reads '{view}', which is neither a source() nor an analysed ref()")
        return out


def _branches(scope: Scope) -> list[Scope]:
    """The left and right scopes of a set operation (the attribute was renamed across sqlglot versions)."""
    branches = getattr(scope, "set_operation_scopes", None) or getattr(scope, "union_scopes", None)
    return list(branches or [])


def _counts_rows(expression: exp.Expr) -> bool:
    """True for an aggregate over rows with no column argument, e.g. ``count(*)`` or ``count(1)``."""
    return any(not agg.find(exp.Column) for agg in expression.find_all(exp.AggFunc))


def _inside(node: exp.Expr, container: exp.Expr) -> bool:
    parent: exp.Expr | None = node
    while parent is not None:
        if parent is container:
            return True
        parent = parent.parent
    return False
