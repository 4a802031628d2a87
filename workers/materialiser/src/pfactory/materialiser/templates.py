"""Render a feature set's Jinja SQL models for one day, in a sandbox. Pure domain code: no Spark, no network.

Each model is rendered by an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` and no
autoescaping (it is SQL, not HTML). The only loader is the user macros folder. A template sees:

``ds``
    the run date, ``YYYY-MM-DD``; ``ds_nodash`` is ``YYYYMMDD``.
``var(name, default=...)``
    a value from ``spec.vars``; an unknown name without a default is an error.
``source(name)``
    the view the engine registers for a source: ``source_view(name)`` = ``src_<name>``.
``ref(name)``
    the view the engine registers for a model: ``model_view(name)`` = ``mdl_<name>``.
built-in macros
    ``safe_divide``, ``days_ago``, ``in_last_days``, ``this_partition``, ``surrogate_key``.
user macros
    every ``{% macro %}`` in ``<macros_dir>/*.sql`` (a user macro may replace a built-in one).

Refs and sources are discovered by rendering with recording callables, never by regex, so a
``ref()`` inside a macro or a loop counts. Every problem in every model is collected and raised
together as one `TemplateError`, like a compiler.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pfactory.contracts.configs.featureset import FeatureSetConfig, SqlModel
from pfactory.contracts.suggest import did_you_mean
from pfactory.materialiser.graph import CycleError, execution_order

SOURCE_VIEW_PREFIX = "src_"
MODEL_VIEW_PREFIX = "mdl_"
RESERVED_NAMES = frozenset({"ds", "ds_nodash", "var", "source", "ref"})
MAX_RENDERED_CHARS = 2_000_000
"""Rendered SQL larger than this is refused (a runaway loop, not a feature set)."""

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


def source_view(name: str) -> str:
    """Return the name of the temporary view the engine registers for source ``name``."""
    return f"{SOURCE_VIEW_PREFIX}{name}"


def model_view(name: str) -> str:
    """Return the name of the temporary view the engine registers for model ``name``."""
    return f"{MODEL_VIEW_PREFIX}{name}"


@dataclass(frozen=True)
class TemplateIssue:
    """One problem found while rendering, located like a compiler diagnostic."""

    model: str | None
    """The model whose SQL has the problem; None for a problem in a macro file or the spec."""
    line: int | None
    """1-based line within the model's SQL (or within ``file``); None when not tied to a line."""
    message: str
    """What is wrong, in words."""
    suggestion: str | None = None
    """The likely intended name ("did you mean")."""
    file: str | None = None
    """The macro or ``sql_file`` the line refers to, when it is not the model's inline SQL."""
    code: str = "template"
    """Machine-readable kind: unknown_ref, unknown_source, unknown_var, syntax_error, undefined,
    sandbox, cycle, macro, sql_file, unknown_output, render_error."""

    def __str__(self) -> str:
        where = []
        if self.model is not None:
            where.append(f"model '{self.model}'")
        if self.file is not None:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        text = f"{', '.join(where) or 'feature set'}: {self.message}"
        if self.suggestion:
            text += f" — did you mean '{self.suggestion}'?"
        return text

    def as_dict(self) -> dict[str, Any]:
        """Return the issue as a JSON-able dict."""
        return {
            "model": self.model,
            "line": self.line,
            "message": self.message,
            "suggestion": self.suggestion,
            "file": self.file,
            "code": self.code,
        }


class TemplateError(ValueError):
    """Rendering was refused; ``issues`` lists every problem in every model."""

    def __init__(self, issues: list[TemplateIssue]) -> None:
        self.issues = issues
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in feature set templates:"
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])

    def as_dicts(self) -> list[dict[str, Any]]:
        """Return every issue as a JSON-able dict."""
        return [issue.as_dict() for issue in self.issues]


@dataclass(frozen=True)
class RenderedModel:
    """One model's SQL for one day, with what it reads."""

    name: str
    sql: str
    refs: tuple[str, ...]
    """Models it ``ref()``s, in first-use order."""
    sources: tuple[str, ...]
    """Sources it reads with ``source()``, in first-use order."""
    ref_lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)
    """The line of the first ``ref()`` call for each ref'd model."""

    @property
    def view(self) -> str:
        """The view name the engine registers this model's result under."""
        return model_view(self.name)

    @property
    def sql_hash(self) -> str:
        """The sha256 (hex) of the rendered SQL, for lineage and reruns."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RenderedFeatureSet:
    """A feature set's models rendered for one day, in execution order."""

    ds: date
    models: tuple[RenderedModel, ...]
    """In execution order: every model comes after the models it refs."""
    output: str
    """The model whose result is the feature table."""

    def model(self, name: str) -> RenderedModel:
        """Return the rendered model called ``name`` (KeyError if there is none)."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source some model reads, in first-use order."""
        return tuple(dict.fromkeys(s for m in self.models for s in m.sources))

    @property
    def sql_hashes(self) -> dict[str, str]:
        """Model name → sha256 of its rendered SQL."""
        return {m.name: m.sql_hash for m in self.models}


class SqlSandbox(ImmutableSandboxedEnvironment):
    """The sandbox for SQL templates: immutable, strict, and no attributes on callables.

    On top of Jinja's sandbox (no ``_``-prefixed attributes, no mutating methods), any attribute of
    a function, method, class or macro is refused, so ``{{ ref.anything }}`` cannot reach Python
    internals. Methods of plain values (``'x'.upper()``) still work.
    """

    def __init__(self, macros_dir: Path | None = None) -> None:
        super().__init__(
            loader=FileSystemLoader(str(macros_dir)) if macros_dir is not None else None,
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        for name in ("cycler", "joiner", "lipsum"):
            self.globals.pop(name, None)

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse ``*`` and ``**`` whose result would be huge (``'x' * 10**10``, ``9 ** 10**9``)."""
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_RENDERED_CHARS
                ):
                    raise SecurityError(f"repeating a value {times} times is over the size limit")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * abs(left).bit_length() > 4096
        ):
            raise SecurityError(f"{left} ** {right} is over the size limit")
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Refuse every attribute of a callable; otherwise defer to the immutable sandbox."""
        if callable(obj):
            return False
        return super().is_safe_attribute(obj, attr, value)


class _Usage(Exception):
    """A built-in was called wrongly; rendering of the model stops with this message."""


def render_feature_set(
    config: FeatureSetConfig,
    ds: date,
    *,
    macros_dir: Path | None = None,
    sql_root: Path | None = None,
) -> RenderedFeatureSet:
    """Render every model of a feature set for one day and order them by their refs.

    Args:
        config: the validated FeatureSet config.
        ds: the run date.
        macros_dir: a folder of ``*.sql`` files holding ``{% macro %}`` definitions, made available
            to every model; None for built-in macros only.
        sql_root: the folder ``sql_file`` paths are relative to (usually the config file's folder);
            None means the current directory. A ``sql_file`` may not leave this folder.

    Returns:
        The rendered models in execution order, with the output model's name.

    Raises:
        TemplateError: listing every problem in every model (unknown ref/source/var with line and
            did-you-mean, syntax errors, sandbox violations, cycles, missing files, bad macros).
    """
    spec = config.spec
    env = SqlSandbox(macros_dir)
    issues: list[TemplateIssue] = []
    macro_files = _load_macro_files(env, macros_dir, issues)
    model_names = [m.name for m in spec.models]
    rendered: list[RenderedModel] = []
    for model in spec.models:
        text = _model_text(model, sql_root, issues)
        if text is None:
            continue
        recorder = _Recorder(model.name, model_names, list(spec.sources), spec.vars, issues)
        recorder.file = model.sql_file
        result = _render_model(env, model, text, ds, recorder, macro_files, issues)
        rendered.append(
            RenderedModel(
                name=model.name,
                sql=result or "",
                refs=tuple(recorder.refs),
                sources=tuple(recorder.sources),
                ref_lines=dict(recorder.ref_lines),
            )
        )
    output = spec.output_model
    if output not in model_names:
        issues.append(
            TemplateIssue(
                None,
                None,
                f"output '{output}' is not one of the models",
                suggestion=did_you_mean(output, model_names),
                code="unknown_output",
            )
        )
    try:
        ordered = execution_order(rendered)
    except CycleError as exc:
        ordered = rendered
        for cycle in exc.cycles:
            for model_name, target in cycle.edges():
                line = next(m.ref_lines.get(target) for m in rendered if m.name == model_name)
                issues.append(
                    TemplateIssue(
                        model_name,
                        line,
                        f"ref('{target}') closes a cycle: {cycle.path()}",
                        file=_file_of(spec.models[model_names.index(model_name)]),
                        code="cycle",
                    )
                )
    if issues:
        raise TemplateError(_sorted_issues(issues, model_names))
    return RenderedFeatureSet(ds=ds, models=tuple(ordered), output=output)


def _sorted_issues(issues: list[TemplateIssue], model_names: list[str]) -> list[TemplateIssue]:
    rank = {name: i for i, name in enumerate(model_names)}

    def key(issue: TemplateIssue) -> tuple[int, str, int]:
        position = -1 if issue.model is None else rank.get(issue.model, len(rank))
        return (position, issue.file or "", issue.line or 0)

    return sorted(issues, key=key)  # stable: same-line issues keep discovery order


def _file_of(model: SqlModel) -> str | None:
    return model.sql_file


def _model_text(model: SqlModel, sql_root: Path | None, issues: list[TemplateIssue]) -> str | None:
    if model.sql is not None:
        return model.sql
    assert model.sql_file is not None  # the config guarantees exactly one of sql / sql_file
    root = (sql_root or Path.cwd()).resolve()
    path = (root / model.sql_file).resolve()
    if not path.is_relative_to(root):
        issues.append(
            TemplateIssue(
                model.name,
                None,
                f"sql_file '{model.sql_file}' is outside the config folder '{root}'",
                file=model.sql_file,
                code="sql_file",
            )
        )
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issues.append(
            TemplateIssue(
                model.name,
                None,
                f"cannot read sql_file '{model.sql_file}': {reason}",
                file=model.sql_file,
                code="sql_file",
            )
        )
        return None


def _load_macro_files(env: SqlSandbox, macros_dir: Path | None, issues: list[TemplateIssue]) -> list[str]:
    """Compile each macro file once, reporting syntax errors; return the names of the good ones."""
    if macros_dir is None:
        return []
    if not macros_dir.is_dir():
        issues.append(TemplateIssue(None, None, f"macros folder '{macros_dir}' does not exist", code="macro"))
        return []
    good = []
    for path in sorted(macros_dir.glob("*.sql")):
        try:
            env.get_template(path.name)
        except TemplateSyntaxError as exc:
            issues.append(
                TemplateIssue(
                    None, exc.lineno, f"syntax error: {exc.message}", file=path.name, code="syntax_error"
                )
            )
            continue
        good.append(path.name)
    return good


def _render_model(
    env: SqlSandbox,
    model: SqlModel,
    text: str,
    ds: date,
    recorder: _Recorder,
    macro_files: list[str],
    issues: list[TemplateIssue],
) -> str | None:
    filename = f"<model {model.name}>"
    recorder.template_filename = filename
    file = model.sql_file
    try:
        code = env.compile(text, name=filename, filename=filename)
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
    except TemplateSyntaxError as exc:
        issues.append(
            TemplateIssue(
                model.name, exc.lineno, f"syntax error: {exc.message}", file=file, code="syntax_error"
            )
        )
        return None
    context: dict[str, Any] = {
        "ds": ds.isoformat(),
        "ds_nodash": ds.strftime("%Y%m%d"),
        "var": recorder.var,
        "source": recorder.source,
        "ref": recorder.ref,
    }
    context.update(builtin_macros(ds))
    for macro_file in macro_files:
        recorder.recording = False  # a macro file's top-level text is not part of any model
        macro_template = env.get_template(macro_file)
        try:
            module = macro_template.make_module(vars=dict(context))
        except Exception as exc:  # a macro file's top-level code failed: report once, keep going
            traced = macro_template.filename or macro_file
            _add_once(issues, _exception_issue(exc, None, traced, macro_file))
            return None
        finally:
            recorder.recording = True
        for name, value in vars(module).items():
            if not isinstance(value, Macro):
                continue
            if name in RESERVED_NAMES:
                _add_once(
                    issues,
                    TemplateIssue(
                        None,
                        None,
                        f"macro '{name}' would hide the built-in '{name}'",
                        file=macro_file,
                        code="macro",
                    ),
                )
                continue
            context[name] = value
    try:
        sql = template.render(context)
    except Exception as exc:  # every template failure becomes an issue; nothing escapes the sandbox
        issues.append(_exception_issue(exc, model.name, filename, file))
        return None
    if len(sql) > MAX_RENDERED_CHARS:
        issues.append(
            TemplateIssue(
                model.name,
                None,
                f"rendered SQL is {len(sql)} characters (limit {MAX_RENDERED_CHARS})",
                file=file,
                code="render_error",
            )
        )
        return None
    return sql


def _add_once(issues: list[TemplateIssue], issue: TemplateIssue) -> None:
    if issue not in issues:
        issues.append(issue)


def _exception_issue(exc: BaseException, model: str | None, filename: str, file: str | None) -> TemplateIssue:
    line = _template_line(exc.__traceback__, filename)
    if isinstance(exc, SecurityError):
        return TemplateIssue(
            model, line, f"refused by the template sandbox: {exc}", file=file, code="sandbox"
        )
    if isinstance(exc, UndefinedError):
        return TemplateIssue(model, line, f"undefined: {exc}", file=file, code="undefined")
    if isinstance(exc, TemplateSyntaxError):
        return TemplateIssue(
            model, exc.lineno, f"syntax error: {exc.message}", file=file, code="syntax_error"
        )
    if isinstance(exc, _Usage):
        return TemplateIssue(model, line, str(exc), file=file, code="render_error")
    return TemplateIssue(
        model, line, f"rendering failed: {type(exc).__name__}: {exc}", file=file, code="render_error"
    )


def _template_line(tb: types.TracebackType | None, filename: str) -> int | None:
    """The innermost line of ``filename`` in a (Jinja-rewritten) traceback."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            template = tb.tb_frame.f_globals.get("__jinja_template__")  # set when not rewritten by Jinja
            line = template.get_corresponding_lineno(tb.tb_lineno) if template is not None else tb.tb_lineno
        tb = tb.tb_next
    return line


def _calling_line(filename: str) -> int | None:
    """The line of the model template currently executing, found by walking the Python stack."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None and frame.f_code.co_filename == filename:
            line: int = template.get_corresponding_lineno(frame.f_lineno)
            return line
        frame = frame.f_back
    return None


class _Recorder:
    """The ``ref``/``source``/``var`` callables of one model: they record uses and problems."""

    def __init__(
        self,
        model: str,
        models: list[str],
        sources: list[str],
        variables: Mapping[str, Any],
        issues: list[TemplateIssue],
    ) -> None:
        self.model = model
        self.models = models
        self.known_sources = sources
        self.variables = variables
        self.issues = issues
        self.refs: list[str] = []
        self.sources: list[str] = []
        self.ref_lines: dict[str, int] = {}
        self.template_filename = ""
        self._reported: set[tuple[str, str]] = set()
        self.recording = True
        self.file: str | None = None

    def _issue(self, kind: str, name: str, message: str, suggestion: str | None) -> None:
        if (
            not self.recording or (kind, name) in self._reported
        ):  # one issue per unknown name per model, at its first use
            return
        self._reported.add((kind, name))
        line = _calling_line(self.template_filename)
        self.issues.append(
            TemplateIssue(self.model, line, message, suggestion=suggestion, file=self.file, code=kind)
        )

    def ref(self, name: object) -> str:
        """Return the view of model ``name`` and record the dependency."""
        name = _name_argument("ref", name)
        if name not in self.models:
            self._issue(
                "unknown_ref",
                name,
                f"ref('{name}'): no model named '{name}'",
                did_you_mean(name, self.models),
            )
            return model_view(name)
        if self.recording and name not in self.refs:
            self.refs.append(name)
            line = _calling_line(self.template_filename)
            if line is not None:
                self.ref_lines[name] = line
        return model_view(name)

    def source(self, name: object) -> str:
        """Return the view of source ``name`` and record the read."""
        name = _name_argument("source", name)
        if name not in self.known_sources:
            self._issue(
                "unknown_source",
                name,
                f"source('{name}'): no source named '{name}'",
                did_you_mean(name, self.known_sources),
            )
            return source_view(name)
        if self.recording and name not in self.sources:
            self.sources.append(name)
        return source_view(name)

    def var(self, name: object, default: Any = _MISSING) -> Any:
        """Return ``spec.vars[name]``, else ``default``; an unknown name without default is an issue."""
        name = _name_argument("var", name)
        if name in self.variables:
            return self.variables[name]
        if default is not _MISSING:
            return default
        self._issue(
            "unknown_var",
            name,
            f"var('{name}'): no var named '{name}' and no default given",
            did_you_mean(name, self.variables),
        )
        return f"<missing var {name}>"


def _name_argument(function: str, name: object) -> str:
    if not isinstance(name, str):
        raise _Usage(f"{function}() takes a name string, got {type(name).__name__}")
    return name


def _sql_int(function: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            return int(str(value))
        except ValueError:
            raise _Usage(f"{function}() needs a whole number of days, got {value!r}") from None
    return value


def builtin_macros(ds: date) -> dict[str, Callable[..., str]]:
    """Return the built-in macros for run date ``ds`` (each returns a SQL fragment).

    Args:
        ds: the run date.

    Returns:
        ``safe_divide(a, b)`` → ``(a) / nullif(b, 0)`` (null, never an error, on a zero divisor);
        ``days_ago(n)`` → ``date_sub('<ds>', n)``;
        ``in_last_days(column, n)`` → ``column between date_sub('<ds>', n) and '<ds>'``;
        ``this_partition(column='ds')`` → ``column = '<ds>'``;
        ``surrogate_key(*columns)`` → ``sha2(concat_ws('||', coalesce(cast(c as string), '∅'), ...), 256)``.
    """
    day = ds.isoformat()

    def safe_divide(numerator: object, denominator: object) -> str:
        return f"({numerator}) / nullif({denominator}, 0)"

    def days_ago(n: object) -> str:
        return f"date_sub('{day}', {_sql_int('days_ago', n)})"

    def in_last_days(column: object, n: object) -> str:
        return f"{column} between date_sub('{day}', {_sql_int('in_last_days', n)}) and '{day}'"

    def this_partition(column: object = "ds") -> str:
        return f"{column} = '{day}'"

    def surrogate_key(*columns: object) -> str:
        if not columns:
            raise _Usage("surrogate_key() needs at least one column")
        parts = ", ".join(f"coalesce(cast({c} as string), '∅')" for c in columns)
        return f"sha2(concat_ws('||', {parts}), 256)"

    return {
        "safe_divide": safe_divide,
        "days_ago": days_ago,
        "in_last_days": in_last_days,
        "this_partition": this_partition,
        "surrogate_key": surrogate_key,
    }
