"""A DAG drawn as a picture: a layered layout of its tasks, for the console's graph page.

The layout is the classic one for a dependency graph, left to right:

1. **Layers** by longest path: a task sits one column right of its furthest
   upstream task, so every edge points right.
2. An edge that spans several columns gets a **waypoint** in each column it
   crosses, so that it is ordered and routed like a short edge and never runs
   through a task.
3. **Order within a column** by barycentre: a few sweeps that move each item
   to the mean row of its neighbours in the column before (then after); the
   order with the fewest edge crossings (counted exactly, by inversions) is
   kept.
4. **Coordinates**: columns of fixed width; in each, left to right, every
   item as near the mean height of its upstream neighbours as the items
   above it allow (:func:`_rows`); edges as cubic Bézier paths through their
   waypoints.

It is a pure function of the tasks' ids and upstream lists
(:func:`layout`), linear in the edges but for the sorts, so a DAG of a few
hundred tasks lays out in milliseconds. Nothing the DAG file wrote reaches
the picture except as text the template escapes.

:func:`graph` reads what the page needs in one read-only transaction: the
DAG as the chosen run pinned it (or as it is now), and that run's task
states, summed up for a mapped task as the grid does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import console_reads, queries
from tether.hub.store.models import DagRun, TaskInstance

#: Runs the page's run picker offers, newest first.
PICKER_RUNS = 50
#: Barycentre sweeps (each one down and one up); more rarely helps.
SWEEPS = 6

NODE_WIDTH = 190
NODE_HEIGHT = 40
#: The height a waypoint takes in its column.
WAYPOINT_HEIGHT = 14
ROW_GAP = 14
COLUMN_GAP = 70
MARGIN = 16
#: Longest label drawn in a node; the whole id is its tooltip.
LABEL_CHARS = 24


@dataclass
class Node:
    """A task placed in the picture (``x``, ``y``: its top left corner)."""

    task_id: str
    layer: int
    x: float = 0.0
    y: float = 0.0


@dataclass
class Edge:
    """An upstream → downstream edge and the SVG path that draws it."""

    source: str
    target: str
    path: str = ""


@dataclass
class Layout:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    crossings: int = 0


def _layers(task_ids: list[str], upstream: dict[str, list[str]]) -> dict[str, int]:
    """Each task's column: the longest path to it from a task with no upstream.

    Kahn's order, so a cycle (which no parsed DAG has, but a stored row could)
    cannot loop: the tasks left on one get a column each, after the others.
    """
    downstream: dict[str, list[str]] = defaultdict(list)
    waiting = {t: len(upstream[t]) for t in task_ids}
    for t in task_ids:
        for up in upstream[t]:
            downstream[up].append(t)
    layer = {t: 0 for t in task_ids}
    ready = [t for t in task_ids if waiting[t] == 0]
    placed: set[str] = set()
    while ready:
        t = ready.pop()
        placed.add(t)
        for down in downstream[t]:
            layer[down] = max(layer[down], layer[t] + 1)
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    column = max((layer[t] for t in placed), default=-1)
    for t in task_ids:
        if t not in placed:
            column += 1
            layer[t] = column
    return layer


def _crossings(upper: list[str], lower: list[str], links: list[tuple[str, str]]) -> int:
    """Edge crossings between two adjacent columns: inversions of the lower ends
    when the edges are sorted by their upper ends (a Fenwick tree, O(E log E))."""
    if len(links) < 2:
        return 0
    up = {k: i for i, k in enumerate(upper)}
    low = {k: i for i, k in enumerate(lower)}
    ends = [low[b] for _, b in sorted(links, key=lambda e: (up[e[0]], low[e[1]]))]
    tree = [0] * (len(lower) + 1)
    count = 0
    for seen, end in enumerate(ends):
        i, before = end + 1, 0
        while i > 0:
            before += tree[i]
            i -= i & -i
        count += seen - before  # earlier edges that end below this one
        i = end + 1
        while i <= len(lower):
            tree[i] += 1
            i += i & -i
    return count


def _order(
    columns: list[list[str]], links: list[list[tuple[str, str]]]
) -> tuple[list[list[str]], int]:
    """Columns reordered by barycentre sweeps to reduce crossings, and their count.

    ``links[i]`` are the edges between column ``i`` and ``i + 1``. A sort by
    barycentre is stable, and an item with no neighbour keeps its row, so a
    sweep never scrambles what it cannot improve.
    """

    def total(cols: list[list[str]]) -> int:
        return sum(_crossings(cols[i], cols[i + 1], links[i]) for i in range(len(links)))

    def sort(column: list[str], fixed: list[str], pairs: list[tuple[str, str]]) -> list[str]:
        row = {k: i for i, k in enumerate(fixed)}
        near: dict[str, list[int]] = defaultdict(list)
        for a, b in pairs:
            near[a].append(row[b])
        keys = {
            k: (sum(near[k]) / len(near[k]) if near[k] else float(i)) for i, k in enumerate(column)
        }
        return sorted(column, key=lambda k: keys[k])

    best, fewest = [list(c) for c in columns], total(columns)
    current = best
    for _ in range(SWEEPS):
        if fewest == 0:
            break
        current = [list(c) for c in current]
        for i in range(1, len(current)):
            current[i] = sort(current[i], current[i - 1], [(b, a) for a, b in links[i - 1]])
        for i in range(len(current) - 2, -1, -1):
            current[i] = sort(current[i], current[i + 1], links[i])
        count = total(current)
        if count < fewest:
            best, fewest = [list(c) for c in current], count
    return best, fewest


def _rows(wanted: list[float], heights: list[float]) -> list[float]:
    """The tops of a column's items, in their order, each as near the top it wants
    (beside its upstream neighbours) as the items above it allow.

    Least squares under "each below the one above it" is an isotonic regression
    once each top is taken less the room the items above it need: the pool
    adjacent violators algorithm solves it in one pass. No top is above
    :data:`MARGIN`.
    """
    room, above = [], 0.0
    for h in heights:
        room.append(above)
        above += h + ROW_GAP
    blocks: list[list[float]] = []  # [mean, count]
    for want, offset in zip(wanted, room, strict=True):
        blocks.append([want - offset, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            prev = blocks[-1]
            prev[0] = (prev[0] * prev[1] + mean * count) / (prev[1] + count)
            prev[1] += count
    fitted = [max(mean, MARGIN) for mean, count in blocks for _ in range(int(count))]
    return [z + offset for z, offset in zip(fitted, room, strict=True)]


def _curve(points: list[tuple[float, float]]) -> str:
    """An SVG path through ``points`` (left to right): a horizontal-tangent Bézier
    between each pair, so edges leave and enter their tasks level."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        if y1 == y0 or x1 - x0 < 1:
            parts.append(f"L{x1:.1f},{y1:.1f}")
        else:
            mid = (x0 + x1) / 2
            parts.append(f"C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def layout(task_ids: list[str], upstream: dict[str, list[str]]) -> Layout:
    """Place ``task_ids`` (each with its ``upstream`` ids) in columns and rows, and
    route every edge. Upstream ids that name no task are left out, and so is an
    edge of a cycle that would point back."""
    known = set(task_ids)
    ups = {t: sorted({u for u in upstream.get(t, []) if u in known and u != t}) for t in task_ids}
    layer = _layers(task_ids, ups)
    ups = {t: [u for u in ups[t] if layer[u] < layer[t]] for t in task_ids}
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for t in task_ids:
        columns[layer[t]].append(t)
    links: list[list[tuple[str, str]]] = [[] for _ in range(max(len(columns) - 1, 0))]
    chains: list[tuple[str, str, list[str]]] = []
    for target in task_ids:
        for source in ups[target]:
            chain = [source]
            for col in range(layer[source] + 1, layer[target]):
                waypoint = f"\0{source}\0{target}\0{col}"  # no task id holds a NUL
                columns[col].append(waypoint)
                chain.append(waypoint)
            chain.append(target)
            for step, (a, b) in enumerate(zip(chain, chain[1:], strict=False)):
                links[layer[source] + step].append((a, b))
            chains.append((source, target, chain))
    columns, crossings = _order(columns, links)

    def height(item: str) -> float:
        return WAYPOINT_HEIGHT if item.startswith("\0") else NODE_HEIGHT

    top: dict[str, float] = {}
    preds: dict[str, list[str]] = defaultdict(list)
    for pairs in links:
        for a, b in pairs:
            preds[b].append(a)
    for items in columns:
        wanted = []
        for item in items:
            near = [top[p] + height(p) / 2 for p in preds[item]]
            wanted.append(sum(near) / len(near) - height(item) / 2 if near else MARGIN)
        for item, y in zip(items, _rows(wanted, [height(k) for k in items]), strict=True):
            top[item] = y
    result = Layout(crossings=crossings)
    centre: dict[str, tuple[float, float]] = {}
    bottom = float(MARGIN + NODE_HEIGHT)
    for col, items in enumerate(columns):
        x = float(MARGIN + col * (NODE_WIDTH + COLUMN_GAP))
        for item in items:
            centre[item] = (x, top[item] + height(item) / 2)
            bottom = max(bottom, top[item] + height(item))
            if not item.startswith("\0"):
                result.nodes[item] = Node(item, col, x, top[item])
    for source, target, chain in chains:
        sx, sy = centre[source]
        points = [(sx + NODE_WIDTH, sy)]
        for waypoint in chain[1:-1]:
            wx, wy = centre[waypoint]
            points += [(wx, wy), (wx + NODE_WIDTH, wy)]
        tx, ty = centre[target]
        points.append((tx - 4, ty))  # the arrowhead ends at the task's edge
        result.edges.append(Edge(source, target, _curve(points)))
    result.width = 2 * MARGIN + max(len(columns), 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    result.height = bottom + MARGIN
    return result


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _group(task_id: str) -> str | None:
    """A task's group, as Airflow's TaskGroups name their tasks: ``group.task``."""
    group, dot, _ = task_id.rpartition(".")
    return group if dot and group else None


def recent_runs(session: Session, dag_id: str) -> list[dict[str, Any]]:
    """The runs a picker offers: the newest :data:`PICKER_RUNS`, newest first."""
    rows = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.logical_date)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.id.desc())
        .limit(PICKER_RUNS)
    )
    return [{"run_id": r.run_id, "state": r.state, "logical_date": r.logical_date} for r in rows]


def graph(session: Session, dag_id: str, run_id: str | None) -> dict[str, Any]:
    """The graph page: the DAG's tasks laid out, coloured by the states of ``run_id``
    (the newest run if None; none if the DAG has no run), and the runs to pick from.

    The tasks are those of the run's pinned copy of the DAG, so an old run is
    drawn as it ran; with no run, the DAG as it is now.
    """
    dag = queries.get_dag(session, dag_id)
    runs = recent_runs(session, dag_id)
    run = None
    if run_id is not None:
        run = queries.get_run(session, dag_id, run_id)
    elif runs:
        run = queries.get_run(session, dag_id, runs[0]["run_id"])
    spec: dict[str, Any] = run.serialized if run is not None else dag.serialized
    tasks = [t for t in spec.get("tasks", []) if isinstance(t, dict) and "task_id" in t]
    cells: dict[str, dict[str, Any]] = {}
    if run is not None:
        instances: dict[str, list[TaskInstance]] = defaultdict(list)
        for ti in session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id)
            .order_by(TaskInstance.map_index)
        ):
            instances[ti.task_id].append(ti)
        cells = {task_id: console_reads.cell(tis) for task_id, tis in instances.items()}
    ids = list(dict.fromkeys(str(t["task_id"]) for t in tasks))
    specs = {str(t["task_id"]): t for t in tasks}
    placed = layout(ids, {t: list(specs[t].get("upstream") or []) for t in ids})
    groups = sorted({g for t in ids if (g := _group(t))})
    nodes = []
    for task_id in ids:
        node = placed.nodes[task_id]
        group = _group(task_id)
        cell = cells.get(task_id)
        nodes.append(
            {
                "task_id": task_id,
                "label": _label(task_id[len(group) + 1 :] if group else task_id),
                "group": group,
                "group_index": groups.index(group) if group else None,
                "operator": str(specs[task_id].get("operator") or ""),
                "mapped": bool(specs[task_id].get("mapped")),
                "state": cell["state"] if cell else "none",
                "summary": cell.get("summary") if cell else None,
                "has_instance": cell is not None,
                "x": node.x,
                "y": node.y,
            }
        )
    return {
        **queries.dag_summary(dag, queries.file_error(session, dag.fileloc)),
        "run": None
        if run is None
        else {"run_id": run.run_id, "state": run.state, "logical_date": run.logical_date},
        "runs": runs,
        "nodes": nodes,
        "edges": [{"source": e.source, "target": e.target, "path": e.path} for e in placed.edges],
        "groups": groups,
        "width": placed.width,
        "height": placed.height,
        "node_width": NODE_WIDTH,
        "node_height": NODE_HEIGHT,
    }
