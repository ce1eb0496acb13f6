"""The graph page's layout: columns by longest path, crossings counted exactly and
reduced by barycentre sweeps, long edges routed around the tasks they pass."""

from __future__ import annotations

import random
import re

import pytest

from tether.hub.core import dag_graph
from tether.hub.core.dag_graph import NODE_HEIGHT, NODE_WIDTH, _crossings, layout

# (upper column, lower column, edges, crossings)
CROSSINGS: list[tuple[list[str], list[str], list[tuple[str, str]], int]] = [
    (["a", "b"], ["x", "y"], [("a", "x"), ("b", "y")], 0),
    (["a", "b"], ["x", "y"], [("a", "y"), ("b", "x")], 1),
    (["a", "b"], ["x", "y"], [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")], 1),
    (["a", "b", "c"], ["x", "y", "z"], [("a", "z"), ("b", "y"), ("c", "x")], 3),
    (["a"], ["x", "y", "z"], [("a", "x"), ("a", "y"), ("a", "z")], 0),
    (["a", "b"], ["x"], [("a", "x"), ("b", "x")], 0),
    ([], [], [], 0),
]


@pytest.mark.parametrize(("upper", "lower", "edges", "expected"), CROSSINGS)
def test_crossings_are_counted_exactly(
    upper: list[str], lower: list[str], edges: list[tuple[str, str]], expected: int
) -> None:
    assert _crossings(upper, lower, edges) == expected


def _brute_force(upper: list[str], lower: list[str], edges: list[tuple[str, str]]) -> int:
    up = {k: i for i, k in enumerate(upper)}
    low = {k: i for i, k in enumerate(lower)}
    return sum(
        1
        for i, (a, b) in enumerate(edges)
        for c, d in edges[i + 1 :]
        if (up[a] - up[c]) * (low[b] - low[d]) < 0
    )


def test_the_fast_count_agrees_with_counting_every_pair() -> None:
    rng = random.Random(7)
    for _ in range(200):
        upper = [f"u{i}" for i in range(rng.randint(1, 8))]
        lower = [f"l{i}" for i in range(rng.randint(1, 8))]
        edges = list({(rng.choice(upper), rng.choice(lower)) for _ in range(rng.randint(0, 20))})
        assert _crossings(upper, lower, edges) == _brute_force(upper, lower, edges)


def test_a_task_sits_one_column_right_of_its_furthest_upstream_task() -> None:
    placed = layout(["a", "b", "c", "d"], {"b": ["a"], "c": ["a", "b"], "d": []})
    assert {t: n.layer for t, n in placed.nodes.items()} == {"a": 0, "b": 1, "c": 2, "d": 0}
    assert placed.nodes["c"].x == placed.nodes["a"].x + 2 * (NODE_WIDTH + dag_graph.COLUMN_GAP)


def test_the_sweeps_untangle_what_the_given_order_crosses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = ["a", "b", "c", "d"]
    upstream = {"c": ["b"], "d": ["a"]}
    placed = layout(ids, upstream)
    assert placed.crossings == 0
    assert placed.nodes["d"].y < placed.nodes["c"].y  # d follows a, at the top
    monkeypatch.setattr(dag_graph, "SWEEPS", 0)
    assert layout(ids, upstream).crossings == 1


def test_a_long_edge_passes_beside_the_tasks_of_the_columns_it_crosses() -> None:
    # a → b → c and a → c: the second edge crosses b's column.
    placed = layout(["a", "b", "c"], {"b": ["a"], "c": ["a", "b"]})
    (long_edge,) = [e for e in placed.edges if (e.source, e.target) == ("a", "c")]
    b = placed.nodes["b"]
    # Through b's column the edge runs straight (an L segment), above or below b.
    run = re.search(r"L([0-9.]+),([0-9.]+)", long_edge.path)
    assert run, long_edge.path
    y = float(run.group(2))
    assert float(run.group(1)) == b.x + NODE_WIDTH
    assert y < b.y or y > b.y + NODE_HEIGHT


def test_a_cycle_or_a_dangling_upstream_id_never_hangs_or_fails() -> None:
    placed = layout(["a", "b", "c"], {"a": ["b", "a"], "b": ["a"], "c": ["zz"]})
    assert set(placed.nodes) == {"a", "b", "c"}
    # Each of the cycle's tasks gets a column; the edge that would point back is left out.
    assert placed.nodes["a"].layer != placed.nodes["b"].layer
    assert {(e.source, e.target) for e in placed.edges} == {("a", "b")}
    assert layout([], {}).nodes == {}


def test_no_two_tasks_of_a_large_random_dag_overlap() -> None:
    rng = random.Random(1)
    ids = [f"t{i}" for i in range(200)]
    upstream = {t: rng.sample(ids[:i], min(i, rng.randint(0, 3))) for i, t in enumerate(ids)}
    placed = layout(ids, upstream)
    assert len(placed.edges) == sum(len(u) for u in upstream.values())
    spots = {(n.x, n.y) for n in placed.nodes.values()}
    assert len(spots) == 200
    for column in {n.x for n in placed.nodes.values()}:
        tops = sorted(n.y for n in placed.nodes.values() if n.x == column)
        assert all(b - a >= NODE_HEIGHT for a, b in zip(tops, tops[1:], strict=False))
    for edge in placed.edges:
        assert placed.nodes[edge.source].layer < placed.nodes[edge.target].layer
