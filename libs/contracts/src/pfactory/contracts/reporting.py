"""Turn pydantic errors and semantic issues into located, advice-like `ConfigIssue` objects."""

from __future__ import annotations

import re

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from pfactory.contracts.issues import ConfigIssue, Loc, SemanticIssue, format_path
from pfactory.contracts.locate import data_path, field_aliases, field_at
from pfactory.contracts.suggest import did_you_mean, one_of
from pfactory.contracts.yamlpos import ParsedYaml, Position

_TYPE_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD)",
    "none_required": "null",
}


class Reporter:
    """Turns located problems into `ConfigIssue` objects for one document."""

    def __init__(self, parsed: ParsedYaml, filename: str | None, positions: bool) -> None:
        self.parsed, self.filename, self.positions = parsed, filename, positions
        self.issues: list[ConfigIssue] = []

    def where(self, path: Loc, *, at_key: bool = False, parent: bool = False) -> Position | None:
        """Return where to point for ``path``: its key, its value, or (``parent``) the enclosing key.

        Falls back to the nearest located ancestor; None when the input carried no positions.
        """
        if not self.positions:
            return None
        if parent:
            path = path[:-1]
            at_key = True
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            table = self.parsed.keys if at_key and depth == len(path) else self.parsed.values
            found = table.get(prefix) or self.parsed.values.get(prefix)
            if found:
                return found
        return Position(1, 1)

    def add(
        self,
        path: Loc,
        message: str,
        *,
        code: str,
        expected: str | None = None,
        suggestion: str | None = None,
        at_key: bool = False,
        parent: bool = False,
        position: Position | None = None,
    ) -> None:
        """Record one issue at ``path`` (or at ``position`` when the parser already knew it)."""
        pos = position if position and self.positions else self.where(path, at_key=at_key, parent=parent)
        self.issues.append(
            ConfigIssue(
                self.filename,
                pos.line if pos else None,
                pos.column if pos else None,
                format_path(path),
                message,
                expected=expected,
                suggestion=suggestion,
                code=code,
            )
        )

    def semantic(self, issue: SemanticIssue) -> None:
        """Record a cross-field issue found after validation."""
        self.add(
            issue.loc,
            issue.message,
            code=issue.code,
            expected=issue.expected,
            suggestion=issue.suggestion,
            at_key=issue.at_key,
        )


def report_error(error: ErrorDetails, root: type[BaseModel], data: object, report: Reporter) -> None:
    """Record one pydantic error as an issue phrased as advice (did-you-mean, expected values).

    Args:
        error: one entry of ``ValidationError.errors()``.
        root: the config class that was validated.
        data: the validated document.
        report: where to record the issue.
    """
    path, at_key = data_path(error["loc"], data)
    kind, ctx = error["type"], error.get("ctx") or {}
    value = error.get("input")
    name = str(path[-1]) if path else ""
    if kind == "missing":
        _, info = field_at(root, path, data)
        report.add(
            path,
            f"missing required field '{name}'",
            code="missing",
            expected=_lower_first(info.description) if info and info.description else None,
            parent=True,
        )
    elif kind == "extra_forbidden":
        model, _ = field_at(root, path, data)
        aliases = field_aliases(model) if model else []
        guess = did_you_mean(name, aliases)
        report.add(
            path,
            f"unknown field '{name}'",
            code="unknown_field",
            suggestion=guess,
            at_key=True,
            expected=None if guess else "one of: " + ", ".join(aliases) if aliases else None,
        )
    elif kind in ("literal_error", "enum"):
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        report.add(
            path,
            f"invalid value {_short(value)}",
            code="invalid_choice",
            at_key=at_key,
            expected=one_of(options),
            suggestion=did_you_mean(str(value), options),
        )
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_key = str(ctx.get("discriminator", "type")).strip("'")
        options = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        if kind == "union_tag_not_found":
            report.add(
                (*path, tag_key),
                f"missing required field '{tag_key}'",
                code="missing",
                expected=one_of(options),
                parent=True,
            )
        else:
            tag = str(ctx.get("tag", ""))
            report.add(
                (*path, tag_key),
                f"unknown {tag_key} '{tag}'",
                code="invalid_choice",
                expected=one_of(options),
                suggestion=did_you_mean(tag, options),
            )
    elif kind in _TYPE_EXPECTED:
        report.add(
            path,
            f"wrong type: got {describe(value)}",
            code="wrong_type",
            expected=_TYPE_EXPECTED[kind],
            at_key=at_key,
        )
    elif "reason" in ctx:
        if "key" in ctx:
            path, at_key = (*path, str(ctx["key"])), True
        report.add(
            path,
            str(ctx["reason"]),
            code=kind,
            at_key=at_key,
            expected=_opt(ctx.get("expected")),
            suggestion=_opt(ctx.get("suggestion")),
        )
    else:
        message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        report.add(
            path,
            f"{_short(value)} is invalid: {message}" if _is_scalar(value) else message,
            code=kind,
            at_key=at_key,
        )


def _lower_first(text: str) -> str:
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def merge_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Fold the type errors of one union value into one issue, and drop a missing field that an
    unknown key beside it already explains (one mistake, one issue).

    Args:
        issues: issues in the order they were found.

    Returns:
        The folded issues.
    """
    misspelt = {(i.path.rpartition(".")[0], i.suggestion) for i in issues if i.code == "unknown_field"}
    issues = [
        i
        for i in issues
        if not (i.code == "missing" and (i.path.rpartition(".")[0], i.path.rpartition(".")[2]) in misspelt)
    ]
    merged: dict[tuple[str, str], ConfigIssue] = {}
    out: list[ConfigIssue] = []
    for issue in issues:
        key = (issue.path, issue.code)
        first = merged.get(key)
        if issue.code == "wrong_type" and first is not None:
            idx = out.index(first)
            expected = f"{first.expected} or {issue.expected}"
            out[idx] = merged[key] = ConfigIssue(
                first.file,
                first.line,
                first.column,
                first.path,
                first.message,
                expected=expected,
                code=first.code,
            )
            continue
        if first is not None and first == issue:
            continue
        merged.setdefault(key, issue)
        out.append(issue)
    return out


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(value: object) -> str:
    """Name a value for a message: ``the string 'abc'``, ``a list``, ``null (an empty value)``."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    return (
        "a list"
        if isinstance(value, list)
        else "a mapping"
        if isinstance(value, dict)
        else type(value).__name__
    )
