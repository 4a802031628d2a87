"""Routing rules: which alerts page, which only notify, which are dropped. Configuration, not code.

A routes file is YAML::

    routes:
      - name: drift-is-the-ml-teams      # optional, shown in logs and on the incident
        check: drift                     # glob on AlertRaised.check
        feature_set: "credit_*"          # glob on feature_set_name; an alert without one never matches
        action: page                     # page | notify | drop
        routing_key_env: PD_KEY_ML_TEAM  # or routing_key: <32 characters>; neither: the default key
      - severity: [critical, error]      # one severity or a list
        action: page
      - action: notify                   # no match fields: every alert

Match fields (``check``, ``severity``, ``model``, ``feature_set``) left out match anything; the first
route whose fields all match wins. An alert no route matches is notified (a Datadog event), never
dropped in silence: end the list with a catch-all to choose otherwise.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pfactory.alerter.model import Action, key_id
from pfactory.alerter.settings import check_routing_key
from pfactory.contracts.events import AlertRaised, Severity
from pfactory.contracts.yamlpos import Position, parse_yaml

DEFAULT_ROUTES = """\
routes:
  - name: page-critical-and-error
    severity: [critical, error]
    action: page
  - name: notify-warning-and-info
    severity: [warning, info]
    action: notify
"""
"""The built-in routes, used when no routes file is configured."""

UNMATCHED = "unmatched"
"""The rule name of alerts no route matched (they are notified)."""

_HOW_TO_FIX = (
    "Each route is a mapping of optional match fields check, model, feature_set (globs) and severity "
    "(critical, error, warning, info, or a list of them), an action (page, notify or drop) and, for page, "
    "routing_key or routing_key_env (else PF_ALERTER_PAGERDUTY_ROUTING_KEY is used). "
    "Fix the lines above, or unset PF_ALERTER_ROUTES_FILE to use the built-in routes."
)


class RoutesFileError(ValueError):
    """The routes file cannot be used; the message names each line and field, and how to fix it."""


class Rule(BaseModel):
    """One route: match fields, then what to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    check: str | None = Field(default=None, min_length=1)
    severity: tuple[Severity, ...] | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)
    feature_set: str | None = Field(default=None, min_length=1)
    action: Action
    routing_key: SecretStr | None = None
    routing_key_env: str | None = Field(default=None, min_length=1)

    @field_validator("severity", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("routing_key")
    @classmethod
    def _key_length(cls, key: SecretStr | None) -> SecretStr | None:
        return check_routing_key(key, "routing_key")

    @model_validator(mode="after")
    def _key_only_when_paging(self) -> Rule:
        if self.routing_key is not None and self.routing_key_env is not None:
            raise ValueError("give routing_key or routing_key_env, not both")
        if self.action is not Action.PAGE and (self.routing_key or self.routing_key_env):
            raise ValueError(
                f"a routing key is only used by action page, this route's action is {self.action}"
            )
        return self

    def matches(self, alert: AlertRaised) -> bool:
        """Whether every match field given matches the alert."""
        if self.severity is not None and alert.severity not in self.severity:
            return False
        for pattern, value in (
            (self.check, alert.check),
            (self.model, alert.model_name),
            (self.feature_set, alert.feature_set_name),
        ):
            if pattern is not None and (value is None or not fnmatchcase(value, pattern)):
                return False
        return True


class _RoutesDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routes: list[Rule] = Field(min_length=1)


@dataclass(frozen=True)
class Route:
    """The decision for one alert: the rule's name, its action and the PagerDuty key (None: disabled)."""

    rule: str
    action: Action
    routing_key: SecretStr | None = None


class RoutingTable:
    """Ordered rules; the first match wins."""

    def __init__(
        self, rules: Sequence[Rule], default_key: SecretStr | None, keys: Sequence[SecretStr | None]
    ):
        self.rules = tuple(rules)
        self.default_key = default_key
        self._keys = list(keys)

    def route(self, alert: AlertRaised) -> Route:
        """The first matching rule's decision; an unmatched alert is notified."""
        for index, rule in enumerate(self.rules):
            if rule.matches(alert):
                key = (self._keys[index] or self.default_key) if rule.action is Action.PAGE else None
                return Route(rule.name or f"routes[{index}]", rule.action, key)
        return Route(UNMATCHED, Action.NOTIFY)

    def routing_keys(self) -> dict[str, SecretStr]:
        """Every configured key by its fingerprint (to resolve an incident another rule opened)."""
        keys = [key for key in (*self._keys, self.default_key) if key is not None]
        return {key_id(key): key for key in keys}

    def pages_without_key(self) -> list[str]:
        """Names of page rules with no routing key at all (they log 'would page')."""
        return [
            rule.name or f"routes[{index}]"
            for index, rule in enumerate(self.rules)
            if rule.action is Action.PAGE and (self._keys[index] or self.default_key) is None
        ]


def load_routes(
    path: Path | None, default_key: SecretStr | None, environ: dict[str, str] | None = None
) -> RoutingTable:
    """Read the routes file (the built-in routes when ``path`` is None).

    Args:
        path: the YAML file.
        default_key: the routing key of page rules that name none.
        environ: where ``routing_key_env`` names are looked up (the process environment by default).

    Raises:
        RoutesFileError: the file is missing, unreadable or invalid; every problem with its line.
    """
    where = str(path) if path is not None else "the built-in routes"
    if path is None:
        text = DEFAULT_ROUTES
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RoutesFileError(
                f"alert routes file {path} cannot be read ({error}); set PF_ALERTER_ROUTES_FILE to a readable "
                "YAML file, or unset it to use the built-in routes"
            ) from None
    parsed = parse_yaml(text)
    problems = [f"line {p.position.line}: {p.message}" for p in parsed.problems]
    if parsed.fatal or problems:
        raise RoutesFileError(_report(where, problems))
    try:
        document = _RoutesDocument.model_validate(parsed.data)
    except ValidationError as error:
        for issue in error.errors(include_url=False):
            loc = tuple(issue["loc"])
            position = _position(parsed.keys, parsed.values, loc)
            message = issue["msg"]
            if issue["type"] == "extra_forbidden":
                message = f"unknown field '{loc[-1]}'" + _did_you_mean(str(loc[-1]), Rule.model_fields)
            elif issue["type"] == "value_error":
                message = str(issue.get("ctx", {}).get("error", message))
            elif issue["type"] == "model_type" and loc == ():
                message = "the file must be a mapping with a 'routes' list"
            problems.append(f"line {position.line}: {_dotted(loc) or 'the document'}: {message}")
        raise RoutesFileError(_report(where, problems)) from None
    env = os.environ if environ is None else environ
    keys: list[SecretStr | None] = []
    for index, rule in enumerate(document.routes):
        key = rule.routing_key
        if rule.routing_key_env is not None:
            value = env.get(rule.routing_key_env)
            loc = ("routes", index, "routing_key_env")
            line = _position(parsed.keys, parsed.values, loc).line
            if not value:
                problems.append(
                    f"line {line}: {_dotted(loc)}: environment variable {rule.routing_key_env} is not set"
                )
                continue
            try:
                key = check_routing_key(SecretStr(value), f"environment variable {rule.routing_key_env}")
            except ValueError as error:
                problems.append(f"line {line}: {_dotted(loc)}: {error}")
        keys.append(key)
    if problems:
        raise RoutesFileError(_report(where, problems))
    return RoutingTable(document.routes, default_key, keys)


def _report(where: str, problems: list[str]) -> str:
    listed = "\n".join(f"  {problem}" for problem in problems)
    return f"alert routes file {where} is invalid:\n{listed}\n{_HOW_TO_FIX}"


def _position(keys: dict[Any, Position], values: dict[Any, Position], loc: tuple[Any, ...]) -> Position:
    for end in range(len(loc), -1, -1):
        found = keys.get(loc[:end]) or values.get(loc[:end])
        if found is not None:
            return found
    return Position(1, 1)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
