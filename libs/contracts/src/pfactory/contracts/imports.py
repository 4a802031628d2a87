"""Import-path allowlist: which classes a config may name, decided without importing anything.

A config names estimators and transformers by dotted path (``sklearn.ensemble.RandomForestClassifier``).
Those paths are checked here as text: syntax, then an allowlist of prefixes (plus whatever installed
packages register under the ``pfactory.estimators`` entry-point group, read from package metadata).
Nothing in this module imports the target; the trainer imports only paths that passed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.contracts.catalog import KNOWN_IMPORT_PATHS
from pfactory.contracts.suggest import similarity

ENTRY_POINT_GROUP = "pfactory.estimators"
DEFAULT_ALLOWED_PREFIXES = ("sklearn.", "lightgbm.", "xgboost.", "pfactory.adapters.")
MAX_IMPORT_PATH_LENGTH = 200
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH_PATTERN = rf"^{_SEGMENT}(\.{_SEGMENT})+$"
_PATH_RE = re.compile(IMPORT_PATH_PATTERN)
_TYPO_CUTOFF = 0.9
_SUGGEST_CUTOFF = 0.6


class ImportSettings(BaseSettings):
    """Where estimator classes may come from (env prefix ``PF_IMPORTS_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_IMPORTS_", extra="forbid")

    allowed_prefixes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_PREFIXES),
        description="Module prefixes a config may import from; 'pkg' and 'pkg.' both mean the package "
        "and everything below it. Set as JSON: PF_IMPORTS_ALLOWED_PREFIXES='[\"sklearn.\"]'.",
    )
    extra_prefixes: list[str] = Field(
        default_factory=list,
        description="Prefixes added to allowed_prefixes, so a deployment can extend the defaults "
        "without restating them.",
    )
    entry_point_group: str = Field(
        default=ENTRY_POINT_GROUP,
        description="Entry-point group whose registered modules/classes are allowed too.",
    )
    use_entry_points: bool = Field(
        default=True, description="Whether to allow what installed packages register in the group."
    )


def _as_prefix(prefix: str) -> str:
    return prefix if prefix.endswith(".") else prefix + "."


@dataclass(frozen=True)
class ImportAllowlist:
    """The resolved allowlist: module prefixes plus exact ``module.Class`` paths."""

    prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES
    """Allowed prefixes, each ending with a dot."""
    exact: frozenset[str] = field(default_factory=frozenset)
    """Individually allowed ``module.Class`` paths (from entry points)."""

    @classmethod
    def from_settings(cls, settings: ImportSettings) -> ImportAllowlist:
        """Build the allowlist from settings and the entry-point group.

        Reading entry points reads package metadata only; no module is imported.

        Args:
            settings: the allowlist settings.

        Returns:
            The resolved allowlist.
        """
        prefixes = [_as_prefix(p) for p in (*settings.allowed_prefixes, *settings.extra_prefixes) if p]
        exact: set[str] = set()
        if settings.use_entry_points:
            for ep in entry_points(group=settings.entry_point_group):
                module, _, attr = ep.value.partition(":")
                module, attr = module.strip(), attr.strip().split(" ")[0]
                target = f"{module}.{attr}" if attr else module
                if not _PATH_RE.match(target) and not re.fullmatch(_SEGMENT, target):
                    continue
                if attr:
                    exact.add(target)
                else:
                    prefixes.append(_as_prefix(module))
        return cls(prefixes=tuple(dict.fromkeys(prefixes)), exact=frozenset(exact))

    def allows(self, path: str) -> bool:
        """Return whether ``path`` is covered by a prefix or an exact entry (syntax not checked)."""
        return path in self.exact or any(path.startswith(p) for p in self.prefixes)

    def describe(self) -> str:
        """Render the allowlist for an error message."""
        parts = [f"'{p}*'" for p in self.prefixes] + [f"'{p}'" for p in sorted(self.exact)]
        return ", ".join(parts) or "nothing"


def default_allowlist() -> ImportAllowlist:
    """The allowlist of the environment (``PF_IMPORTS_*``) and the installed entry points.

    Reading entry points scans every installed package's metadata (~12 ms, on every config validated
    by the gateway and the trainer), so the result is kept per process while the ``PF_IMPORTS_*``
    variables stay the same (a fork server's children inherit it): a package installed while a
    service runs is allowed once the service restarts.
    """
    prefix = str(ImportSettings.model_config.get("env_prefix", "")).upper()
    settings = tuple(sorted((k.upper(), v) for k, v in os.environ.items() if k.upper().startswith(prefix)))
    return _allowlist_for(settings)


@cache
def _allowlist_for(settings: tuple[tuple[str, str], ...]) -> ImportAllowlist:
    """What ``ImportSettings()`` gives while the environment holds ``settings`` (the cache key)."""
    return ImportAllowlist.from_settings(ImportSettings())


class DisallowedImportError(ValueError):
    """An import path a config may not use; returned (or raised) before anything is imported."""

    def __init__(
        self, path: str, reason: str, *, code: str, suggestion: str | None = None, expected: str | None = None
    ) -> None:
        self.path = path
        self.reason = reason
        self.code = code
        self.suggestion = suggestion
        self.expected = expected
        text = reason + (f" — did you mean '{suggestion}'?" if suggestion else "")
        super().__init__(text)


def suggest_import_path(path: str, *, cutoff: float = _SUGGEST_CUTOFF) -> str | None:
    """Return the catalogued import path that ``path`` most likely meant, or None.

    A path whose class name exists in the catalog under another module suggests that module;
    otherwise module and class name are compared separately, so a long shared prefix does
    not make unrelated classes look alike.

    Args:
        path: the dotted path as written.
        cutoff: minimum similarity of both module and class name.

    Returns:
        A catalogued path, or None when nothing is close (or ``path`` itself is catalogued).
    """
    if path in KNOWN_IMPORT_PATHS:
        return None
    module, _, name = path.rpartition(".")
    best: tuple[float, str] | None = None
    for known in sorted(KNOWN_IMPORT_PATHS):
        k_module, _, k_name = known.rpartition(".")
        name_score = 1.0 if k_name == name else similarity(name, k_name)
        module_score = similarity(module, k_module)
        if name_score == 1.0 and name:
            module_score = max(module_score, cutoff)
        if name_score < cutoff or module_score < cutoff:
            continue
        score = name_score * 2 + module_score
        if best is None or score > best[0]:
            best = (score, known)
    return best[1] if best else None


def _syntax_problem(path: str) -> str | None:
    if not path:
        return "import path is empty"
    if len(path) > MAX_IMPORT_PATH_LENGTH:
        return f"import path is {len(path)} characters long; the limit is {MAX_IMPORT_PATH_LENGTH}"
    if path.startswith("."):
        return f"relative import path '{path}' is not allowed: write the absolute 'package.module.Class'"
    segments = path.split(".")
    if any(s.startswith("__") for s in segments):
        return f"import path '{path}' has a dunder segment; only public module and class names are allowed"
    if not _PATH_RE.match(path):
        if "" in segments:
            return f"import path '{path}' has an empty segment (two dots in a row or a trailing dot)"
        if len(segments) < 2:
            return f"import path '{path}' must name a module and a class, like 'sklearn.linear_model.Ridge'"
        return f"import path '{path}' must be dotted Python identifiers, like 'sklearn.linear_model.Ridge'"
    return None


def _is_private_home(path: str, known: str) -> bool:
    """Whether ``path`` is ``known`` spelled through a submodule (``sklearn.ensemble._forest.X``)."""
    module, _, name = path.rpartition(".")
    k_module, _, k_name = known.rpartition(".")
    return name == k_name and module.startswith(k_module + ".")


def check_import_path(path: str, allowlist: ImportAllowlist) -> DisallowedImportError | None:
    """Check an import path as text, never importing it.

    Refuses bad syntax (relative paths, empty or dunder segments, non-identifiers), paths outside
    the allowlist, and allowed-looking paths that are near-misses of a catalogued class.

    Args:
        path: the dotted path from the config.
        allowlist: what may be imported.

    Returns:
        None when the path is acceptable, else the error to report (not raised).
    """
    problem = _syntax_problem(path)
    if problem is not None:
        return DisallowedImportError(
            path, problem, code="invalid_import_path", expected="'package.module.Class'"
        )
    if not allowlist.allows(path):
        return DisallowedImportError(
            path,
            f"import path '{path}' is not allowed: configs may only import from {allowlist.describe()}; "
            f"register other estimators under the '{ENTRY_POINT_GROUP}' entry-point group",
            code="disallowed_import",
            suggestion=suggest_import_path(path),
        )
    if path not in allowlist.exact:
        typo = suggest_import_path(path, cutoff=_TYPO_CUTOFF)
        if typo is not None and not _is_private_home(path, typo):
            return DisallowedImportError(
                path, f"unknown import path '{path}'", code="unknown_import", suggestion=typo
            )
    return None


def require_allowed_import(path: str, allowlist: ImportAllowlist) -> None:
    """Raise `DisallowedImportError` unless ``check_import_path`` accepts ``path``.

    Args:
        path: the dotted path to check.
        allowlist: what may be imported.

    Raises:
        DisallowedImportError: the path is refused.
    """
    error = check_import_path(path, allowlist)
    if error is not None:
        raise error
