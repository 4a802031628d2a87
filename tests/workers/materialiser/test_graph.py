"""Ordering SQL models by their refs: topological, stable, and precise about cycles."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pfactory.materialiser.graph import Cycle, CycleError, execution_order, find_cycles


@dataclass(frozen=True)
class Node:
    name: str
    refs: tuple[str, ...] = ()


def nodes(**refs: str) -> list[Node]:
    """``nodes(a="", b="a c")``: a refs nothing, b refs a and c (declaration order = keyword order)."""
    return [Node(name, tuple(deps.split())) for name, deps in refs.items()]


def names(models: list[Node]) -> list[str]:
    return [m.name for m in models]


def test_an_already_ordered_list_is_unchanged() -> None:
    models = nodes(a="", b="a", c="a b", d="")
    assert names(execution_order(models)) == ["a", "b", "c", "d"]


def test_dependencies_run_first_and_ties_follow_declaration_order() -> None:
    models = nodes(final="mid base", mid="base", other="", base="")
    assert names(execution_order(models)) == ["other", "base", "mid", "final"]


def test_the_same_objects_come_back() -> None:
    models = nodes(b="a", a="")
    assert execution_order(models) == [models[1], models[0]]


def test_unknown_refs_are_left_to_the_renderer() -> None:
    assert names(execution_order(nodes(a="ghost", b="a"))) == ["a", "b"]


def test_a_two_model_cycle_is_named() -> None:
    with pytest.raises(CycleError) as caught:
        execution_order(nodes(x="", a="b", b="a", c="a"))
    assert caught.value.cycles == [Cycle(("a", "b"))]
    assert str(caught.value) == "ref cycle: a → b → a"
    assert caught.value.cycles[0].edges() == [("a", "b"), ("b", "a")]


def test_a_self_reference_is_a_cycle() -> None:
    assert find_cycles(nodes(a="a", b="a")) == [Cycle(("a",))]
    assert Cycle(("a",)).path() == "a → a"


def test_every_cycle_is_reported_once_starting_at_its_first_declared_model() -> None:
    models = nodes(p="", c="a", a="b", b="c", x="y", y="x p", z="x")
    assert [c.path() for c in find_cycles(models)] == ["c → a → b → c", "x → y → x"]


def test_the_shortest_cycle_through_the_first_model_is_shown() -> None:
    # a → b → c → a and a → c → a share a component; the shortest path through 'a' is shown
    assert find_cycles(nodes(a="b c", b="c", c="a")) == [Cycle(("a", "c"))]


def test_no_cycles_in_an_acyclic_graph() -> None:
    assert find_cycles(nodes(a="", b="a", c="a b")) == []


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate model name 'a'"):
        execution_order([Node("a"), Node("a")])


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    chain = [Node(f"m{i}", (f"m{i + 1}",) if i < 4999 else ()) for i in range(5000)]
    assert names(execution_order(chain)) == [f"m{i}" for i in reversed(range(5000))]
    looped = [*chain[:-1], Node("m4999", ("m0",))]
    [cycle] = find_cycles(looped)
    assert len(cycle.models) == 5000
