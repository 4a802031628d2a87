"""Config problems as data: one `ConfigIssue` per mistake, many per `ConfigError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Loc = tuple[str | int, ...]


def format_path(loc: Loc) -> str:
    """Render a location as a dotted path: ``("spec", "steps", 0, "import")`` -> ``spec.steps[0].import``.

    Args:
        loc: keys and list indices from the document root.

    Returns:
        The dotted path, or ``<root>`` for the empty location.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config, located like a compiler diagnostic."""

    file: str | None
    """File name the config came from, or None for an in-memory body."""
    line: int | None
    """1-based line, or None when the input carried no positions (a parsed JSON body)."""
    column: int | None
    """1-based column, or None when the input carried no positions."""
    path: str
    """Dotted path to the offending value, e.g. ``spec.pipeline.estimator.import``."""
    message: str
    """What is wrong, in words."""
    expected: str | None = None
    """What would be accepted instead, when that can be said briefly."""
    suggestion: str | None = None
    """The likely intended value or key ("did you mean")."""
    code: str = "invalid"
    """Machine-readable kind of problem (``unknown_field``, ``missing``, ``invalid_choice``, ...)."""

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where}: {self.path}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.suggestion:
            text += f" — did you mean '{self.suggestion}'?"
        return text

    def as_dict(self) -> dict[str, Any]:
        """Return the issue as a JSON-able dict (the shape of one entry in an HTTP 422 body)."""
        return asdict(self)


@dataclass(frozen=True)
class SemanticIssue:
    """A problem found after the structure validated (cross-field checks), located by data path."""

    loc: Loc
    """Keys and indices from the document root, using the YAML spelling (aliases)."""
    message: str
    """What is wrong, in words."""
    suggestion: str | None = None
    """The likely intended value, if any."""
    expected: str | None = None
    """What would be accepted, if it can be said briefly."""
    at_key: bool = False
    """Point at the mapping key rather than its value (e.g. an unknown parameter name)."""
    code: str = "semantic"
    """Machine-readable kind of problem."""

    def __str__(self) -> str:
        text = f"{format_path(self.loc)}: {self.message}"
        if self.suggestion:
            text += f" — did you mean '{self.suggestion}'?"
        return text


class ConfigError(ValueError):
    """A config was refused; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = sorted(
            issues, key=lambda i: (i.file or "", i.line or 0, i.column or 0, i.path)
        )
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in config"
        return "\n".join([head + ":", *(str(issue) for issue in self.issues)])

    def as_dicts(self) -> list[dict[str, Any]]:
        """Return every issue as a JSON-able dict, in file order."""
        return [issue.as_dict() for issue in self.issues]
