"""Where the platform's source refers to catalog metrics, read with ``ast`` (nothing is imported or run).

A metric counts as emitted where the code names its constant: ``catalog.SCORING_ROWS`` (the module
imported under any alias, or as ``pfactory.telemetry.catalog``), or a name imported from the catalog
passed to an ``emit``/``timer`` call. A metric's name written as a string anywhere but the catalog is
a second spelling that can drift from it, and is reported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pfactory.telemetry import catalog
from pfactory.telemetry.catalog import CATALOG, Metric

CATALOG_MODULE = "pfactory.telemetry.catalog"
SOURCE_ROOTS = ("libs", "workers", "gateway", "cli")
SKIPPED_PARTS = frozenset({"tests", ".venv", "__pycache__", "build", "dist", "node_modules"})
EMITTING_CALLS = frozenset({"emit", "timer"})


def metric_constants() -> dict[str, Metric]:
    """The catalog's module-level constants, by name."""
    return {name: value for name, value in vars(catalog).items() if isinstance(value, Metric)}


def source_files(repo: Path) -> Iterator[Path]:
    """Platform source (not tests, not the catalog itself)."""
    catalog_file = Path(catalog.__file__).resolve()
    for root in SOURCE_ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            relative = path.relative_to(repo)
            if SKIPPED_PARTS & set(relative.parts) or path.resolve() == catalog_file:
                continue
            yield path


@dataclass(frozen=True)
class Reference:
    constant: str
    path: Path
    line: int


@dataclass(frozen=True)
class NameString:
    metric: str
    path: Path
    line: int


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def scan(tree: ast.AST, path: Path, constants: set[str]) -> tuple[list[Reference], list[NameString]]:
    """The catalog constants one module refers to, and the metric names it spells out as strings."""
    module_aliases: set[str] = set()  # names bound to the catalog module
    imported: dict[str, str] = {}  # local name -> catalog constant
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pfactory.telemetry":
            module_aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "catalog"}
        elif isinstance(node, ast.ImportFrom) and node.module == CATALOG_MODULE:
            imported |= {
                alias.asname or alias.name: alias.name for alias in node.names if alias.name in constants
            }
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == CATALOG_MODULE:
                    module_aliases.add(alias.asname or CATALOG_MODULE)
    references: list[Reference] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in constants
            and _dotted(node.value) in module_aliases
        ):
            references.append(Reference(node.attr, path, node.lineno))
        elif isinstance(node, ast.Call) and imported:
            called = node.func.attr if isinstance(node.func, ast.Attribute) else _dotted(node.func)
            if called not in EMITTING_CALLS:
                continue
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                if isinstance(argument, ast.Name) and argument.id in imported:
                    references.append(Reference(imported[argument.id], path, node.lineno))
    pattern = re.compile(
        r"(?<![\w.])(" + "|".join(map(re.escape, sorted(CATALOG, key=len, reverse=True))) + r")(?!\w|\.\w)"
    )
    strings = sorted(
        (
            NameString(found.group(1), path, node.lineno)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for found in pattern.finditer(node.value)
        ),
        key=lambda string: string.line,
    )
    return references, strings


def scan_source(repo: Path) -> tuple[list[Reference], list[NameString]]:
    """Every reference to a catalog constant and every spelt-out metric name in the platform's source."""
    constants = set(metric_constants())
    references: list[Reference] = []
    strings: list[NameString] = []
    for path in source_files(repo):
        found, spelt = scan(ast.parse(path.read_text(), str(path)), path.relative_to(repo), constants)
        references += found
        strings += spelt
    return references, strings
