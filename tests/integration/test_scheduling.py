"""Scheduling semantics through a real hub and worker: branching, the
timetable's catchup runs, dagrun_timeout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, make_database_url
from tests.hubtools import write_dag
from tests.integration.processes import Hub, Worker

pytestmark = pytest.mark.integration

BRANCH_DAGS = """
from tether import DAG, BranchPythonOperator, EmptyOperator, task

with DAG("branchy"):
    @task.branch
    def pick(conf=None):
        return "left" if (conf or {}).get("side", "left") == "left" else ["right"]

    left = EmptyOperator(task_id="left")
    right = EmptyOperator(task_id="right")
    after_right = EmptyOperator(task_id="after_right")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    choice = pick()
    choice >> [left, right]
    right >> after_right
    [left, after_right] >> join

with DAG("classic_branch"):
    br = BranchPythonOperator(task_id="br", python_callable=lambda: None)
    br >> [EmptyOperator(task_id="a"), EmptyOperator(task_id="b")]

with DAG("bad_branch"):
    @task.branch
    def wrong():
        return "nowhere"

    wrong() >> EmptyOperator(task_id="only")
"""


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"scheduling-{request.param}")
    dags = root / "dags"
    write_dag(dags, "branches.py", BRANCH_DAGS)
    urls = make_database_url(request.param, root, _postgres_reason)
    hub = Hub(root / "hub", dags, next(urls))
    worker = Worker(hub, root / "worker", "default", "w1")
    try:
        worker.wait_registered()
        hub.api.wait_dags("branchy", "classic_branch", "bad_branch")
        yield hub
    finally:
        worker.stop()
        hub.stop()
        for _ in urls:
            pass


def _states(hub: Hub, dag_id: str, conf: dict[str, object] | None = None) -> dict[str, str]:
    run = hub.api.wait_run(dag_id, hub.api.trigger(dag_id, conf))
    return {t["task_id"]: t["state"] for t in run["tasks"]} | {"<run>": run["state"]}


def test_branch_follows_the_chosen_task_and_skips_the_rest(hub: Hub) -> None:
    assert _states(hub, "branchy", {"side": "left"}) == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "after_right": "skipped",  # the skip spreads downstream
        "join": "success",
        "<run>": "success",
    }
    assert _states(hub, "branchy", {"side": "right"}) == {
        "pick": "success",
        "left": "skipped",
        "right": "success",
        "after_right": "success",
        "join": "success",
        "<run>": "success",
    }


def test_a_branch_returning_none_skips_every_direct_downstream_task(hub: Hub) -> None:
    assert _states(hub, "classic_branch") == {
        "br": "success",
        "a": "skipped",
        "b": "skipped",
        "<run>": "success",
    }


def test_a_branch_naming_a_task_that_is_not_downstream_fails(hub: Hub) -> None:
    run = hub.api.wait_run("bad_branch", hub.api.trigger("bad_branch"))
    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert states == {"wrong": "failed", "only": "upstream_failed"}
    log = hub.api.log("bad_branch", run["run_id"], "wrong")
    assert "returned 'nowhere', which is not directly downstream of it" in log
