"""State changes through the real APIs and store: the log line of every move, and the
moves the state tables refuse that the hub used to make (marking what is marked)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.hubtools import make_hub, parse, write_dag
from tests.integration.test_api import W, Workers, run
from tether.hub.core import attempts, queries, sessions
from tether.hub.state import Hub
from tether.hub.store.models import CallbackRequest, TaskAttempt
from tether.protocol import AttemptResult

CALLED = """
    from tether import DAG, BashOperator
    def told(context):
        print("ended because", context["reason"])
    with DAG("called", on_failure_callback=told, on_success_callback=told):
        BashOperator(task_id="a", bash_command="true")
"""


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(dags, "called.py", CALLED)
    hub = make_hub(tmp_path, database_url, dags)
    try:
        parse(hub)
        yield hub
    finally:
        hub.store.dispose()


def _callbacks(hub: Hub) -> list[tuple[str, str, str]]:
    with hub.store.transaction() as s:
        return [(r.run_id, r.kind, r.reason) for r in s.scalars(select(CallbackRequest))]


def test_every_move_of_a_failing_task_logs_one_line(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/called/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            done = await worker.post(
                f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "failed"}
            )
            assert done.json() == {"state": "failed"}

    with caplog.at_level(logging.DEBUG, logger="tether.states"):
        run(hub, scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.states"]
    task = "dag_id=called run_id=r1 task_id=a map_index=-1"
    attempt = next(line for line in lines if line.startswith("attempt ")).split()[5]
    assert lines == [
        "worker worker=w1 from=none to=enrolled reason=enrolled",
        "worker worker=w1 from=enrolled to=idle reason=reported",
        "run dag_id=called run_id=r1 from=none to=queued reason=created",
        "run dag_id=called run_id=r1 from=queued to=running reason=started",
        f"task_instance {task} from=none to=queued reason=trigger_rule",
        f"task_instance {task} from=queued to=running reason=claimed",
        f"attempt {task} {attempt} try_number=1 from=none to=running reason=claimed",
        f"attempt {task} {attempt} try_number=1 from=running to=failed reason=finished",
        f"task_instance {task} from=running to=failed reason=finished",
        "run dag_id=called run_id=r1 from=running to=failed reason=task_failure",
    ]


def test_marking_a_run_the_state_it_has_asks_for_no_second_callback(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        await admin.post("/api/v1/dags/called/runs", json={"run_id": "r1"})
        for _again in range(2):
            marked = await admin.patch("/api/v1/dags/called/runs/r1", json={"state": "success"})
            assert marked.status_code == 200

    run(hub, scenario)
    assert _callbacks(hub) == [("r1", "on_success_callback", "marked")]


def test_marking_a_task_the_state_it_has_leaves_its_finished_run_alone(hub: Hub) -> None:
    """As Airflow: the task instance is left as it is, so the run is not judged again
    (which ended it, and asked for its callback, a second time)."""

    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        await admin.post("/api/v1/dags/called/runs", json={"run_id": "r1"})
        before = (await admin.get("/api/v1/dags/called/runs/r1")).json()
        assert before["state"] == "running"
        for _again in range(2):
            marked = await admin.patch(
                "/api/v1/dags/called/runs/r1/tasks/a", json={"state": "failed"}
            )
            assert marked.json()["map_indexes"] == [-1]
        after = (await admin.get("/api/v1/dags/called/runs/r1")).json()
        assert after["state"] == "failed"
        assert [t["state"] for t in after["tasks"]] == ["failed"]

    run(hub, scenario)
    assert _callbacks(hub) == [("r1", "on_failure_callback", "task_failure")]


# PostgreSQL only: SQLite serialises writers, so what a transaction read cannot
# change under it.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_attempt_that_finished_meanwhile_is_not_given_up(hub: Hub) -> None:
    """The hub selects a lost worker's attempts before it locks their runs; one that a
    finish ended in between keeps its result (the old code wrote ``lost`` over it)."""
    with hub.store.transaction() as s:
        queries.trigger(s, "called", {}, "r1")
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, "w1", ["default"], 1).jobs
    with hub.store.transaction() as stale:
        (seen,) = stale.scalars(select(TaskAttempt).where(TaskAttempt.state == "running"))
        with hub.store.transaction() as s:  # the worker's finish wins the run lock
            attempts.finish(s, job.attempt_id, "w1", AttemptResult("success"))
        sessions.fail_attempt(stale, seen, "worker w1 lost")
    with hub.store.transaction() as s:
        attempt = s.get(TaskAttempt, job.attempt_id)
        assert attempt is not None
        assert (attempt.state, attempt.error) == ("success", None)
