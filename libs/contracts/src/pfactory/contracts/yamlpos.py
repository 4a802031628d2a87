"""YAML parsing that remembers where every key and value was, and refuses duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pfactory.contracts.issues import Loc

MAX_NODES = 100_000
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """Safe loader that keeps dates as text, so YAML and JSON inputs validate identically."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)  # type: ignore[type-var]


@dataclass(frozen=True)
class Position:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading YAML, before any schema check."""

    loc: Loc
    position: Position
    message: str
    code: str
    fatal: bool = False


@dataclass
class ParsedYaml:
    """A parsed document with the positions of its values and mapping keys."""

    data: object = None
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        """Whether the document could not be read at all."""
        return any(p.fatal for p in self.problems)


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, parsed: ParsedYaml) -> None:
        self.parsed = parsed
        self.constructor = _Loader("")
        self.visited = 0

    def build(self, node: Node, loc: Loc) -> object:
        self.visited += 1
        if self.visited > MAX_NODES or len(loc) > MAX_DEPTH:
            what = (
                f"more than {MAX_NODES} values"
                if self.visited > MAX_NODES
                else f"nesting deeper than {MAX_DEPTH}"
            )
            raise _Abort(YamlProblem(loc, _position(node), f"document has {what}", "too_large", fatal=True))
        self.parsed.values[loc] = _position(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self.constructor.construct_object(node)

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, object]:
        own = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        self.constructor.flatten_mapping(node)
        result: dict[str, object] = {}
        first_seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._problem(loc, key_node, "mapping keys must be plain strings", "invalid_key")
                continue
            raw = self.constructor.construct_object(key_node)
            if isinstance(raw, bool) or raw is None:
                self._problem(
                    loc,
                    key_node,
                    f"key '{key_node.value}' reads as {raw!r}; quote it to use it as a name",
                    "invalid_key",
                )
                continue
            key = str(raw)
            earlier = first_seen.get(key)
            if earlier is not None and id(earlier) in own and id(key_node) in own:
                line = earlier.start_mark.line + 1
                self._problem(
                    (*loc, key),
                    key_node,
                    f"duplicate key '{key}' (first defined on line {line}); remove one of them",
                    "duplicate_key",
                )
            first_seen[key] = key_node
            self.parsed.keys[(*loc, key)] = _position(key_node)
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _problem(self, loc: Loc, node: Node, message: str, code: str) -> None:
        self.parsed.problems.append(YamlProblem(loc, _position(node), message, code))


class _Abort(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def parse_yaml(text: str) -> ParsedYaml:
    """Parse one YAML (or JSON) document, recording positions and problems instead of raising.

    Args:
        text: the document.

    Returns:
        The data (plain dicts, lists and scalars; dates stay strings), the position of every value
        and key by path, and any problems. A fatal problem means ``data`` is unusable.
    """
    parsed = ParsedYaml()
    try:
        root = yaml.compose(text, Loader=_Loader)
        if root is None:
            parsed.problems.append(
                YamlProblem((), Position(1, 1), "the document is empty", "empty", fatal=True)
            )
            return parsed
        parsed.data = _Builder(parsed).build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        message = exc.problem or exc.context or "unreadable document"
        started = exc.context_mark
        if exc.context and exc.problem and started is not None:
            message += f" ({exc.context} at line {started.line + 1}, column {started.column + 1})"
        parsed.problems.append(
            YamlProblem((), position, f"malformed YAML: {message}", "yaml_syntax", fatal=True)
        )
    except yaml.YAMLError as exc:
        parsed.problems.append(
            YamlProblem((), Position(1, 1), f"malformed YAML: {exc}", "yaml_syntax", fatal=True)
        )
    except RecursionError:
        parsed.problems.append(
            YamlProblem((), Position(1, 1), "document is nested too deeply", "too_large", fatal=True)
        )
    except _Abort as abort:
        parsed.problems.append(abort.problem)
    return parsed
