"""The web console's actions against a real hub on SQLite and PostgreSQL, driven
over HTTP with a session cookie as a browser would: each action changes nothing
until its confirmation is posted, the confirmation lists exactly what then
changes (checked against the state and the audit entry after), the audit
actor is the console user's token, roles and CSRF are enforced on every POST,
and hostile input gets a 4xx page with a reason."""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import (
    ADMIN_TOKEN,
    Console,
    Hub,
    RawWorker,
    confirmation,
    running_hub,
)
from tests.integration.test_roles import ROLE_NEEDED
from tether.hub.ui.roles import ACTIONS

pytestmark = pytest.mark.integration

DAGS = """
    from datetime import datetime
    from tether import DAG, BashOperator, Param

    params = {
        "n": Param(2, type="integer", minimum=1, description="how many"),
        "color": Param("red", enum=["red", "blue"]),
        "dry": Param(False, type="boolean"),
        "items": Param([1], type="array"),
        "note": Param(type="string", minLength=2),
    }
    with DAG("triggered", params=params):
        BashOperator(task_id="only", bash_command="true", queue="q-trigger")

    for name in ("clearing", "marking", "guarded"):
        with DAG(name):
            (BashOperator(task_id="a", bash_command="true", queue=f"q-{name}")
             >> BashOperator(task_id="b", bash_command="true", queue=f"q-{name}")
             >> BashOperator(task_id="c", bash_command="true", queue=f"q-{name}"))

    with DAG("daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
             is_paused_upon_creation=True):
        BashOperator(task_id="d", bash_command="true", queue="q-daily")

    with DAG("working"):
        BashOperator(task_id="w", bash_command="true", queue="q-work", retries=1)
        BashOperator(task_id="v", bash_command="true", queue="q-work")
"""

#: The REST route each console action stands for (its role must be the route's).
REST_ROUTE = {
    "dag.pause": ("PATCH", "/api/v1/dags/{dag_id}"),
    "dag.trigger": ("POST", "/api/v1/dags/{dag_id}/runs"),
    "dag.backfill": ("POST", "/api/v1/dags/{dag_id}/backfills"),
    "task.clear": ("POST", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear"),
    "task.mark": ("PATCH", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}"),
    "run.clear": ("POST", "/api/v1/dags/{dag_id}/runs/{run_id}/clear"),
    "run.mark": ("PATCH", "/api/v1/dags/{dag_id}/runs/{run_id}"),
    "worker.maintenance": ("POST", "/api/v1/workers/{name}/maintenance"),
    "worker.shutdown": ("POST", "/api/v1/workers/{name}/shutdown"),
    "worker.update": ("POST", "/api/v1/workers/{name}/update"),
    "worker.revoke": ("POST", "/api/v1/workers/{name}/revoke"),
    "worker.remove": ("DELETE", "/api/v1/workers/{name}"),
    "enrolment_token.create": ("POST", "/api/v1/workers/enrolment-tokens"),
}


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"console-actions-{request.param}")
    (root / "dags").mkdir()
    (root / "dags" / "actions.py").write_text(textwrap.dedent(DAGS))
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        root / "dags",
        workers=(),
        wait_dags=("triggered", "clearing", "marking", "guarded", "daily", "working"),
    ) as (hub, _):
        yield hub


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    """A named token of each role below admin (the built-in admin token is ``admin``)."""
    made = {"admin": ADMIN_TOKEN}
    for role in ("operator", "viewer"):
        answer = hub.api.http.post("/tokens", json={"name": f"ana-{role}", "role": role})
        assert answer.status_code == 201, answer.text
        made[role] = answer.json()["token"]
    return made


@pytest.fixture(scope="module")
def consoles(hub: Hub, tokens: dict[str, str]) -> Iterator[dict[str, Console]]:
    made = {role: Console(hub, token) for role, token in tokens.items()}
    yield made
    for console in made.values():
        console.close()


#: The last path segment of every action's confirmation page.
VERBS = {
    "pause",
    "unpause",
    "trigger",
    "backfill",
    "clear",
    "mark",
    "maintenance",
    "shutdown",
    "revoke",
    "remove",
    "enrolment-token",
}


def action_links(text: str) -> set[str]:
    """The actions a page links to."""
    paths = (html.unescape(h).split("?")[0] for h in re.findall(r'href="([^"]+)"', text))
    return {p.rsplit("/", 1)[-1] for p in paths} & VERBS


def field_errors(text: str) -> dict[str, str]:
    """The error shown beside each param's field of the trigger form."""
    found = {}
    for chunk in text.split('data-param="')[1:]:
        name = chunk.split('"', 1)[0]
        error = re.search(r'<div class="field-error" role="alert">([^<]*)</div>', chunk)
        if error:
            found[name] = html.unescape(error[1])
    return found


def _cell(fragment: str) -> str:
    fragment = re.sub(r'<span class="mark [^"]*"[^>]*>[^<]*</span>', "", fragment)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def rows(text: str, kind: str = "change") -> list[list[str]]:
    """The cells of each ``<tr class="KIND">`` of a page, as text."""
    return [
        [_cell(td) for td in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(rf'<tr class="{kind}">(.*?)</tr>', text, re.S)
    ]


def newest_audit(hub: Hub) -> int:
    entries = hub.api.get("/audit", params={"limit": 1})["entries"]
    return int(entries[0]["id"]) if entries else 0


def audit_since(hub: Hub, mark: int) -> list[dict[str, Any]]:
    entries = hub.api.get("/audit", params={"limit": 100})["entries"]
    return [e for e in reversed(entries) if e["id"] > mark]


def states(hub: Hub, dag_id: str, run_id: str) -> dict[str, str | None]:
    run = hub.api.run(dag_id, run_id)
    return {"run": run["state"], **{t["task_id"]: t["state"] for t in run["tasks"]}}


def trigger(hub: Hub, dag_id: str, run_id: str) -> None:
    answer = hub.api.http.post(f"/dags/{dag_id}/runs", json={"run_id": run_id})
    assert answer.status_code == 200, answer.text


def finish_next(worker: RawWorker, state: str) -> dict[str, Any]:
    (job,) = worker.jobs()
    body = {"state": state} if state == "success" else {"state": state, "error": "it broke"}
    assert worker.finish(job["attempt_id"], body).status_code == 200
    return job


def test_each_action_needs_the_role_of_its_rest_route() -> None:
    assert set(ACTIONS) == set(REST_ROUTE)
    for action, route in REST_ROUTE.items():
        assert ACTIONS[action] == ROLE_NEEDED[route], action


def test_trigger_from_the_params_form_changes_nothing_until_confirmed(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    ops = consoles["operator"]
    form = ops.get("/ui/dags/triggered/trigger")
    assert form.status_code == 200
    text = form.text
    # Each param a field by its type, enum and default.
    assert 'name="param.n" value="2" inputmode="decimal"' in text
    assert '<option value="&#34;red&#34;" selected>red</option>' in text
    assert '<option value="false" selected>false</option>' in text
    assert re.search(r'<textarea [^>]*name="param.items"[^>]*>\[\s*1\s*\]</textarea>', text)
    assert 'name="param.note" value=""' in text
    assert "how many" in text
    assert "(required)" in text

    typed = {
        "param.n": "0",
        "param.color": '"green"',
        "param.dry": "true",
        "param.items": "[1, 2",
        "param.note": "",
        "run_id": "has space",
        "logical_date": "2026-13-01",
    }
    mark = newest_audit(hub)
    bad = ops.post("/ui/dags/triggered/trigger", typed)
    assert bad.status_code == 400
    errors = field_errors(bad.text)
    assert set(errors) == {"n", "color", "items", "note"}, errors
    assert "less than the minimum of 1" in errors["n"]
    assert errors["color"] == "not one of the choices"
    assert "not valid JSON" in errors["items"]
    assert "is required" in errors["note"]
    assert "a run id is at most" in bad.text
    assert "is not an ISO 8601 date" in bad.text
    # The form keeps what was typed.
    assert 'name="param.n" value="0"' in bad.text
    assert "[1, 2</textarea>" in bad.text
    assert 'name="run_id" value="has space"' in bad.text
    assert 'name="logical_date" value="2026-13-01"' in bad.text
    assert '<option value="true" selected>true</option>' in bad.text

    good = {
        **typed,
        "param.n": "7",
        "param.color": '"blue"',
        "param.items": "[1, 2]",
        "param.note": "hi <b>there</b>",
        "run_id": "console-trigger-1",
        "logical_date": "2026-02-01T06:00",
    }
    shown = ops.post("/ui/dags/triggered/trigger", good)
    assert shown.status_code == 200, shown.text
    params = {r[0]: r[1] for r in rows(shown.text, "param-value")}
    assert params == {
        "n": "7",
        "color": '"blue"',
        "dry": "true",
        "items": "[ 1, 2 ]",
        "note": '"hi <b>there</b>"',
    }
    assert "<b>there</b>" not in shown.text  # shown as text
    assert "console-trigger-1" in shown.text
    assert "2026-02-01T06:00:00+00:00" in shown.text
    runs = hub.api.get("/dags/triggered/runs")["dag_runs"]
    assert runs == []  # nothing yet: only the confirmation's POST triggers
    assert audit_since(hub, mark) == []

    done = ops.confirm(shown)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/dags/triggered/grid"
    run = hub.api.run("triggered", "console-trigger-1")
    assert run["conf"] == {
        "n": 7,
        "color": "blue",
        "dry": True,
        "items": [1, 2],
        "note": "hi <b>there</b>",
    }
    assert run["logical_date"].startswith("2026-02-01T06:00:00")
    (entry,) = audit_since(hub, mark)
    assert entry["actor"] == "ana-operator"
    assert entry["action"] == "dag.trigger"
    assert entry["target"] == "dag:triggered"
    assert entry["details"] == {
        "run_id": "console-trigger-1",
        "logical_date": "2026-02-01T06:00:00+00:00",
    }
    # The same confirmation again: the run exists now (a page, no second run).
    again = ops.confirm(shown)
    assert again.status_code == 400
    assert "has a run &#39;console-trigger-1&#39; already" in again.text
    # A confirmation forged with a bad value is judged again, not trusted.
    action, fields = confirmation(shown.text)
    forged = ops.post(action, {**fields, "run_id": "console-trigger-2", "param.n": "-5"})
    assert forged.status_code == 400
    assert "less than the minimum" in forged.text
    assert [r["run_id"] for r in hub.api.get("/dags/triggered/runs")["dag_runs"]] == [
        "console-trigger-1"
    ]


def test_clear_confirmation_lists_exactly_what_is_cleared(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    ops = consoles["operator"]
    trigger(hub, "clearing", "c1")
    worker = RawWorker(hub, "w-clear", "q-clearing")
    try:
        assert finish_next(worker, "success")["task_id"] == "a"
        assert finish_next(worker, "failed")["task_id"] == "b"
        before = states(hub, "clearing", "c1")
        assert before == {"run": "failed", "a": "success", "b": "failed", "c": "upstream_failed"}
        page = "/ui/dags/clearing/runs/c1/tasks/b"
        shown = ops.get(page).text
        assert 'href="/ui/dags/clearing/runs/c1/tasks/b/clear?downstream=true"' in shown

        mark = newest_audit(hub)
        only = ops.get(f"{page}/clear")
        assert rows(only.text) == [["b", "", "failed", "cleared: runs again", ""]]
        down = ops.get(f"{page}/clear", downstream="true")
        listed = rows(down.text)
        assert listed == [
            ["b", "", "failed", "cleared: runs again", ""],
            ["c", "", "upstream_failed", "cleared: runs again", ""],
        ]
        assert "queued" in _cell(down.text.split("Run <code>c1</code>:")[1].split("</p>")[0])
        whole = ops.get("/ui/dags/clearing/runs/c1/clear")
        assert [r[0] for r in rows(whole.text)] == ["a", "b", "c"]
        failed = ops.get("/ui/dags/clearing/runs/c1/clear", only_failed="true")
        assert [r[0] for r in rows(failed.text)] == ["b", "c"]
        assert states(hub, "clearing", "c1") == before  # looking changed nothing
        assert audit_since(hub, mark) == []

        done = ops.confirm(down)
        assert done.status_code == 303
        assert done.headers["location"] == page
        (entry,) = audit_since(hub, mark)
        assert entry["action"] == "task.clear"
        assert entry["actor"] == "ana-operator"
        assert entry["details"]["cleared"] == [r[0] for r in listed]
        assert entry["details"] == {
            "run_id": "c1",
            "task_id": "b",
            "downstream": True,
            "cleared": ["b", "c"],
        }
        after = states(hub, "clearing", "c1")
        assert after["a"] == "success"
        assert after["b"] in ("queued", None)
        assert after["c"] is None
        assert after["run"] in ("queued", "running")
        # Cleared: b runs again.
        assert finish_next(worker, "success")["task_id"] == "b"
        assert finish_next(worker, "success")["task_id"] == "c"
        assert states(hub, "clearing", "c1")["run"] == "success"
        nothing = ops.get("/ui/dags/clearing/runs/c1/clear", only_failed="true")
        assert rows(nothing.text) == []
        assert "nothing changes" in nothing.text
    finally:
        worker.close()


def test_mark_confirmation_says_what_moves_from_what_to_what(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    ops = consoles["operator"]
    trigger(hub, "marking", "m1")
    worker = RawWorker(hub, "w-mark", "q-marking")
    try:
        (job,) = worker.jobs()  # a runs now on w-mark
        assert job["task_id"] == "a"
        before = states(hub, "marking", "m1")
        assert before == {"run": "running", "a": "running", "b": None, "c": None}
        mark = newest_audit(hub)
        task = ops.get("/ui/dags/marking/runs/m1/tasks/a/mark", state="success")
        assert rows(task.text) == [
            ["a", "", "running", "success", "its running try is ended on worker w-mark"]
        ]
        run = ops.get("/ui/dags/marking/runs/m1/mark", state="failed")
        assert rows(run.text) == [
            ["a", "", "running", "failed", "its running try is ended on worker w-mark"],
            ["b", "", "none", "skipped", ""],
            ["c", "", "none", "skipped", ""],
        ]
        assert states(hub, "marking", "m1") == before
        assert audit_since(hub, mark) == []

        assert ops.confirm(task).status_code == 303
        (entry,) = audit_since(hub, mark)
        assert entry["action"] == "task.mark"
        assert entry["actor"] == "ana-operator"
        assert entry["details"] == {
            "run_id": "m1",
            "task_id": "a",
            "state": "success",
            "map_indexes": [-1],
        }
        assert states(hub, "marking", "m1")["a"] == "success"
        # Asked again, the mark has nothing to move: the page says so.
        same = ops.get("/ui/dags/marking/runs/m1/tasks/a/mark", state="success")
        assert rows(same.text) == []
        assert "success already: nothing changes" in same.text
        # The run's preview follows what changed: a is finished now and is kept.
        run = ops.get("/ui/dags/marking/runs/m1/mark", state="failed")
        listed = rows(run.text)
        assert [r[0] for r in listed] == ["b", "c"]
        assert all(r[3] in ("failed", "skipped") for r in listed)
        assert "Named, and kept as they are" in run.text
        mark = newest_audit(hub)
        assert ops.confirm(run).status_code == 303
        assert [e["action"] for e in audit_since(hub, mark)] == ["run.mark"]
        got = states(hub, "marking", "m1")
        assert got["run"] == "failed"
        assert got["a"] == "success"
        assert {got["b"], got["c"]} <= {"failed", "skipped"}
        assert [r[3] for r in listed] == [got["b"], got["c"]]
    finally:
        worker.close()


def test_pause_and_backfill_change_nothing_until_confirmed(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    ops = consoles["operator"]
    dag = hub.api.get("/dags/daily")
    assert dag["is_paused"] is True
    listed = ops.get("/ui/dags").text
    assert 'href="/ui/dags/daily/unpause"' in listed
    mark = newest_audit(hub)
    shown = ops.get("/ui/dags/daily/unpause")
    assert "scheduled again" in shown.text
    assert hub.api.get("/dags/daily")["is_paused"] is True
    assert ops.confirm(shown).headers["location"] == "/ui/dags/daily/grid"
    assert hub.api.get("/dags/daily")["is_paused"] is False
    paused = ops.confirm(ops.get("/ui/dags/daily/pause"))
    assert paused.status_code == 303
    assert hub.api.get("/dags/daily")["is_paused"] is True
    entries = audit_since(hub, mark)
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("dag.unpause", "ana-operator"),
        ("dag.pause", "ana-operator"),
    ]

    form = ops.get("/ui/dags/daily/backfill")
    assert form.status_code == 200
    for start, end, reason in [
        ("2026-01-03", "2026-01-01", "is before"),
        ("not a date", "2026-01-01", "is not an ISO 8601 date"),
        ("0001-01-01", "2026-01-01", "not in the years 1900 to 9000"),
        ("2026-01-01", "x" * 100, "at most 40 characters"),
    ]:
        bad = ops.post("/ui/dags/daily/backfill", {"start": start, "end": end})
        assert bad.status_code == 400, (start, end)
        assert reason in html.unescape(bad.text), (start, end, bad.text)
        assert f'value="{html.escape(start)}"' in bad.text  # kept as typed
    mark = newest_audit(hub)
    existing = hub.api.get("/dags/daily/runs")["dag_runs"]
    plan = ops.post("/ui/dags/daily/backfill", {"start": "2026-01-01", "end": "2026-01-03"})
    assert plan.status_code == 200, plan.text
    to_make = [r[0] for r in rows(plan.text)]
    assert to_make == [f"backfill__2026-01-0{d}T00:00:00+00:00" for d in (1, 2, 3)]
    assert hub.api.get("/dags/daily/runs")["dag_runs"] == existing
    assert audit_since(hub, mark) == []
    assert ops.confirm(plan).status_code == 303
    made = {r["run_id"] for r in hub.api.get("/dags/daily/runs")["dag_runs"]}
    assert set(to_make) <= made
    (entry,) = audit_since(hub, mark)
    assert entry["action"] == "dag.backfill"
    assert entry["details"]["run_ids"] == to_make
    again = ops.post("/ui/dags/daily/backfill", {"start": "2026-01-01", "end": "2026-01-03"})
    assert rows(again.text) == []
    assert "3 intervals of the range already have a run" in again.text


def test_worker_actions_name_the_worker_and_its_running_tasks(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    ops, admin = consoles["operator"], consoles["admin"]
    trigger(hub, "working", "k1")
    worker = RawWorker(hub, "w-work", "q-work")
    spare = RawWorker(hub, "w-spare", "q-other")
    try:
        jobs = worker.jobs(slots=2)
        while len(jobs) < 2:
            jobs += worker.jobs(slots=2 - len(jobs))
        mark = newest_audit(hub)
        base = "/ui/workers/w-work"
        shown = ops.get(f"{base}/maintenance", on="true")
        assert "w-work" in shown.text
        tries = rows(shown.text, "running-try")
        # w has a retry left (retries=1), v has none: what a give-up would do to each.
        assert sorted(tries) == [
            ["working / k1 / v", "1", "failed"],
            ["working / k1 / w", "1", "up_for_retry"],
        ]
        assert "its running tasks go on" in shown.text
        assert hub.api.worker("w-work")["requested_maintenance"] is False
        action, fields = confirmation(shown.text)
        done = ops.post(action, {**fields, "comment": "disk <swap>"})
        assert done.status_code == 303
        assert hub.api.worker("w-work")["requested_maintenance"] is True
        (entry,) = audit_since(hub, mark)
        assert entry["action"] == "worker.maintenance"
        assert entry["actor"] == "ana-operator"
        assert entry["details"] == {"on": True, "comment": "disk <swap>"}
        page = ops.get("/ui/workers").text
        assert 'href="/ui/workers/w-work/maintenance?on=false"' in page
        off = ops.confirm(ops.get(f"{base}/maintenance", on="false"))
        assert off.status_code == 303
        assert hub.api.worker("w-work")["requested_maintenance"] is False

        mark = newest_audit(hub)
        asked = admin.get(f"{base}/shutdown")
        assert "finish" in asked.text
        assert hub.api.worker("w-work")["shutdown_requested"] is False
        assert admin.confirm(asked).status_code == 303
        assert hub.api.worker("w-work")["shutdown_requested"] is True

        revoke = admin.get(f"{base}/revoke")
        assert sorted(rows(revoke.text, "running-try")) == sorted(tries)
        assert hub.api.worker("w-work")["state"] != "revoked"
        assert states(hub, "working", "k1")["w"] == "running"
        assert admin.confirm(revoke).status_code == 303
        assert hub.api.worker("w-work")["state"] == "revoked"
        after = states(hub, "working", "k1")
        assert (after["w"], after["v"]) == ("up_for_retry", "failed")  # as the page said
        assert worker.heartbeat().status_code == 401

        remove = admin.get("/ui/workers/w-spare/remove")
        assert "It runs no task now" in remove.text
        assert admin.confirm(remove).status_code == 303
        assert "w-spare" not in {w["name"] for w in hub.api.get("/workers")["workers"]}
        assert [(e["action"], e["actor"], e["target"]) for e in audit_since(hub, mark)] == [
            ("worker.shutdown", "admin", "worker:w-work"),
            ("worker.revoke", "admin", "worker:w-work"),
            ("worker.remove", "admin", "worker:w-spare"),
        ]
        gone = admin.get("/ui/workers/w-spare/remove")
        assert gone.status_code == 404
        assert "no worker" in gone.text
    finally:
        worker.close()
        spare.close()


def test_an_enrolment_token_is_shown_once_and_enrols(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    admin = consoles["admin"]
    for fields, reason in [
        ({"queues": "", "hours": "24"}, "name at least one queue"),
        ({"queues": "a b", "hours": "24"}, "queue"),
        ({"queues": "q", "hours": "nan"}, "more than 0"),
        ({"queues": "q", "hours": "1e999"}, "more than 0"),
        ({"queues": "q", "hours": "soon"}, "a number of hours"),
        ({"queues": "q", "hours": "1", "name": "-bad"}, "a worker name starts"),
    ]:
        bad = admin.post("/ui/workers/enrolment-token", fields)
        assert bad.status_code == 400, fields
        assert reason in bad.text, (fields, bad.text)
    mark = newest_audit(hub)
    shown = admin.post(
        "/ui/workers/enrolment-token", {"queues": "q-new, q-two", "name": "w-new", "hours": "2"}
    )
    assert shown.status_code == 200, shown.text
    assert "w-new" in shown.text
    assert "q-new, q-two" in shown.text
    assert "w-new" not in {t["name"] for t in hub.api.get("/workers/enrolment-tokens")["tokens"]}
    assert audit_since(hub, mark) == []
    made = admin.confirm(shown)
    assert made.status_code == 200
    token = re.search(r'<code id="enrolment-token">([^<]+)</code>', made.text)
    assert token
    assert made.headers["cache-control"] == "no-store"
    (entry,) = audit_since(hub, mark)
    assert entry["action"] == "enrolment_token.create"
    assert entry["actor"] == "admin"
    assert token[1] not in str(entry)
    assert token[1] not in admin.get("/ui/workers").text
    enrolled = httpx.post(f"{hub.url}/api/worker/v1/enrol", json={"token": token[1]})
    assert enrolled.status_code == 200, enrolled.text
    assert "w-new" in {w["name"] for w in hub.api.get("/workers")["workers"]}


#: A GET of each action's confirmation, and its POST with the fields it takes.
def _action_requests() -> list[tuple[str, str, dict[str, str]]]:
    run = "/ui/dags/guarded/runs/g1"
    return [
        ("dag.pause", "/ui/dags/guarded/pause", {}),
        ("dag.trigger", "/ui/dags/guarded/trigger/confirm", {"run_id": "forged"}),
        (
            "dag.backfill",
            "/ui/dags/daily/backfill/confirm",
            {"start": "2026-01-05", "end": "2026-01-05"},
        ),
        ("task.clear", f"{run}/tasks/a/clear", {"downstream": "1"}),
        ("task.mark", f"{run}/tasks/a/mark", {"state": "failed"}),
        ("run.clear", f"{run}/clear", {"only_failed": "0"}),
        ("run.mark", f"{run}/mark", {"state": "failed"}),
        ("worker.maintenance", "/ui/workers/w-guard/maintenance", {"on": "1"}),
        ("worker.shutdown", "/ui/workers/w-guard/shutdown", {}),
        ("worker.update", "/ui/workers/w-guard/update", {}),
        ("worker.revoke", "/ui/workers/w-guard/revoke", {}),
        ("worker.remove", "/ui/workers/w-guard/remove", {}),
        (
            "enrolment_token.create",
            "/ui/workers/enrolment-token/confirm",
            {"queues": "q", "hours": "1"},
        ),
    ]


def _guarded_state(hub: Hub) -> Any:
    """Everything the refused POSTs below could change."""
    return (
        states(hub, "guarded", "g1"),
        hub.api.get("/dags/guarded")["is_paused"],
        sorted(r["run_id"] for r in hub.api.get("/dags/daily/runs")["dag_runs"]),
        {k: v for k, v in hub.api.worker("w-guard").items() if k != "last_heartbeat"},
        len(hub.api.get("/workers/enrolment-tokens")["tokens"]),
        newest_audit(hub),
    )


def test_roles_hide_buttons_and_refuse_forged_posts_and_every_post_checks_csrf(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    trigger(hub, "guarded", "g1")
    worker = RawWorker(hub, "w-guard", "q-guarded")
    try:
        (job,) = worker.jobs()
        pages = [
            "/ui/dags",
            "/ui/dags/guarded/grid",
            "/ui/dags/guarded/runs/g1/tasks/a",
            "/ui/workers",
        ]
        viewer = consoles["viewer"]
        for path in pages:
            assert action_links(viewer.get(path).text) == set(), path
            assert viewer.get(path).text.count('method="post"') == 1, path  # signing out
        operator = consoles["operator"]
        assert action_links(operator.get("/ui/workers").text) == {"maintenance"}
        assert action_links(operator.get(pages[1]).text) == {"trigger", "pause"}
        assert action_links(operator.get(pages[2]).text) == {"clear", "mark"}
        assert action_links(consoles["admin"].get("/ui/workers").text) == {
            "maintenance",
            "shutdown",
            "revoke",
            "remove",
            "enrolment-token",
        }
        assert "/ui/dags/guarded/runs/g1/tasks/a/clear" in operator.get(pages[2]).text
        admin_page = consoles["admin"].get("/ui/workers").text
        for part in ("/shutdown", "/revoke", "/remove", "/ui/workers/enrolment-token"):
            assert part in admin_page, part

        before = _guarded_state(hub)
        for action, path, fields in _action_requests():
            needed = ACTIONS[action]
            for role in ("viewer", "operator"):
                console = consoles[role]
                if role == "operator" and needed != "admin":
                    continue
                refused = console.post(path, fields)
                assert refused.status_code == 403, (action, role, refused.text)
                assert f"needs the {needed} role" in refused.text
                assert f"has the {role} role" in refused.text
                if not path.endswith("/confirm"):
                    query = {"state": "failed"} if "/mark" in path else {}
                    query |= {"on": "true"} if "/maintenance" in path else {}
                    page = console.get(path, **query)
                    assert page.status_code == 403, (action, role)
            # A role that may: without the session's CSRF value, or with another, refused.
            admin = consoles["admin"]
            for csrf in (None, "0" * 32, consoles["operator"].csrf):
                data = fields if csrf is None else {**fields, "csrf": csrf}
                refused = admin.http.post(path, data=data)
                assert refused.status_code == 403, (action, csrf, refused.text)
                assert "CSRF" in refused.text
        assert _guarded_state(hub) == before  # nothing refused changed anything
        assert states(hub, "guarded", "g1")["a"] == "running"
        assert worker.heartbeat(running=[job["attempt_id"]]).status_code == 200
    finally:
        worker.close()


def test_hostile_input_gets_a_4xx_page_with_a_reason(
    hub: Hub, consoles: dict[str, Console]
) -> None:
    admin = consoles["admin"]
    trigger(hub, "clearing", "c-hostile")
    mark = newest_audit(hub)
    huge = "9" * 25
    for path, params, status, reason in [
        ("/ui/dags/%00/trigger", {}, 422, "dag_id"),
        (f"/ui/dags/{'d' * 251}/pause", {}, 422, "dag_id"),
        ("/ui/dags/nope/trigger", {}, 404, "no DAG"),
        ("/ui/dags/triggered/runs/r%00/clear", {}, 422, "run_id"),
        ("/ui/dags/triggered/runs/nope/clear", {}, 404, "has no run"),
        ("/ui/dags/clearing/runs/c-hostile/tasks/zz/clear", {}, 404, "has no task"),
        ("/ui/dags/clearing/runs/c1/tasks/a/mark", {"state": "running"}, 422, "state"),
        ("/ui/dags/clearing/runs/c1/tasks/a/mark", {}, 422, "state"),
        (
            "/ui/dags/clearing/runs/c1/tasks/a/mark",
            {"state": "success", "map_index": huge},
            422,
            "map_index",
        ),
        ("/ui/dags/clearing/runs/c1/tasks/a/clear", {"downstream": "maybe"}, 422, "downstream"),
        ("/ui/workers/-x/revoke", {}, 422, "name"),
        ("/ui/workers/nobody/revoke", {}, 404, "no worker"),
        ("/ui/workers/nobody/maintenance", {"on": "perhaps"}, 422, "on"),
    ]:
        answer = admin.get(path, **params)
        assert answer.status_code == status, (path, params, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
        assert reason in html.unescape(answer.text), (path, answer.text)
    for path, fields, status, reason in [
        (
            "/ui/dags/clearing/runs/c-hostile/tasks/a/mark",
            {"state": "running"},
            400,
            "success or failed",
        ),
        (
            "/ui/dags/clearing/runs/c-hostile/tasks/a/mark",
            {"state": "failed", "map_index": huge},
            400,
            "map_index",
        ),
        (
            "/ui/dags/clearing/runs/c-hostile/tasks/a/mark",
            {"state": "failed", "map_index": "²"},
            400,
            "whole number",
        ),
        ("/ui/dags/clearing/runs/c-hostile/tasks/a/clear", {"downstream": "yes"}, 400, "0 or 1"),
        ("/ui/dags/clearing/runs/c-hostile/tasks/a/clear", {}, 400, "0 or 1"),
        ("/ui/workers/nobody/maintenance", {"on": "1", "comment": "a\x00b"}, 400, "NUL"),
        ("/ui/workers/nobody/maintenance", {"on": "1", "comment": "x" * 1001}, 400, "at most 1000"),
        ("/ui/workers/nobody/maintenance", {"on": "1"}, 404, "no worker"),
        ("/ui/dags/triggered/trigger", {"param.n": "1e999"}, 400, "is not a whole number"),
        ("/ui/dags/triggered/trigger", {"param.n": "NaN"}, 400, "is not a whole number"),
        (
            "/ui/dags/triggered/trigger",
            {"param.items": "[" * 5000 + "]" * 5000},
            400,
            "nested more than",
        ),
        ("/ui/dags/triggered/trigger", {"param.note": "x\x00y"}, 400, "NUL"),
        ("/ui/dags/triggered/trigger", {"logical_date": "9999-01-01"}, 400, "1900 to 9000"),
        (
            "/ui/dags/daily/backfill/confirm",
            {"start": "2026-01-01T25:00", "end": "2026"},
            400,
            "ISO 8601",
        ),
    ]:
        answer = admin.post(path, fields)
        assert answer.status_code == status, (path, fields, answer.text)
        assert reason in html.unescape(answer.text) or reason in answer.text, (
            path,
            answer.text[-800:],
        )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    path = "/ui/dags/clearing/runs/c-hostile/clear"
    for body, status in [
        (b"csrf=\xff\xfe", 400),
        (b"x=" + b"y" * 20000, 413),
        ("&".join(f"f{i}=1" for i in range(50)).encode(), 400),
    ]:
        answer = admin.http.post(path, content=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("text/html")
    as_json = admin.http.post(path, json={"csrf": admin.csrf, "only_failed": "0"})
    assert as_json.status_code == 415
    assert [e["action"] for e in audit_since(hub, mark)] == []
    assert states(hub, "clearing", "c-hostile")["a"] == "queued"
