"""A strict parser for the Datadog metric query language, as far as deploy/datadog/ uses it.

Grammar (anything else is refused with the position and what was expected)::

    monitor    := time_aggr "(" "last_" N unit ")" ":" expr comparator number
    expr       := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := number | "(" expr ")" | function "(" expr ("," literal)* ")" | leaf
    leaf       := aggregator ":" metric "{" scope "}" ["by" "{" tag ("," tag)* "}"] method*   (metrics)
                | query_name                                                              (formulas)
    scope      := "*" | term ("," term)*     term := ["!"] (tag ":" value | "$" variable)
    method     := "." ("as_count" | "as_rate") "()" | ".rollup(" method ["," seconds] ")"
                | ".fill(" null|zero|linear|last ["," seconds] ")"

Functions take one query expression first, then literal arguments checked per function
(``top(q, 10, 'max', 'desc')``, ``timeshift(q, -86400)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

AGGREGATORS = frozenset({"avg", "sum", "min", "max"})
DISTRIBUTION_AGGREGATORS = frozenset({"count", "p50", "p75", "p90", "p95", "p99"})
"""Only distributions keep the percentiles and the count of values."""

TIME_AGGREGATORS = frozenset({"avg", "sum", "min", "max"})
WINDOW_LIMITS = {"m": 10080, "h": 168, "d": 7, "w": 1}
"""Longest monitor window per unit (last_#m up to a week, last_#h up to 168, ...)."""

COMPARATORS = (">=", "<=", ">", "<")
ROLLUP_METHODS = frozenset({"avg", "sum", "min", "max", "count"})
FILL_MODES = frozenset({"null", "zero", "linear", "last"})
TOP_LIMITS = frozenset({5, 10, 15, 20, 25, 50, 100})
TOP_BY = frozenset({"max", "min", "last", "l2norm", "area", "mean", "norm"})

ArgKind = Literal["number", "integer", "top_limit", "top_by", "direction"]
FUNCTIONS: dict[str, tuple[ArgKind, ...]] = {
    **dict.fromkeys(
        (
            "abs",
            "log2",
            "log10",
            "cumsum",
            "integral",
            "per_second",
            "per_minute",
            "per_hour",
            "diff",
            "monotonic_diff",
            "derivative",
            "default_zero",
            "count_nonzero",
            "count_not_null",
            "hour_before",
            "day_before",
            "week_before",
            "month_before",
            "ewma_3",
            "ewma_5",
            "ewma_10",
            "ewma_20",
            "median_3",
            "median_5",
            "median_7",
            "median_9",
        ),
        (),
    ),
    "timeshift": ("integer",),
    "clamp_min": ("number",),
    "clamp_max": ("number",),
    "cutoff_min": ("number",),
    "cutoff_max": ("number",),
    "top": ("top_limit", "top_by", "direction"),
    "bottom": ("top_limit", "top_by", "direction"),
}
"""Supported functions and the literal arguments each takes after its query."""


class QuerySyntaxError(ValueError):
    """A query the parser does not accept, with the position of the problem."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        pointer = f"{text}\n{' ' * position}^"
        super().__init__(f"{problem} at column {position + 1}:\n{pointer}")
        self.position = position


@dataclass(frozen=True)
class ScopeTerm:
    """One filter of a scope: ``tag:value``, ``!tag:value`` or a template variable ``$name``."""

    key: str
    value: str | None = None
    negated: bool = False
    variable: bool = False


@dataclass(frozen=True)
class MetricQuery:
    """``aggregator:metric{scope} by {group_by}.method()...``."""

    aggregator: str
    metric: str
    scope: tuple[ScopeTerm, ...]
    group_by: tuple[str, ...]
    methods: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Name:
    """A formula's reference to a named query."""

    name: str


@dataclass(frozen=True)
class Call:
    function: str
    query: Node
    arguments: tuple[str | float, ...]


@dataclass(frozen=True)
class BinaryOp:
    operator: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Negation:
    operand: Node


Node = Number | Name | Call | BinaryOp | Negation | MetricQuery


@dataclass(frozen=True)
class MonitorQuery:
    """``time_aggr(last_N):expr comparator threshold``."""

    time_aggregator: str
    window_minutes: int
    expression: Node
    comparator: str
    threshold: float
    metric_queries: tuple[MetricQuery, ...] = field(default=())


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METRIC = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_TAG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_\-./]*")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_\-./:@*]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_MONITOR_HEAD = re.compile(r"([a-z_]+)\(last_(\d+)([mhdw])\):")
_MONITOR_TAIL = re.compile(r"\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


class _Parser:
    def __init__(
        self, text: str, leaves: Literal["metrics", "names"], offset: int = 0, full: str = ""
    ) -> None:
        self.text = text
        self.full = full or text
        self.offset = offset
        self.leaves = leaves
        self.i = 0

    def fail(self, problem: str) -> QuerySyntaxError:
        return QuerySyntaxError(self.full, self.offset + self.i, problem)

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] == " ":
            self.i += 1

    def at(self, literal: str) -> bool:
        self.skip()
        return self.text.startswith(literal, self.i)

    def expect(self, literal: str, what: str = "") -> None:
        if not self.at(literal):
            found = self.text[self.i : self.i + 12] or "the end"
            raise self.fail(f"expected {what or repr(literal)}, found {found!r}")
        self.i += len(literal)

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip()
        found = pattern.match(self.text, self.i)
        if found is None:
            raise self.fail(f"expected {what}, found {self.text[self.i : self.i + 12] or 'the end'!r}")
        self.i = found.end()
        return found.group(0)

    def parse(self) -> Node:
        node = self.expression()
        self.skip()
        if self.i != len(self.text):
            raise self.fail(f"unexpected {self.text[self.i :]!r} after a complete query")
        return node

    def expression(self) -> Node:
        node = self.term()
        while self.at("+") or self.at("-"):
            operator = self.text[self.i]
            self.i += 1
            node = BinaryOp(operator, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*") or self.at("/"):
            operator = self.text[self.i]
            self.i += 1
            node = BinaryOp(operator, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.i += 1
            return Negation(self.unary())
        return self.primary()

    def primary(self) -> Node:
        self.skip()
        if self.at("("):
            self.i += 1
            node = self.expression()
            self.expect(")", "')' closing the group")
            return node
        if _NUMBER.match(self.text, self.i):
            return Number(float(self.match(_NUMBER, "a number")))
        start = self.i
        word = self.match(_WORD, "a query, a function, a number or '('")
        if self.text.startswith("(", self.i):
            return self.call(word, start)
        if self.text.startswith(":", self.i):
            if self.leaves != "metrics":
                raise self.fail("a formula refers to queries by name; write the metric in a query")
            return self.metric_query(word, start)
        if self.leaves == "metrics":
            self.i = start
            raise self.fail(f"expected aggregator:metric{{scope}}, found the bare word {word!r}")
        return Name(word)

    def call(self, function: str, start: int) -> Node:
        if function not in FUNCTIONS:
            self.i = start
            known = ", ".join(sorted(FUNCTIONS))
            raise self.fail(f"unknown function {function!r} (supported: {known})")
        self.expect("(")
        query = self.expression()
        arguments: list[str | float] = []
        for kind in FUNCTIONS[function]:
            self.expect(",", f"',' and the {kind.replace('_', ' ')} argument of {function}()")
            arguments.append(self.argument(function, kind))
        self.expect(")", f"')' closing {function}() (it takes {len(FUNCTIONS[function]) + 1} arguments)")
        return Call(function, query, tuple(arguments))

    def argument(self, function: str, kind: ArgKind) -> str | float:
        self.skip()
        if kind in ("number", "integer", "top_limit"):
            negative = self.at("-")
            if negative:
                self.i += 1
            value = float(self.match(_NUMBER, f"a number for {function}()")) * (-1 if negative else 1)
            if kind != "number" and not value.is_integer():
                raise self.fail(f"{function}() takes a whole number here, not {value}")
            if kind == "top_limit" and int(value) not in TOP_LIMITS:
                raise self.fail(f"{function}() limit must be one of {sorted(TOP_LIMITS)}, not {value:g}")
            return value
        quoted = _QUOTED.match(self.text, self.i)
        if quoted is None:
            raise self.fail(f"expected a quoted string for {function}()")
        self.i = quoted.end()
        text = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        allowed = TOP_BY if kind == "top_by" else frozenset({"asc", "desc"})
        if text not in allowed:
            self.i = quoted.start()
            raise self.fail(f"{function}() takes one of {sorted(allowed)} here, not {text!r}")
        return text

    def metric_query(self, aggregator: str, start: int) -> MetricQuery:
        if aggregator not in AGGREGATORS | DISTRIBUTION_AGGREGATORS:
            self.i = start
            known = sorted(AGGREGATORS | DISTRIBUTION_AGGREGATORS)
            raise self.fail(f"unknown space aggregator {aggregator!r} (one of {known})")
        self.expect(":")
        if not _METRIC.match(self.text, self.i):
            raise self.fail("expected a metric name right after the aggregator's ':'")
        metric = self.match(_METRIC, "a metric name")
        if not self.text.startswith("{", self.i):
            raise self.fail(f"expected '{{' right after {metric} (write {{*}} for no filter)")
        self.i += 1
        scope = self.scope()
        group_by: tuple[str, ...] = ()
        mark = self.i
        self.skip()
        if self.text.startswith("by", self.i) and not _WORD.match(self.text, self.i + 2):
            self.i += 2
            self.expect("{", "'{' after by")
            tags = [self.match(_TAG_KEY, "a tag key to group by")]
            while self.at(","):
                self.i += 1
                tags.append(self.match(_TAG_KEY, "a tag key to group by"))
            self.expect("}", "'}' closing the group-by")
            if len(set(tags)) != len(tags):
                raise self.fail(f"a tag appears twice in by {{{','.join(tags)}}}")
            group_by = tuple(tags)
        else:
            self.i = mark
        methods = self.methods()
        return MetricQuery(
            aggregator,
            metric,
            scope,
            group_by,
            methods,
            self.full[self.offset + start : self.offset + self.i],
        )

    def scope(self) -> tuple[ScopeTerm, ...]:
        if self.at("*"):
            self.i += 1
            self.expect("}", "'}' after '*' (a filter list has no '*' term)")
            return ()
        terms: list[ScopeTerm] = []
        while True:
            self.skip()
            negated = self.text.startswith("!", self.i)
            if negated:
                self.i += 1
            if self.text.startswith("$", self.i):
                self.i += 1
                name = self.match(_WORD, "a template variable name after '$'")
                if negated:
                    raise self.fail("a template variable cannot be negated")
                terms.append(ScopeTerm(name, variable=True))
            else:
                key = self.match(_TAG_KEY, "a tag filter (tag:value) or $variable")
                if key in ("AND", "OR", "NOT", "IN"):
                    raise self.fail("boolean filter syntax is not supported here; use commas (AND) and '!'")
                self.expect(":", f"':' and a value after the tag {key!r} (a bare tag filters nothing useful)")
                value = self.match(_TAG_VALUE, f"a value for the tag {key!r}")
                terms.append(ScopeTerm(key, value, negated))
            if self.at(","):
                self.i += 1
                continue
            self.expect("}", "',' or '}' in the scope")
            return tuple(terms)

    def methods(self) -> tuple[str, ...]:
        methods: list[str] = []
        while self.text.startswith(".", self.i):
            self.i += 1
            name = self.match(_WORD, "a method name after '.'")
            self.expect("(")
            if name in ("as_count", "as_rate"):
                self.expect(")", f"')' ({name}() takes no argument)")
            elif name == "rollup":
                method = self.match(_WORD, "a rollup method")
                if method not in ROLLUP_METHODS:
                    raise self.fail(f"rollup method must be one of {sorted(ROLLUP_METHODS)}, not {method!r}")
                if self.at(","):
                    self.i += 1
                    self.match(_NUMBER, "the rollup interval in seconds")
                self.expect(")", "')' closing rollup()")
            elif name == "fill":
                mode = self.match(_WORD, "a fill mode")
                if mode not in FILL_MODES:
                    raise self.fail(f"fill mode must be one of {sorted(FILL_MODES)}, not {mode!r}")
                if self.at(","):
                    self.i += 1
                    self.match(_NUMBER, "the fill limit in seconds")
                self.expect(")", "')' closing fill()")
            else:
                raise self.fail(f"unknown method .{name}() (as_count, as_rate, rollup, fill)")
            if name in methods:
                raise self.fail(f".{name}() appears twice")
            if {name, *methods} >= {"as_count", "as_rate"}:
                raise self.fail(".as_count() and .as_rate() contradict each other")
            methods.append(name)
        return tuple(methods)


def parse_metric_expression(text: str) -> Node:
    """A metric query, or functions and arithmetic over metric queries (a widget's ``query``/``q``)."""
    return _Parser(text, "metrics").parse()


def parse_formula(text: str) -> Node:
    """A formula over named queries (``failed / (succeeded + failed) * 100``)."""
    return _Parser(text, "names").parse()


def parse_monitor_query(text: str) -> MonitorQuery:
    """A metric monitor's query: ``time_aggr(last_N<unit>):expression comparator threshold``."""
    head = _MONITOR_HEAD.match(text)
    if head is None:
        raise QuerySyntaxError(text, 0, "expected time_aggr(last_<N><m|h|d|w>): at the start")
    aggregator, count, unit = head.group(1), int(head.group(2)), head.group(3)
    if aggregator not in TIME_AGGREGATORS:
        raise QuerySyntaxError(text, 0, f"time aggregator must be one of {sorted(TIME_AGGREGATORS)}")
    if not 1 <= count <= WINDOW_LIMITS[unit]:
        raise QuerySyntaxError(text, head.start(2), f"last_{count}{unit} is outside 1..{WINDOW_LIMITS[unit]}")
    tail = _MONITOR_TAIL.search(text)
    if tail is None:
        raise QuerySyntaxError(
            text, len(text), "expected a comparison (> >= < <=) and a threshold at the end"
        )
    body = text[head.end() : tail.start()]
    expression = _Parser(body, "metrics", offset=head.end(), full=text).parse()
    minutes = count * {"m": 1, "h": 60, "d": 1440, "w": 10080}[unit]
    return MonitorQuery(
        aggregator,
        minutes,
        expression,
        tail.group(1),
        float(tail.group(2)),
        tuple(metric_queries(expression)),
    )


def parse_classic(text: str) -> list[Node]:
    """A classic widget ``q``: one or more expressions separated by top-level commas."""
    parts: list[tuple[int, str]] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append((start, text[start:index]))
            start = index + 1
    parts.append((start, text[start:]))
    return [_Parser(part, "metrics", offset=offset, full=text).parse() for offset, part in parts]


def walk(node: Node) -> Iterator[Node]:
    """Every node of an expression, parents first."""
    yield node
    if isinstance(node, BinaryOp):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Call):
        yield from walk(node.query)
    elif isinstance(node, Negation):
        yield from walk(node.operand)


def metric_queries(node: Node) -> list[MetricQuery]:
    """The metric queries inside an expression, left to right."""
    return [leaf for leaf in walk(node) if isinstance(leaf, MetricQuery)]


def names(node: Node) -> list[str]:
    """The query names a formula refers to."""
    return [leaf.name for leaf in walk(node) if isinstance(leaf, Name)]
