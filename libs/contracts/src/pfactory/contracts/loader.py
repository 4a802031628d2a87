"""Load a config from YAML/JSON, reporting every problem at once with file, line and column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from pfactory.contracts.configs.common import ALLOWLIST_CONTEXT_KEY, DEFER_SEMANTICS_CONTEXT_KEY, ConfigBase
from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.configs.kinds import CONFIG_KINDS
from pfactory.contracts.configs.model import ModelConfig
from pfactory.contracts.imports import ImportAllowlist, default_allowlist
from pfactory.contracts.issues import ConfigError, ConfigIssue
from pfactory.contracts.reporting import Reporter, describe, merge_issues, report_error
from pfactory.contracts.suggest import did_you_mean, one_of
from pfactory.contracts.yamlpos import ParsedYaml, parse_yaml

MAX_CONFIG_BYTES = 1024 * 1024
_SUFFIXES = (".yaml", ".yml", ".json")
C = TypeVar("C", bound=ConfigBase)


@overload
def load_config(
    source: str | os.PathLike[str],
    *,
    filename: str | None = None,
    allowlist: ImportAllowlist | None = None,
    expect: None = None,
) -> FeatureSetConfig | ModelConfig: ...
@overload
def load_config(
    source: str | os.PathLike[str],
    *,
    filename: str | None = None,
    allowlist: ImportAllowlist | None = None,
    expect: type[C],
) -> C: ...
def load_config(
    source: str | os.PathLike[str],
    *,
    filename: str | None = None,
    allowlist: ImportAllowlist | None = None,
    expect: type[ConfigBase] | None = None,
) -> ConfigBase:
    """Load and validate one config, collecting every problem before failing.

    Args:
        source: a ``Path`` (os.PathLike) to read, or the YAML/JSON text itself (a ``str`` is never read as a path).
        filename: name to show in messages (default: the path, or ``<config>`` for text).
        allowlist: import-path allowlist (default: built from ``PF_IMPORTS_*`` and entry points).
        expect: the config class the caller needs (e.g. ``ModelConfig``); another kind is an error.

    Returns:
        The validated config.

    Raises:
        ConfigError: with one `ConfigIssue` per problem, located by file, line and column.
    """
    text, filename = _read(source, filename)
    parsed = parse_yaml(text)
    return _validate(parsed, filename, allowlist, expect)


@overload
def load_config_dict(
    data: object, *, allowlist: ImportAllowlist | None = None, expect: None = None
) -> FeatureSetConfig | ModelConfig: ...
@overload
def load_config_dict(data: object, *, allowlist: ImportAllowlist | None = None, expect: type[C]) -> C: ...
def load_config_dict(
    data: object, *, allowlist: ImportAllowlist | None = None, expect: type[ConfigBase] | None = None
) -> ConfigBase:
    """Validate an already-parsed config (e.g. a JSON request body); issues carry paths, not lines.

    Args:
        data: the parsed document.
        allowlist: import-path allowlist (default: built from the environment and entry points).
        expect: the config class the caller needs; another kind is an error.

    Returns:
        The validated config.

    Raises:
        ConfigError: with one `ConfigIssue` per problem.
    """
    return _validate(ParsedYaml(data=data), None, allowlist, expect, positions=False)


def _read(source: str | os.PathLike[str], filename: str | None) -> tuple[str, str]:
    if isinstance(source, str):  # text, always: a request body must never name a file to read
        text = source
    else:
        path = Path(source)
        filename = filename or str(source)
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_CONFIG_BYTES:
                raise _fail(
                    filename, f"file is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES}", "too_large"
                )
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(filename, f"file is not UTF-8 text: {exc.reason}", "encoding") from exc
        except OSError as exc:
            raise _fail(filename, f"cannot read config file: {exc.strerror or exc}", "unreadable") from exc
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise _fail(filename or "<config>", f"config is larger than {MAX_CONFIG_BYTES} bytes", "too_large")
    return text, filename or "<config>"


def _fail(filename: str, message: str, code: str) -> ConfigError:
    return ConfigError([ConfigIssue(filename, None, None, "<root>", message, code=code)])


def _validate(
    parsed: ParsedYaml,
    filename: str | None,
    allowlist: ImportAllowlist | None,
    expect: type[ConfigBase] | None,
    *,
    positions: bool = True,
) -> ConfigBase:
    report = Reporter(parsed, filename, positions)
    for problem in parsed.problems:
        report.add(problem.loc, problem.message, code=problem.code, position=problem.position)
    if parsed.fatal:
        raise ConfigError(report.issues)
    data = parsed.data
    if not isinstance(data, dict):
        report.add(
            (),
            f"a config must be a mapping with apiVersion, kind, metadata and spec, not {describe(data)}",
            code="not_a_mapping",
        )
        raise ConfigError(report.issues)
    cls = _config_class(data, report, expect)
    if cls is None:
        raise ConfigError(report.issues)
    context = {ALLOWLIST_CONTEXT_KEY: allowlist or default_allowlist(), DEFER_SEMANTICS_CONTEXT_KEY: True}
    try:
        config = cls.model_validate(data, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            report_error(error, cls, data, report)
        raise ConfigError(merge_issues(report.issues)) from None
    for issue in config.semantic_issues():
        report.semantic(issue)
    if report.issues:
        raise ConfigError(report.issues)
    return config


def _config_class(
    data: dict[str, Any], report: Reporter, expect: type[ConfigBase] | None
) -> type[ConfigBase] | None:
    kinds = sorted(CONFIG_KINDS)
    kind = data.get("kind")
    if kind is None:
        report.add(
            ("kind",), "missing required field 'kind'", code="missing", expected=one_of(kinds), parent=True
        )
        return None
    cls = CONFIG_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        report.add(
            ("kind",),
            f"unknown kind {kind!r}",
            code="unknown_kind",
            expected=one_of(kinds),
            suggestion=did_you_mean(str(kind), kinds),
        )
        return None
    if expect is not None and cls is not expect:
        wanted = next(k for k, v in CONFIG_KINDS.items() if v is expect)
        report.add(
            ("kind",),
            f"expected a {wanted} config here, got {kind}",
            code="wrong_kind",
            expected=f"'{wanted}'",
        )
        return None
    return cls
