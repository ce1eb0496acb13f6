"""Operating DAGs and runs from the CLI: clear, mark, pause, list. A real hub and a
real worker process on loopback, against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, make_database_url
from tests.integration.processes import Hub, Worker, tether_cli, wait_for

pytestmark = pytest.mark.integration

DAGS = {
    "chain.py": """
        from tether import DAG, BashOperator
        with DAG("chain"):
            a = BashOperator(task_id="a", bash_command="echo a ran")
            b = BashOperator(
                task_id="b",
                bash_command=(
                    "if [ -e {marker} ]; then echo b passes; "
                    "else touch {marker}; echo b fails the first time; exit 1; fi"
                ),
            )
            c = BashOperator(task_id="c", bash_command="echo c ran")
            BashOperator(task_id="d", bash_command="echo d ran")
            a >> b >> c
    """,
    "sleepy.py": """
        from tether import DAG, BashOperator
        with DAG("sleepy"):
            BashOperator(task_id="sleep", bash_command='echo "PID=$$"; exec sleep 300') >> (
                BashOperator(task_id="after", bash_command="echo after")
            )
    """,
    "quick.py": """
        from tether import DAG, BashOperator
        with DAG("quick"):
            BashOperator(task_id="t", bash_command="echo quick")
    """,
    "ticking.py": """
        from datetime import datetime, timedelta
        from tether import DAG, EmptyOperator
        with DAG("ticking", schedule=timedelta(seconds=1), start_date=datetime(2024, 1, 1),
                 catchup=False, is_paused_upon_creation=True):
            EmptyOperator(task_id="tick")
    """,
}


class Env:
    def __init__(self, hub: Hub, worker: Worker, marker: Path) -> None:
        self.hub, self.worker, self.marker, self.api = hub, worker, marker, hub.api

    def cli(self, *args: str) -> str:
        result = tether_cli(*args, hub=self.hub)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Env]:
    root = tmp_path_factory.mktemp(f"operations-{request.param}")
    dags = root / "dags"
    dags.mkdir()
    marker = root / "b-ran-once"
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source).replace("{marker}", str(marker)))
    urls = make_database_url(request.param, root, _postgres_reason)
    hub = Hub(root / "hub-home", dags, next(urls))
    worker = Worker(hub, root / "worker-home", "default", "ops-worker")
    try:
        worker.wait_registered()
        hub.api.wait_dags("chain", "sleepy", "quick", "ticking")
        yield Env(hub, worker, marker)
    finally:
        worker.stop()
        hub.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


def _states(run: dict[str, object]) -> dict[str, tuple[object, object]]:
    return {t["task_id"]: (t["state"], t["try_number"]) for t in run["tasks"]}  # type: ignore[attr-defined]


def test_clearing_a_failed_task_with_downstream_reruns_exactly_those(env: Env) -> None:
    run_id = env.api.trigger("chain")
    failed = env.api.wait_run("chain", run_id)
    assert failed["state"] == "failed"
    assert _states(failed) == {
        "a": ("success", 1),
        "b": ("failed", 1),
        "c": ("upstream_failed", 0),
        "d": ("success", 1),
    }
    assert env.marker.exists()

    out = env.cli("tasks", "clear", "chain", run_id, "b", "--downstream")
    assert f"cleared 2 task(s) of run {run_id}: b, c" in out
    rerun = env.api.wait_run("chain", run_id)

    assert rerun["state"] == "success"
    assert _states(rerun) == {
        "a": ("success", 1),
        "b": ("success", 2),
        "c": ("success", 1),
        "d": ("success", 1),
    }
    before, after = env.api.tasks(failed), env.api.tasks(rerun)
    for untouched in ("a", "d"):  # not run again: same try, same times, no new attempt
        assert after[untouched] == before[untouched]
        gone = env.api.http.get(f"/dags/chain/runs/{run_id}/tasks/{untouched}/logs?try_number=2")
        assert gone.status_code == 404
    assert "b fails the first time" in env.api.log("chain", run_id, "b", try_number=1)
    assert "b passes" in env.api.log("chain", run_id, "b", try_number=2)
    assert "c ran" in env.api.log("chain", run_id, "c", try_number=1)

    shown = env.cli("runs", "show", "chain", run_id)
    assert f"run {run_id} of chain: success" in shown
    assert re.search(r"^\s+b\s+success\s+try 2 on ops-worker$", shown, re.M), shown


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_marking_a_run_failed_kills_its_running_task_on_the_worker(env: Env) -> None:
    run_id = env.api.trigger("sleepy")

    def pid() -> int | None:
        log = env.api.http.get(f"/dags/sleepy/runs/{run_id}/tasks/sleep/logs")
        match = re.search(r"PID=(\d+)", log.text) if log.status_code == 200 else None
        return int(match.group(1)) if match else None  # 404 until the first try starts

    task_pid = wait_for(pid, 30, "the task to print its pid")
    assert _alive(task_pid)

    out = env.cli("runs", "mark", "sleepy", run_id, "failed")
    assert f"run {run_id} of sleepy marked failed" in out
    wait_for(lambda: not _alive(task_pid), 30, "the worker to kill the task")
    run = env.api.run("sleepy", run_id)
    assert run["state"] == "failed"
    assert _states(run) == {"sleep": ("failed", 1), "after": ("skipped", 0)}
    # The worker is still well and takes the next task.
    assert env.api.wait_run("quick", env.api.trigger("quick"))["state"] == "success"


def test_runs_are_listed_and_a_dag_is_paused_and_unpaused_from_the_cli(env: Env) -> None:
    first = env.api.trigger("quick")
    second = env.api.trigger("quick")
    env.api.wait_run("quick", first)
    env.api.wait_run("quick", second)
    listed = json.loads(env.cli("dags", "runs", "quick", "--limit", "2", "--json"))
    assert [r["run_id"] for r in listed["dag_runs"]] == [second, first]
    assert listed["total_entries"] >= 2
    table = env.cli("dags", "runs", "quick", "--state", "success")
    assert second in table
    assert re.search(r"^\d+ of \d+ run\(s\)", table.splitlines()[-1])

    assert env.api.get("/dags/ticking")["is_paused"] is True  # is_paused_upon_creation
    assert env.api.get("/dags/ticking/runs")["total_entries"] == 0
    assert "DAG ticking unpaused" in env.cli("dags", "unpause", "ticking")
    wait_for(lambda: env.api.get("/dags/ticking/runs")["total_entries"] > 0, 30, "a scheduled run")
    assert "DAG ticking paused" in env.cli("dags", "pause", "ticking")
    assert env.api.get("/dags/ticking")["is_paused"] is True
    (newest,) = env.api.get("/dags/ticking/runs", params={"limit": 1})["dag_runs"]
    assert newest["run_type"] == "scheduled"
    scheduled = json.loads(env.cli("dags", "runs", "ticking", "--type", "scheduled", "--json"))
    assert scheduled["dag_runs"]
    assert {r["run_type"] for r in scheduled["dag_runs"]} == {"scheduled"}
    manual = json.loads(env.cli("dags", "runs", "ticking", "--type", "manual", "--json"))
    assert manual == {"dag_runs": [], "total_entries": 0}

    missing = tether_cli("dags", "pause", "no_such_dag", hub=env.hub)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert "no_such_dag" in missing.stderr
    bad = tether_cli("tasks", "clear", "quick", first, "zz", hub=env.hub)
    assert bad.returncode == 1
    assert "has no task 'zz'" in bad.stderr


def test_a_task_marked_failed_and_its_run_cleared_of_failures_from_the_cli(env: Env) -> None:
    run_id = env.api.trigger("quick")  # generated: manual__<ISO 8601>, with ':' and '+'
    assert env.api.wait_run("quick", run_id)["state"] == "success"
    nothing = env.cli("runs", "clear", "quick", run_id, "--only-failed")
    assert nothing.strip() == f"nothing to clear in run {run_id}"

    assert "marked failed" in env.cli("tasks", "mark", "quick", run_id, "t", "failed")
    assert env.api.run("quick", run_id)["state"] == "failed"
    cleared = env.cli("runs", "clear", "quick", run_id, "--only-failed")
    assert f"cleared 1 task(s) of run {run_id}: t" in cleared
    again = env.api.wait_run("quick", run_id)
    assert again["state"] == "success"
    assert _states(again) == {"t": ("success", 2)}
    assert "marked success" in env.cli("runs", "mark", "quick", run_id, "success")
