"""Checking JSON rows against a version's input signature, and turning them into the model's DataFrame.

The signature is the trainer's ``reference["signature"]``: ``[{"name", "dtype", "nullable"}, ...]``
with pandas dtype names. A :class:`Signature` is compiled once per loaded version, so checking a
request costs one C-level pass per column (the set of the value types met, compared with the
accepted ones); only a request that fails it is walked row by row to say what is wrong where.

Rules: every signature column must be present unless it is nullable (a missing nullable column
is null); ``null`` is refused in a column that held no nulls in training; a value must have the
column's JSON type (number, integer, boolean, string; a timestamp is an ISO-8601 string); any
other key is an unknown column. All problems of a request are reported together.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

MAX_LISTED_PROBLEMS = 100
"""The most problems one answer lists (the total is always given)."""


class _Missing:
    """The value of a column a row leaves out (a type of its own, so the fast check can tell)."""


_MISSING = _Missing()
# JSON types accepted per kind; bool is not a number here although Python says it is an int
_ACCEPTED: dict[str, tuple[type, ...]] = {
    "number": (float, int),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "datetime": (str,),
}
_EXPECTED = {
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "an ISO-8601 timestamp string",
}


def _kind(dtype: str) -> str:
    lowered = dtype.lower()
    if lowered.startswith(("float", "double")):
        return "number"
    if lowered.startswith(("int", "uint")):
        return "integer"
    if lowered in {"bool", "boolean"}:
        return "boolean"
    if lowered.startswith("datetime"):
        return "datetime"
    if lowered in {"object", "string", "str", "category"}:
        return "string"
    return "any"


@dataclass(frozen=True)
class Column:
    """One input column: its name, training dtype, JSON kind, and whether null is accepted."""

    name: str
    dtype: str
    kind: str
    nullable: bool

    @property
    def expected(self) -> str:
        """What a value must be, in words."""
        what = _EXPECTED.get(self.kind, "any value")
        return f"{what} ({self.dtype}){' or null' if self.nullable else ''}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the rows."""

    row: int
    column: str
    problem: str
    expected: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of the problem."""
        return {"row": self.row, "column": self.column, "problem": self.problem, "expected": self.expected}


class RowsRejected(ValueError):
    """The rows do not match the signature; ``problems`` lists up to :data:`MAX_LISTED_PROBLEMS`."""

    def __init__(self, problems: list[Problem], total: int) -> None:
        self.problems, self.total = problems, total
        first = problems[0]
        super().__init__(
            f"{total} problem(s) in the rows, the first: row {first.row}, column {first.column!r}: "
            f"{first.problem}; expected {first.expected}"
        )


class Signature:
    """A compiled input signature: checks rows and builds the DataFrame the estimator was fitted on."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        """Compile the signature entries of a version's reference.

        Args:
            entries: ``[{"name": ..., "dtype": ..., "nullable": ...}, ...]`` in training order.
        """
        self.columns = [
            Column(str(e["name"]), str(e["dtype"]), _kind(str(e["dtype"])), bool(e.get("nullable", False)))
            for e in entries
        ]
        self.names = [c.name for c in self.columns]
        self._known = frozenset(self.names)
        # per column: how to read it from a row, and the exact value types that pass without a closer look
        self._quick = [
            (methodcaller("get", c.name, _MISSING), _quick_types(c))
            for c in self.columns
            if c.kind in _ACCEPTED
        ]
        self._getters = [(c, methodcaller("get", c.name)) for c in self.columns]

    def check(self, rows: list[dict[str, Any]]) -> None:
        """Check every row; all problems are gathered before raising.

        Args:
            rows: the request's rows (JSON objects).

        Raises:
            RowsRejected: any unknown column, missing required column, wrong type or forbidden null.
        """
        if self._passes_quickly(rows):
            return
        problems: list[Problem] = []
        total = 0
        hints: dict[str, str] = {}  # did-you-mean per unknown name, found once per request
        for i, row in enumerate(rows):
            if not isinstance(row, dict):  # FastAPI already refuses this; kept for direct callers
                problems.append(Problem(i, "", f"the row is {type(row).__name__}", "a JSON object"))
                total += 1
                continue
            found = self._row_problems(i, row, hints)
            if found:
                total += len(found)
                problems.extend(found[: MAX_LISTED_PROBLEMS - len(problems)])
        if total:
            raise RowsRejected(problems, total)

    def _passes_quickly(self, rows: list[dict[str, Any]]) -> bool:
        """Whether every row is a dict of known columns whose values all have an accepted type.

        False says only "look closer" (an integer column given 4.0 fails here and passes there).
        """
        if not all(type(row) is dict for row in rows):
            return False
        if not all(map(self._known.issuperset, rows)):
            return False
        return all(types.issuperset(map(type, map(get, rows))) for get, types in self._quick)

    def _row_problems(self, i: int, row: dict[str, Any], hints: dict[str, str]) -> list[Problem]:
        found: list[Problem] = []
        for column in self.columns:
            value = row.get(column.name, _MISSING)
            if value is _MISSING:
                if not column.nullable:
                    found.append(Problem(i, column.name, "missing (a required column)", column.expected))
            elif value is None:
                if not column.nullable:
                    found.append(
                        Problem(
                            i, column.name, "null, but the column had no nulls in training", column.expected
                        )
                    )
            elif not self._accepts(column, value):
                found.append(Problem(i, column.name, f"{_json_type(value)} {_short(value)}", column.expected))
        if len(row) > len(self._known) or not self._known.issuperset(row):
            for name in row:
                if name not in self._known:
                    hint = hints.get(name)
                    if hint is None:
                        close = difflib.get_close_matches(str(name), self.names, n=1)
                        hint = hints[name] = f"; did you mean {close[0]!r}?" if close else ""
                    found.append(
                        Problem(i, str(name), f"unknown column{hint}", "one of the signature's columns")
                    )
        return found

    @staticmethod
    def _accepts(column: Column, value: Any) -> bool:
        accepted = _ACCEPTED.get(column.kind)
        if accepted is None:
            return True
        if isinstance(value, bool):
            return column.kind == "boolean"
        if column.kind == "integer" and isinstance(value, float):
            return value.is_integer()
        return isinstance(value, accepted)

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The checked rows as a DataFrame with the training columns, order and dtypes.

        Args:
            rows: rows that passed :meth:`check`.

        Returns:
            One column per signature entry; a missing nullable value is null.

        Raises:
            RowsRejected: a timestamp string that does not parse, or a number the column's dtype cannot hold.
        """
        data = {column.name: self._values(column, list(map(get, rows))) for column, get in self._getters}
        # the dict is in signature order: passing columns= too sends pandas down a much slower path
        return pd.DataFrame(data, copy=False)

    @staticmethod
    def _values(column: Column, values: list[Any]) -> Any:
        if column.kind in {"number", "integer"}:
            try:
                return _numbers(column, values)
            except (OverflowError, ValueError, TypeError) as error:  # 300 for an int8, 10**400 for a float
                raise RowsRejected([_first_out_of_range(column, values, error)], 1) from error
        if column.kind == "boolean":
            return pd.array(values, dtype="boolean") if column.nullable else np.array(values, dtype=bool)
        if column.kind == "datetime":
            try:
                return pd.to_datetime(values, format="ISO8601", utc="UTC" in column.dtype)
            except (ValueError, TypeError) as error:
                raise RowsRejected([_first_bad_timestamp(column, values, error)], 1) from error
        if column.kind == "string":
            return (
                pd.array(values, dtype="category")
                if column.dtype == "category"
                else np.array(values, dtype=object)
            )
        return pd.array(values)


def _quick_types(column: Column) -> frozenset[type]:
    """The value types a column takes as they are (an integral float in an integer column needs a look)."""
    types = set(_ACCEPTED[column.kind])  # exact types: True is an int to isinstance, not to type()
    if column.nullable:
        types |= {type(None), _Missing}
    return frozenset(types)


def _numbers(column: Column, values: list[Any]) -> Any:
    if column.kind == "number":
        return np.array(values, dtype=column.dtype if column.dtype.islower() else np.float64)
    if column.nullable or not column.dtype.islower():
        return pd.array(values, dtype="Int64")
    return np.array(values, dtype=column.dtype)


def _first_out_of_range(column: Column, values: list[Any], error: Exception) -> Problem:
    for i, value in enumerate(values):
        try:
            _numbers(column, [value])
        except (OverflowError, ValueError, TypeError) as own:
            return Problem(i, column.name, f"{_short(value)} does not fit ({own})", column.expected)
    return Problem(0, column.name, f"the values do not convert together ({error})", column.expected)


def _first_bad_timestamp(column: Column, values: list[Any], error: Exception) -> Problem:
    for i, value in enumerate(values):
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError) as own:
            return Problem(i, column.name, f"{_short(value)} is not a timestamp ({own})", column.expected)
    return Problem(0, column.name, f"the timestamps do not parse together ({error})", column.expected)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
