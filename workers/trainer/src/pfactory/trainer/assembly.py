"""Assemble a scikit-learn ``Pipeline`` from a Model config, and check it has the estimator interface.

Classes are named by import path in the config. A path is imported only after the allowlist accepted
it (:func:`pfactory.contracts.imports.require_allowed_import`), so a refused path never reaches
``sys.modules``. Sweep overrides use the config's dotted paths (``estimator.max_depth``,
``<step>.<param>``, ``<column_transformer>.<transformer>.<param>``); in the assembled pipeline they
are scikit-learn's ``__`` paths (``estimator__max_depth``, ``prep__numeric__with_mean``).
"""

from __future__ import annotations

import importlib
import inspect
import platform
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from typing import Any

from pydantic import JsonValue
from sklearn.base import clone, is_classifier, is_regressor  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer, make_column_selector  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from pfactory.contracts.configs.metrics import Task
from pfactory.contracts.configs.model import ModelSpec
from pfactory.contracts.configs.pipeline import ColumnTransformerStep, DtypeSelector, TransformerStep
from pfactory.contracts.imports import (
    ENTRY_POINT_GROUP,
    DisallowedImportError,
    ImportAllowlist,
    require_allowed_import,
)
from pfactory.contracts.suggest import did_you_mean, one_of

ADAPTER_GUIDE = "examples/adapters/README.md"
ESTIMATOR_STEP = "estimator"
_DTYPES: Mapping[DtypeSelector, tuple[str, ...]] = {
    DtypeSelector.NUMERIC: ("number",),  # pandas' "number" excludes bool, includes nullable Int64/Float64
    DtypeSelector.CATEGORICAL: ("object", "category", "string"),
    DtypeSelector.BOOLEAN: ("bool", "boolean"),
    DtypeSelector.DATETIME: ("datetime", "datetimetz"),
}
_LABELS = {"sklearn": "scikit-learn"}  # import names better known by their distribution's name
_COLUMN_TRANSFORMER = "sklearn.compose.ColumnTransformer"


class AssemblyError(ValueError):
    """The pipeline cannot be built from the config: a class, a parameter or a path is wrong."""


class InterfaceError(ValueError):
    """An estimator or pipeline lacks part of the scikit-learn interface the trainer relies on."""

    def __init__(self, name: str, task: Task, problems: list[str]) -> None:
        self.name = name
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"'{name}' cannot be trained for task '{task.value}': it lacks part of the scikit-learn "
            f"estimator interface:\n{listed}\nUse a class that has it, or wrap the library in an adapter "
            f"(sklearn.base.BaseEstimator with ClassifierMixin or RegressorMixin) registered under the "
            f"'{ENTRY_POINT_GROUP}' entry-point group; see {ADAPTER_GUIDE}."
        )


def build_pipeline(
    spec: ModelSpec, *, allowlist: ImportAllowlist, params: Mapping[str, JsonValue] | None = None
) -> Pipeline:
    """Build the configured pipeline (unfitted) and check its interface.

    Args:
        spec: the validated model spec.
        allowlist: which import paths may be imported.
        params: sweep overrides by the config's dotted path, e.g. ``{"estimator.max_depth": 5}``.

    Returns:
        A ``Pipeline`` whose steps carry the config's step names; the last one is ``estimator``.

    Raises:
        DisallowedImportError: an import path is refused (nothing was imported).
        AssemblyError: a class cannot be imported or constructed with its parameters.
        InterfaceError: the estimator or the pipeline lacks part of the estimator interface.
    """
    make = _Maker(allowlist, _group_overrides(spec, params or {}))
    built: list[tuple[str, Any]] = []
    for i, step in enumerate(spec.pipeline.steps):
        where = f"spec.pipeline.steps[{i}]"
        obj = make.step(step, where)
        # Only a step followed by one that selects columns needs DataFrame output: pandas output
        # refuses sparse matrices, and feature names with JSON characters upset LightGBM and XGBoost.
        if any(_selects_columns(later) for later in spec.pipeline.steps[i + 1 :]):
            if not callable(getattr(obj, "set_output", None)):
                raise AssemblyError(
                    f"{where} ('{step.name}') must output a DataFrame because a later step selects "
                    f"columns by name or type, but {type(obj).__name__} has no set_output(); move the "
                    "column-selecting step before it"
                )
            obj.set_output(transform="pandas")
        built.append((step.name, obj))
    path = spec.pipeline.estimator.import_path
    estimator = make(path, spec.pipeline.estimator.params, ESTIMATOR_STEP, "spec.pipeline.estimator")
    check_interface(estimator, spec.task, name=path)
    pipeline = Pipeline([*built, (ESTIMATOR_STEP, estimator)])
    check_interface(pipeline, spec.task, name=f"the pipeline ending in {path}")
    return pipeline


def sklearn_param_path(key: str) -> str:
    """The scikit-learn ``set_params`` path of a config's sweep key (``prep.numeric.with_mean``)."""
    return key.replace(".", "__")


def _selects_columns(step: TransformerStep | ColumnTransformerStep) -> bool:
    return isinstance(step, ColumnTransformerStep) or bool(step.columns or step.dtype_include)


def _selector(columns: list[str] | None, dtypes: list[DtypeSelector] | None) -> Any:
    if columns is not None:
        return list(columns)
    return make_column_selector(dtype_include=[name for d in dtypes or [] for name in _DTYPES[d]])


def _group_overrides(spec: ModelSpec, params: Mapping[str, JsonValue]) -> dict[str, dict[str, JsonValue]]:
    """Sort sweep overrides by target, with the loader's path rules (``model_checks._sweep_key_issues``)."""
    targets = [ESTIMATOR_STEP]
    for step in spec.pipeline.steps:
        targets.append(step.name)
        if isinstance(step, ColumnTransformerStep):
            targets += [f"{step.name}.{entry.name}" for entry in step.transformers]
    grouped: dict[str, dict[str, JsonValue]] = {}
    for key, value in params.items():
        target, _, name = key.rpartition(".")
        if not target or not name:
            raise AssemblyError(
                f"sweep parameter '{key}' must be '<step>.<param>', e.g. 'estimator.max_depth'"
            )
        if target not in targets:
            guess = did_you_mean(target, targets)
            hint = f"did you mean '{guess}.{name}'? " if guess else ""
            raise AssemblyError(
                f"sweep parameter '{key}' targets unknown step '{target}'; {hint}steps are {one_of(targets)}"
            )
        grouped.setdefault(target, {})[name] = value
    return grouped


@dataclass(frozen=True)
class _Maker:
    """Imports allowed classes and constructs them with config params plus sweep overrides."""

    allowlist: ImportAllowlist
    overrides: Mapping[str, dict[str, JsonValue]]

    def step(self, step: TransformerStep | ColumnTransformerStep, where: str) -> Any:
        if isinstance(step, TransformerStep):
            obj = self(step.import_path, step.params, step.name, where)
            if not _selects_columns(step):
                return obj
            # A step limited to some columns transforms those and passes the others through unchanged.
            selected = [(step.name, obj, _selector(step.columns, step.dtype_include))]
            return ColumnTransformer(selected, remainder="passthrough", verbose_feature_names_out=False)
        transformers = [
            (
                entry.name,
                self(
                    entry.import_path, entry.params, f"{step.name}.{entry.name}", f"{where}.transformers[{j}]"
                ),
                _selector(entry.columns, entry.dtype_include),
            )
            for j, entry in enumerate(step.transformers)
        ]
        own = {"remainder": step.remainder}
        return self(
            _COLUMN_TRANSFORMER, own, step.name, where, cls=ColumnTransformer, transformers=transformers
        )

    def __call__(
        self,
        path: str,
        params: Mapping[str, JsonValue],
        target: str,
        where: str,
        *,
        cls: type | None = None,
        **fixed: Any,
    ) -> Any:
        cls = cls or _import_class(path, self.allowlist, where)
        swept = self.overrides.get(target, {})
        kwargs = {**params, **swept}

        def origin(name: str) -> str:
            return f"spec.sweep.params['{target}.{name}']" if name in swept else f"{where}.params.{name}"

        accepted = _accepted_params(cls)
        unknown = [n for n in kwargs if accepted is not None and n not in accepted]
        if accepted is not None and unknown:
            guess = did_you_mean(unknown[0], accepted)
            hint = f"did you mean '{guess}'? " if guess else ""
            raise AssemblyError(
                f"{origin(unknown[0])}: {path} has no parameter '{unknown[0]}'; {hint}"
                f"it accepts {', '.join(accepted)}"
            )
        try:
            obj = cls(**fixed, **kwargs)
        except Exception as exc:
            raise AssemblyError(f"{where}: constructing {path} failed: {type(exc).__name__}: {exc}") from exc
        # scikit-learn checks parameter values only in fit; its validator (private, but stable since
        # 1.2) lets a wrong value fail here, before any data is loaded, with a message naming the param.
        if "_parameter_constraints" in dir(cls) and callable(getattr(obj, "_validate_params", None)):
            try:
                obj._validate_params()
            except ValueError as exc:
                names = [n for n in kwargs if f"'{n}'" in str(exc)]
                raise AssemblyError(f"{origin(names[0]) if names else where}: {exc}") from exc
        return obj


def _import_class(path: str, allowlist: ImportAllowlist, where: str) -> type:
    try:
        require_allowed_import(path, allowlist)
    except DisallowedImportError as exc:
        raise DisallowedImportError(
            path, f"{where}: {exc.reason}", code=exc.code, suggestion=exc.suggestion, expected=exc.expected
        ) from None
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        top = module_name.partition(".")[0]
        raise AssemblyError(
            f"{where}: cannot import module '{module_name}' for '{path}' ({exc}); install the package "
            f"that provides it in the trainer's environment (e.g. 'uv add {_LABELS.get(top, top)}')"
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        public = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
        guess = did_you_mean(class_name, public)
        what = "is not a class" if cls is not None else "does not exist"
        hint = f"; did you mean '{module_name}.{guess}'?" if guess else ""
        raise AssemblyError(f"{where}: '{class_name}' in module '{module_name}' {what}{hint}")
    return cls


def _accepted_params(cls: type) -> list[str] | None:
    """Constructor keyword names, or None when the class takes ``**kwargs`` (anything goes)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_interface(obj: object, task: Task, *, name: str | None = None) -> None:
    """Check that an estimator instance (or a pipeline) can be trained and evaluated for ``task``.

    Args:
        obj: the constructed estimator or pipeline (not fitted).
        task: the model's task.
        name: how to name ``obj`` in the message (default: its class's import path).

    Raises:
        InterfaceError: listing every missing piece and how to fix it.
    """
    classification = task is not Task.REGRESSION
    needed = ["fit", "predict", *(["predict_proba"] if classification else []), "get_params", "set_params"]
    problems: list[str] = []
    for method in needed:
        try:
            if not callable(getattr(obj, method)):
                problems.append(f"{method} is not a method")
        except AttributeError as exc:
            root: BaseException = exc  # keep the reason a class gives (SVC: "... when probability=False")
            while root.__cause__ is not None:
                root = root.__cause__
            detail = "" if "has no attribute" in str(root) else f" ({root})"
            problems.append(f"no {method}() method{detail}")
    if callable(getattr(obj, "get_params", None)):
        try:
            clone(obj)
        except Exception as exc:
            problems.append(
                f"sklearn.base.clone fails ({type(exc).__name__}: {exc}); sweeps and ensembles clone "
                "estimators, so __init__ must store each argument unchanged under its own name"
            )
    problems += _type_problems(obj, classification)
    if problems:
        raise InterfaceError(name or f"{type(obj).__module__}.{type(obj).__qualname__}", task, problems)


def _type_problems(obj: object, classification: bool) -> list[str]:
    want, mixin = ("classifier", "ClassifierMixin") if classification else ("regressor", "RegressorMixin")
    try:
        kind = "classifier" if is_classifier(obj) else "regressor" if is_regressor(obj) else None
    except Exception as exc:
        return [f"it declares no estimator type ({type(exc).__name__}); inherit {mixin} and BaseEstimator"]
    if kind == want:
        return []
    actual = f"it is a {kind}" if kind else "it declares no estimator type"
    return [f"{actual}, the task needs a {want}: inherit sklearn.base.{mixin} (before BaseEstimator)"]


def installed_adapters(group: str = ENTRY_POINT_GROUP) -> dict[str, str]:
    """The estimator adapters installed packages register, ``{name: module or module:attr}``.

    Reads package metadata only; nothing is imported.
    """
    return {ep.name: ep.value for ep in entry_points(group=group)}


def framework_info(model: object) -> dict[str, str]:
    """Name the framework of a pipeline's (or ensemble's) estimator and the library versions involved.

    Args:
        model: a pipeline, an estimator, or a voting/stacking ensemble of pipelines.

    Returns:
        ``{"framework": "scikit-learn" | "lightgbm" | "xgboost" | <adapter distribution>,
        "python": ..., <library>: <version>, ...}`` for numpy, scikit-learn and every library a
        component comes from (an adapter brings its own requirements).
    """
    info = {"framework": _library(_final_estimator(model))}
    for name in sorted({"scikit-learn", "numpy"} | {_library(c) for c in _components(model)}):
        info.update(_versions(name))
    info["python"] = platform.python_version()
    return info


def _final_estimator(model: object) -> object:
    if isinstance(model, Pipeline):
        return _final_estimator(model.steps[-1][1])
    members = getattr(model, "estimators", None)
    if isinstance(members, list) and members and isinstance(members[0], tuple):
        return _final_estimator(members[0][1])  # ensemble members come from one spec
    return model


def _components(model: object) -> Iterator[object]:
    yield model
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        for value in get_params(deep=True).values():
            if callable(getattr(value, "fit", None)) and not isinstance(value, type):
                yield value


@cache
def _adapters() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Adapter module -> (its distribution, the distributions it requires), from package metadata."""
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            requires = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r) for r in ep.dist.requires or [])
            found[ep.module] = (ep.dist.name, tuple(m.group(0) for m in requires if m))
    return found


def _library(obj: object) -> str:
    module = type(obj).__module__
    for prefix, (dist, _) in _adapters().items():
        if module == prefix or module.startswith(prefix + "."):
            return dist
    top = module.partition(".")[0]
    return _LABELS.get(top, top)


@cache
def _distributions() -> Mapping[str, list[str]]:
    return packages_distributions()  # reads every installed package's metadata: once per process


def warm_caches() -> None:
    """Read package metadata now (a fork server calls this once, so runs forked from it do not)."""
    _adapters()
    for library in ("scikit-learn", "numpy", "lightgbm", "xgboost"):
        _versions(library)


@cache
def _versions(library: str) -> dict[str, str]:
    names = [library, *(req for dist, reqs in _adapters().values() if dist == library for req in reqs)]
    out = {}
    for name in names:
        # an import name may differ from its distribution's (xgboost ships as xgboost-cpu too)
        for dist in (name, *_distributions().get(name, [])):
            try:
                out[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out
