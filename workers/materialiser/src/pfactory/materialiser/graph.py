"""Order a feature set's SQL models by their ``ref()``s. Pure domain code: no Spark, no I/O.

Models run in topological order; among models that are ready at the same time the one declared
first runs first, so the order is stable and, for an already ordered list, unchanged. A cycle is
an error that names the models in it (``a → b → a``). Unknown refs are ignored here: the template
renderer reports them with their line and a did-you-mean.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

ARROW = "→"


class HasRefs(Protocol):
    """Anything with a name and the names of the models it reads (e.g. ``RenderedModel``)."""

    @property
    def name(self) -> str:
        """The model name."""
        ...

    @property
    def refs(self) -> tuple[str, ...]:
        """Names of the models it ``ref()``s, in first-use order."""
        ...


M = TypeVar("M", bound=HasRefs)


@dataclass(frozen=True)
class Cycle:
    """A ref cycle: ``models[0]`` refs ``models[1]`` ... and the last one refs ``models[0]``."""

    models: tuple[str, ...]
    """The models in the cycle, starting with the one declared first."""

    def edges(self) -> list[tuple[str, str]]:
        """Return the ``(model, referenced model)`` pairs that make up the cycle, in order."""
        return [(m, self.models[(i + 1) % len(self.models)]) for i, m in enumerate(self.models)]

    def path(self) -> str:
        """Render the cycle as ``a → b → a``."""
        return f" {ARROW} ".join([*self.models, self.models[0]])

    def __str__(self) -> str:
        return self.path()


class CycleError(ValueError):
    """The models' refs form one or more cycles; ``cycles`` lists each once."""

    def __init__(self, cycles: list[Cycle]) -> None:
        self.cycles = cycles
        super().__init__("ref cycle: " + "; ".join(c.path() for c in cycles))


def execution_order(models: Sequence[M]) -> list[M]:
    """Return the models in an order where every model runs after the models it refs.

    Args:
        models: the models, in declaration order; names must be unique.

    Returns:
        The same objects, topologically ordered; ties are broken by declaration order.

    Raises:
        CycleError: if refs form a cycle (every cycle is listed).
        ValueError: if two models share a name.
    """
    index = _index(models)
    dependents: dict[str, list[str]] = {m.name: [] for m in models}
    waiting: dict[str, int] = {}
    for model in models:
        known = {r for r in model.refs if r in index}
        waiting[model.name] = len(known)
        for ref in known:
            dependents[ref].append(model.name)
    ready = [index[m.name] for m in models if waiting[m.name] == 0]
    heapq.heapify(ready)
    order: list[M] = []
    while ready:
        model = models[heapq.heappop(ready)]
        order.append(model)
        for dependent in dependents[model.name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, index[dependent])
    if len(order) < len(models):
        raise CycleError(find_cycles(models))
    return order


def find_cycles(models: Sequence[HasRefs]) -> list[Cycle]:
    """Return one cycle per strongly connected group of models that ref each other (or themselves).

    Args:
        models: the models, in declaration order.

    Returns:
        The cycles, ordered by the declaration of their first model; empty if the graph is acyclic.
    """
    index = _index(models)
    refs = {m.name: [r for r in dict.fromkeys(m.refs) if r in index] for m in models}
    cycles = []
    for component in _strongly_connected(models, refs):
        members = set(component)
        if len(members) == 1 and component[0] not in refs[component[0]]:
            continue
        start = min(component, key=index.__getitem__)
        cycles.append(Cycle(_cycle_through(start, members, refs)))
    return sorted(cycles, key=lambda c: index[c.models[0]])


def _index(models: Sequence[HasRefs]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, model in enumerate(models):
        if model.name in index:
            raise ValueError(f"duplicate model name '{model.name}'")
        index[model.name] = i
    return index


def _strongly_connected(models: Sequence[HasRefs], refs: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (deep chains must not hit the recursion limit)."""
    counter = 0
    low: dict[str, int] = {}
    number: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in (m.name for m in models):
        if root in number:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                number[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if child < len(refs[node]):
                work.append((node, child + 1))
                target = refs[node][child]
                if target not in number:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], number[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == number[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_through(start: str, members: set[str], refs: dict[str, list[str]]) -> tuple[str, ...]:
    """Find a simple path start → ... → start inside one strongly connected component (BFS: shortest)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in refs[node]:
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return tuple(reversed(path))
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    return (start,)  # unreachable for a real component; kept total for type-checkers
