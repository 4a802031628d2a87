"""Building blocks shared by every config kind: base model, header, metadata, checked strings."""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pfactory.contracts.cron import CronError, parse_cron
from pfactory.contracts.imports import (
    IMPORT_PATH_PATTERN,
    ImportAllowlist,
    check_import_path,
    default_allowlist,
)
from pfactory.contracts.issues import SemanticIssue
from pfactory.contracts.suggest import did_you_mean

API_VERSION = "pfactory.io/v1"
ALLOWLIST_CONTEXT_KEY = "pfactory.import_allowlist"
"""Validation-context key holding the `ImportAllowlist` to check import paths against."""
DEFER_SEMANTICS_CONTEXT_KEY = "pfactory.defer_semantics"
"""Validation-context key: when true, cross-field checks are left to the caller (the loader)."""

SLUG_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SEMVER_PATTERN = r"^\d+\.\d+\.\d+$"


def config_error(
    code: str,
    reason: str,
    *,
    suggestion: str | None = None,
    expected: str | None = None,
    key: str | None = None,
) -> PydanticCustomError:
    """Build a validation error whose context carries a suggestion and what was expected.

    Args:
        code: machine-readable error type.
        reason: the message, in words.
        suggestion: the likely intended value ("did you mean").
        expected: what would be accepted.
        key: a key inside the validated mapping the error is about (the loader points at it).

    Returns:
        The error to raise from a validator.
    """
    ctx: dict[str, Any] = {"reason": reason}
    if key is not None:
        ctx["key"] = key
    if suggestion is not None:
        ctx["suggestion"] = suggestion
    if expected is not None:
        ctx["expected"] = expected
    return PydanticCustomError(code, "{reason}", ctx)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, aliases are the YAML spelling."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


def _check_slug(value: str) -> str:
    if re.match(SLUG_PATTERN, value):
        return value
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-_")
    slug = re.sub(r"^[^a-z]+", "", cleaned)[:63] or None
    raise config_error(
        "invalid_name",
        f"'{value}' is not a valid name: use lowercase letters, digits, '-' or '_', "
        "starting with a letter, at most 63 characters",
        suggestion=slug if slug != value else None,
        expected="a lowercase slug like 'credit-default'",
    )


def _check_identifier(value: str) -> str:
    if re.match(IDENTIFIER_PATTERN, value):
        return value
    raise config_error(
        "invalid_identifier",
        f"'{value}' is not a valid column/model name: use letters, digits and '_', not starting with a digit",
        suggestion=re.sub(r"\W+", "_", value).strip("_") or None,
    )


Slug = Annotated[str, AfterValidator(_check_slug), Field(json_schema_extra={"pattern": SLUG_PATTERN})]
"""A lowercase name used in storage paths and URLs."""
Identifier = Annotated[
    str, AfterValidator(_check_identifier), Field(json_schema_extra={"pattern": IDENTIFIER_PATTERN})
]
"""A SQL/Python identifier: a column, model or step name."""


def _to_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


ColumnList = Annotated[
    list[Identifier],
    BeforeValidator(_to_list, json_schema_input_type=str | list[str]),
    Field(min_length=1),
]
"""One column name or a list of them."""


def _check_version(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and re.match(SEMVER_PATTERN, value):
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise config_error(
        "invalid_version",
        f"invalid version {value!r}",
        expected="a positive integer like 3 or a semantic version string like '1.2.0'",
    )


Version = Annotated[
    int | str,
    PlainValidator(
        _check_version,
        json_schema_input_type=Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=SEMVER_PATTERN)],
    ),
]
"""A version: a positive integer or a ``MAJOR.MINOR.PATCH`` string."""

_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_CRON_NAMES = {
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
    "sun",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
}
CRON_MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
_CRON_PART = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/\d+)?$")


def _cron_field_problem(text: str, name: str, low: int, high: int) -> str | None:
    for part in text.split(","):
        match = _CRON_PART.match(part)
        if not match:
            return f"{name} field '{text}' is not a cron expression (use *, n, a-b, */n or lists)"
        step = match.group(3)
        if step and int(step[1:]) < 1:
            return f"{name} step '{step}' must be at least 1"
        for token in match.group(1).split("-"):
            if token == "*" or token.lower() in _CRON_NAMES:
                continue
            if not token.isdigit() or not low <= int(token) <= high:
                return f"{name} value '{token}' is out of range {low}-{high}"
    return None


def _check_cron(value: str) -> str:
    text = value.strip()
    if text in CRON_MACROS:
        return text
    fields = text.split()
    if len(fields) != 5:
        raise config_error(
            "invalid_cron",
            f"cron expression '{value}' has {len(fields)} fields; it needs 5 "
            "(minute hour day-of-month month day-of-week)",
            expected="e.g. '0 6 * * *' for 06:00 every day",
        )
    for field_text, (name, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        problem = _cron_field_problem(field_text, name, low, high)
        if problem:
            raise config_error("invalid_cron", f"cron expression '{value}': {problem}")
    try:  # what the syntax allows but no schedule can mean: a name in the wrong field, 30 February
        parse_cron(text)
    except CronError as error:
        raise config_error("invalid_cron", str(error)) from None
    return " ".join(fields)


Cron = Annotated[str, AfterValidator(_check_cron)]
"""A 5-field cron expression (``0 6 * * *``) or a macro such as ``@daily``."""


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(value: str) -> str:
    known = _timezones()
    if not known or value in known:
        return value
    raise config_error(
        "invalid_timezone",
        f"unknown timezone '{value}'",
        suggestion=did_you_mean(value, known),
        expected="an IANA name like 'UTC' or 'Europe/London'",
    )


Timezone = Annotated[str, AfterValidator(_check_timezone)]
"""An IANA timezone name."""


def _check_import_field(value: str, info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    allowlist = context.get(ALLOWLIST_CONTEXT_KEY)
    if not isinstance(allowlist, ImportAllowlist):
        allowlist = default_allowlist()
    error = check_import_path(value, allowlist)
    if error is not None:
        raise config_error(error.code, error.reason, suggestion=error.suggestion, expected=error.expected)
    return value


ImportPath = Annotated[
    str, AfterValidator(_check_import_field), Field(json_schema_extra={"pattern": IMPORT_PATH_PATTERN})
]
"""A dotted ``module.Class`` path checked against the import allowlist (never imported here)."""


class Metadata(StrictModel):
    """Who owns a config and what it is for."""

    name: Slug = Field(
        description="Unique lowercase name (letters, digits, '-', '_'); used in storage paths."
    )
    owner: str = Field(
        min_length=1, description="Team or person accountable for it, e.g. 'risk-ds@bank.example'."
    )
    description: str = Field(default="", description="What this config produces and why.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels for search and grouping.")


class Schedule(StrictModel):
    """When something runs."""

    cron: Cron = Field(description="5-field cron expression, e.g. '0 6 * * *', or a macro like '@daily'.")
    timezone: Timezone = Field(default="UTC", description="IANA timezone the cron is read in.")


class ConfigBase(StrictModel):
    """Fields every config kind carries, and the hook for cross-field checks."""

    api_version: Literal["pfactory.io/v1"] = Field(
        alias="apiVersion", description=f"Config schema version; must be '{API_VERSION}'."
    )
    metadata: Metadata = Field(description="Name, owner, description and tags.")

    def semantic_issues(self) -> list[SemanticIssue]:
        """Return cross-field problems (names that must exist, uniqueness, ...); empty when none."""
        return []

    @model_validator(mode="after")
    def _run_semantic_checks(self, info: ValidationInfo) -> Self:
        context = info.context if isinstance(info.context, dict) else {}
        if context.get(DEFER_SEMANTICS_CONTEXT_KEY):
            return self
        issues = self.semantic_issues()
        if issues:
            raise config_error("semantic", "; ".join(str(issue) for issue in issues))
        return self
