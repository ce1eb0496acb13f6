"""The console's graph, code and catalog pages (pools, assets, connections,
variables, audit log) over HTTP, against a real hub and worker on each store.

One hub per store for the module, with DAGs that ran: the first run of
``flow`` fails a task, the second succeeds, so the graph's run picker has two
runs to tell apart. Pages are read as a browser does, with a session cookie.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration import processes
from tests.integration.processes import ADMIN_TOKEN, Hub, running_hub, wait_for
from tether.hub.core.dag_code import MAX_SHOWN_BYTES

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "</script><b>"

FLOW = """
from tether import DAG, Asset, BashOperator, task

with DAG("flow", tags=["pages"]):
    start = BashOperator(task_id="start", bash_command="echo start",
                         outlets=[Asset("s3://lake/flow")])
    check = BashOperator(task_id="grp.check", bash_command="test -e {flag}")
    after = BashOperator(task_id="grp.after", bash_command="echo after")
    side = BashOperator(task_id="side", bash_command="echo side", pool="p1")

    @task
    def numbers():
        return [1, 2]

    @task
    def double(x):
        return 2 * x

    start >> check >> after
    start >> side
    nums = numbers()
    start >> nums
    double.expand(x=nums)
"""
CONSUMER = """
from tether import DAG, Asset, EmptyOperator

with DAG("consumer", schedule=[Asset("s3://lake/flow")]):
    EmptyOperator(task_id="use")
"""
#: 200 tasks: a tree (each task under the one a third of its index) and a
#: cross edge from every tenth task, so edges span several columns.
BIG = """
from tether import DAG, EmptyOperator

with DAG("big"):
    tasks = [EmptyOperator(task_id=f"t{i:03d}") for i in range(200)]
    for i in range(1, 200):
        tasks[(i - 1) // 3] >> tasks[i]
    for i in range(0, 190, 10):
        tasks[i] >> tasks[i + 9]
"""
CODED = """
# {marker}: {hostile}
from tether import DAG, BashOperator

with DAG("coded", include=["data/big.txt"]):
    BashOperator(task_id="t", bash_command="echo coded")
"""
CATALOG = ("/ui/pools", "/ui/assets", "/ui/connections", "/ui/variables", "/ui/audit")
FLOW_EDGES = {
    ("start", "grp.check"),
    ("grp.check", "grp.after"),
    ("start", "side"),
    ("start", "numbers"),
    ("numbers", "double"),
}
FIRST_RUN = {
    "start": "success",
    "grp.check": "failed",
    "grp.after": "upstream_failed",
    "side": "success",
    "numbers": "success",
    "double": "success",
}


class Console:
    """The hub, its runs, and a client signed in to the console as the admin."""

    def __init__(self, hub: Hub, root: Path, runs: dict[str, str]) -> None:
        self.hub, self.root, self.runs = hub, root, runs
        self.http = sign_in(hub, ADMIN_TOKEN)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params) if params else self.http.get(path)


def sign_in(hub: Hub, token: str) -> httpx.Client:
    """A client with a console session for ``token``."""
    return processes.Console(hub, token).http


@pytest.fixture(scope="module", params=BACKENDS)
def console(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Console]:
    root = tmp_path_factory.mktemp(f"console-pages-{request.param}")
    flag = root / "flag"
    dags = root / "dags"
    (dags / "data").mkdir(parents=True)
    (dags / "flow.py").write_text(FLOW.format(flag=flag))
    (dags / "consumer.py").write_text(CONSUMER)
    (dags / "big.py").write_text(BIG)
    (dags / "coded.py").write_text(CODED.format(marker="version one", hostile=HOSTILE))
    lines = (f"line {n:06d} of a large file\n" for n in range(20_000))
    (dags / "data" / "big.txt").write_text("".join(lines))
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        dags,
        wait_dags=["flow", "consumer", "big", "coded"],
    ) as (hub, _):
        hub.api.http.put("/pools/p1", json={"slots": 3}).raise_for_status()
        first = hub.api.run_dag("flow")
        assert first["state"] == "failed"
        flag.touch()
        second = hub.api.run_dag("flow")
        assert second["state"] == "success"
        coded = hub.api.run_dag("coded")
        runs = {"first": first["run_id"], "second": second["run_id"], "coded": coded["run_id"]}
        console = Console(hub, root, runs)
        try:
            yield console
        finally:
            console.http.close()


def _svg(html: str) -> ET.Element:
    found = re.search(r'<svg class="graph".*?</svg>', html, re.S)
    assert found, html
    return ET.fromstring(found.group(0))


def _nodes(svg: ET.Element) -> dict[str, ET.Element]:
    return {
        g.attrib["data-task-id"]: g
        for g in svg.iter(f"{SVG}g")
        if "node" in g.attrib.get("class", "").split()
    }


def _state(node: ET.Element) -> str:
    (state,) = [c for c in node.attrib["class"].split() if c.startswith("state-")]
    return state.removeprefix("state-")


def _edges(svg: ET.Element) -> set[tuple[str, str]]:
    return {
        (p.attrib["data-source"], p.attrib["data-target"])
        for p in svg.iter(f"{SVG}path")
        if p.attrib.get("class") == "edge"
    }


def test_the_graph_draws_each_task_in_the_state_of_the_chosen_run(console: Console) -> None:
    latest = console.get("/ui/dags/flow/graph")
    assert latest.status_code == 200, latest.text
    svg = _svg(latest.text)
    nodes = _nodes(svg)
    assert set(nodes) == set(FIRST_RUN)
    # The newest run by default: every task succeeded in it.
    assert {t: _state(n) for t, n in nodes.items()} == dict.fromkeys(FIRST_RUN, "success")
    assert _edges(svg) == FLOW_EDGES
    second = console.runs["second"]
    assert f'<option value="{second}" selected>' in latest.text

    first = console.runs["first"]
    picked = console.get("/ui/dags/flow/graph", run_id=first)
    assert picked.status_code == 200
    nodes = _nodes(_svg(picked.text))
    assert {t: _state(n) for t, n in nodes.items()} == FIRST_RUN
    # A node opens its task instance in that run; a grouped task shows its group.
    link = nodes["grp.check"].find(f"{SVG}a")
    assert link is not None
    assert link.attrib["href"] == f"/ui/dags/flow/runs/{quote(first, safe='')}/tasks/grp.check"
    assert console.get(link.attrib["href"]).status_code == 200
    assert "grouped" in nodes["grp.check"].attrib["class"]
    texts = [t.text for t in nodes["grp.check"].iter(f"{SVG}text")]
    assert texts == ["check", "failed · grp"]
    # A mapped task is summed up, as in the grid.
    assert "mapped" in nodes["double"].attrib["class"]
    assert [t.text for t in nodes["double"].iter(f"{SVG}text")][1] == "2/2 success"
    # Every edge runs left to right, from its source's right side to its target.
    boxes = _boxes(nodes)
    for path in svg.iter(f"{SVG}path"):
        if path.attrib.get("class") != "edge":
            continue
        numbers = [float(n) for n in re.findall(r"-?[0-9.]+", path.attrib["d"])]
        source, target = boxes[path.attrib["data-source"]], boxes[path.attrib["data-target"]]
        assert numbers[0] == source[2]
        assert numbers[-2] == pytest.approx(target[0] - 4)


def _boxes(nodes: dict[str, ET.Element]) -> dict[str, tuple[float, float, float, float]]:
    """Each node's rectangle as (left, top, right, bottom)."""
    boxes = {}
    for task_id, node in nodes.items():
        found = re.fullmatch(r"translate\(([0-9.]+),([0-9.]+)\)", node.attrib["transform"])
        assert found, node.attrib
        rect = node.find(f".//{SVG}rect")
        assert rect is not None
        x, y = float(found.group(1)), float(found.group(2))
        boxes[task_id] = (x, y, x + float(rect.attrib["width"]), y + float(rect.attrib["height"]))
    return boxes


def test_a_200_task_graph_has_every_task_once_and_no_two_overlap(console: Console) -> None:
    page = console.get("/ui/dags/big/graph")
    assert page.status_code == 200
    assert "No runs yet" in page.text
    svg = _svg(page.text)
    nodes = _nodes(svg)
    assert set(nodes) == {f"t{i:03d}" for i in range(200)}
    assert {_state(n) for n in nodes.values()} == {"none"}
    tree = {(f"t{(i - 1) // 3:03d}", f"t{i:03d}") for i in range(1, 200)}
    cross = {(f"t{i:03d}", f"t{i + 9:03d}") for i in range(0, 190, 10)}
    assert _edges(svg) == tree | cross
    boxes = sorted(_boxes(nodes).values())
    for i, (_, top, right, bottom) in enumerate(boxes):
        for other in boxes[i + 1 :]:
            if other[0] >= right:
                break
            assert other[1] >= bottom or other[3] <= top, (boxes[i], other)
    width, height = float(svg.attrib["width"]), float(svg.attrib["height"])
    assert all(b[2] <= width and b[3] <= height for b in boxes)


def test_the_code_page_shows_the_pinned_bundle_escaped_with_line_numbers(
    console: Console,
) -> None:
    hub, dags = console.hub, console.root / "dags"
    old_sha = hub.api.get("/dags/coded")["bundle_sha"]
    (dags / "coded.py").write_text(CODED.format(marker="version two", hostile=HOSTILE))
    wait_for(
        lambda: hub.api.get("/dags/coded")["bundle_sha"] != old_sha,
        30,
        "the hub to parse the changed DAG file",
    )
    run_id = console.runs["coded"]
    pinned = console.get("/ui/dags/coded/code", run_id=run_id)
    assert pinned.status_code == 200, pinned.text
    assert "version one" in pinned.text
    assert "version two" not in pinned.text
    assert old_sha[:12] in pinned.text
    assert HOSTILE not in pinned.text
    assert "# version one: &lt;/script&gt;&lt;b&gt;" in pinned.text
    assert '<span class="line" id="L2"><a class="ln" href="#L2">2</a># version one' in pinned.text
    assert f'<option value="{run_id}" selected>' in pinned.text
    current = console.get("/ui/dags/coded/code")
    assert "version two" in current.text
    assert "version one" not in current.text
    assert '<option value="" selected>current version</option>' in current.text

    # The bundle's other file, larger than a page shows: cut, and said so.
    assert 'href="/ui/dags/coded/code?run_id=' in pinned.text
    big = console.get("/ui/dags/coded/code", run_id=run_id, file="data/big.txt")
    assert big.status_code == 200
    assert "line 000000 of a large file" in big.text
    assert "line 019999" not in big.text
    assert "only its first 256.0 KiB are shown" in big.text
    shown = len(re.findall(r'<span class="line" id="L\d+">', big.text))
    assert shown == MAX_SHOWN_BYTES // len("line 000000 of a large file\n") + 1

    for params, status in [
        ({"file": "../coded.py"}, 404),
        ({"file": "/etc/passwd"}, 404),
        ({"file": "nothing.py"}, 404),
        ({"run_id": "no-such-run"}, 404),
        ({"file": "a\x00b"}, 422),
        ({"file": "x" * 1001}, 422),
        ({"run_id": "<script>"}, 422),
    ]:
        answer = console.get("/ui/dags/coded/code", **params)
        assert answer.status_code == status, (params, answer.text)


def test_connections_and_variables_show_names_and_scopes_never_a_secret(
    console: Console,
) -> None:
    api = console.hub.api.http
    secrets = ["hunter2-password", "extra-api-key-value", "secret-variable-value", "plain-val"]
    api.post(
        "/connections",
        json={
            "conn_id": "warehouse",
            "conn_type": "postgres",
            "host": "db.internal",
            "login": "loader",
            "password": secrets[0],
            "extra": {"api_key": secrets[1]},
            "queues": ["acme"],
            "description": "the <b>warehouse</b>",
        },
    ).raise_for_status()
    api.put("/variables/api_key", json={"value": secrets[2], "is_secret": True}).raise_for_status()
    api.put("/variables/region", json={"value": secrets[3], "queues": ["acme"]}).raise_for_status()
    viewer = api.post("/tokens", json={"name": "pages-viewer", "role": "viewer"})
    viewer.raise_for_status()
    as_viewer = sign_in(console.hub, viewer.json()["token"])
    try:
        # Every catalog read is a viewer's in the REST API; so are the pages.
        for path in (*CATALOG, "/ui/dags/flow/graph", "/ui/dags/flow/code"):
            assert as_viewer.get(path).status_code == 200, path
        for client in (console.http, as_viewer):
            conns = client.get("/ui/connections")
            assert conns.status_code == 200
            assert '<td class="conn-id">warehouse</td>' in conns.text
            assert "postgres" in conns.text
            assert "acme" in conns.text
            assert "the &lt;b&gt;warehouse&lt;/b&gt;" in conns.text
            variables = client.get("/ui/variables")
            assert variables.status_code == 200
            assert '<td class="variable-key">api_key</td>' in variables.text
            assert '<td class="variable-key">region</td>' in variables.text
            for text in (conns.text, variables.text):
                for secret in [*secrets, "loader", "db.internal"]:
                    assert secret not in text
    finally:
        as_viewer.close()


def test_pools_and_assets_show_use_producers_consumers_and_events(console: Console) -> None:
    pools = console.get("/ui/pools")
    assert pools.status_code == 200
    row = re.search(r'<td class="pool-name">p1</td>\s*<td>(\d+)</td>', pools.text)
    assert row, pools.text
    assert row.group(1) == "3"
    assert '<td class="pool-name">default_pool</td>' in pools.text

    wait_for(
        lambda: len(console.hub.api.get("/assets/events")["asset_events"]) >= 2,
        30,
        "both runs of flow to record their asset events",
    )
    assets = console.get("/ui/assets")
    assert assets.status_code == 200
    text = assets.text
    assert '<code class="asset-uri">s3://lake/flow</code>' in text
    assert '<div class="producer"><a href="/ui/dags/flow/grid">flow</a> / start</div>' in text
    assert '<div class="consumer"><a href="/ui/dags/consumer/grid">consumer</a></div>' in text
    events = re.findall(r'<tr class="asset-event">', text)
    assert len(events) >= 2
    for run_id in (console.runs["first"], console.runs["second"]):
        assert f"({run_id})" in text


def test_the_audit_log_pages_by_id_and_filters(console: Console) -> None:
    api = console.hub.api.http
    for n in range(60):
        api.put(f"/variables/audit_{n:02d}", json={"value": "x"}).raise_for_status()

    def ids(html: str) -> list[int]:
        entry = r'<tr class="audit-entry">\s*<td class="muted">(\d+)'
        return [int(i) for i in re.findall(entry, html)]

    first = console.get("/ui/audit", action="variable.")
    assert first.status_code == 200
    page_one = ids(first.text)
    assert len(page_one) == 50
    assert page_one == sorted(page_one, reverse=True)
    assert set(re.findall(r'<td class="action"><code>([^<]+)</code>', first.text)) == {
        "variable.create"
    }
    older = re.search(r'<a class="older" href="([^"]+)">', first.text)
    assert older, first.text
    link = older.group(1).replace("&amp;", "&")
    assert link == f"/ui/audit?before_id={page_one[-1]}&action=variable."
    second = console.http.get(link)
    page_two = ids(second.text)
    assert page_two
    assert max(page_two) < min(page_one)
    assert 'class="newest"' in second.text
    every = api.get("/audit", params={"action": "variable.", "limit": 1000}).json()["entries"]
    assert page_one + page_two == [e["id"] for e in every][: len(page_one) + len(page_two)]

    by_admin = ids(console.get("/ui/audit", actor="admin").text)
    assert by_admin
    assert ids(console.get("/ui/audit", actor="nobody").text) == []
    assert "No entries match" in console.get("/ui/audit", actor="nobody").text
    for params, status in [
        ({"action": "Variable!"}, 400),
        ({"actor": "a\x01b"}, 400),
        ({"action": "x" * 101}, 400),
        ({"actor": "x" * 301}, 422),
        ({"before_id": "0"}, 422),
        ({"before_id": str(2**31)}, 422),
        ({"before_id": "x"}, 422),
    ]:
        answer = console.get("/ui/audit", **params)
        assert answer.status_code == status, (params, answer.text)
    refused = console.get("/ui/audit", action="Variable!")
    assert "lowercase letters" in refused.text
    assert 'value="Variable!"' in refused.text


def test_every_page_answers_hostile_ids_and_params_with_a_4xx(console: Console) -> None:
    for path, status in [
        ("/ui/dags/%00/graph", 422),
        (f"/ui/dags/{'d' * 251}/graph", 422),
        ("/ui/dags/nope/graph", 404),
        ("/ui/dags/nope/code", 404),
        ("/ui/dags/flow/graph?run_id=%00", 422),
        ("/ui/dags/flow/graph?run_id=%3Cscript%3E", 422),
        (f"/ui/dags/flow/graph?run_id={'r' * 251}", 422),
        ("/ui/dags/flow/graph?run_id=nope", 404),
        ("/ui/dags/%3Cb%3E/code", 422),
        ("/ui/audit?before_id=-1", 422),
    ]:
        answer = console.get(path)
        assert answer.status_code == status, (path, answer.text)
    missing = console.get("/ui/dags/flow/graph?run_id=nope")
    assert "DAG &#39;flow&#39; has no run &#39;nope&#39;" in missing.text
    # Signed out, every page goes to the login page first.
    with httpx.Client(base_url=console.hub.url) as anonymous:
        # Every catalog read is a viewer's in the REST API; so are the pages.
        for path in (*CATALOG, "/ui/dags/flow/graph", "/ui/dags/flow/code"):
            answer = anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/ui/login?next=")
