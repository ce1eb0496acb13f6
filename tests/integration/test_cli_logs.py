"""Logs and errors from the command line, against one real hub and worker:
``tether tasks logs`` (whole and ``--follow``), ``runs show`` with each failed
task's error and next try, run ids given as ``latest`` or a prefix, ``dags
trigger --run-id --logical-date``, and a failed BashOperator's log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import ADMIN_TOKEN, Hub, running_hub, tether_cli, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    from datetime import timedelta
    from tether import DAG, BashOperator, EmptyOperator

    with DAG("talky"):
        BashOperator(
            task_id="count",
            bash_command="for i in $(seq 1 10); do echo line $i; sleep 0.2; done",
        )

    with DAG("flaky"):
        BashOperator(task_id="broken", bash_command="echo about to fail; exit 3")
        BashOperator(
            task_id="retried",
            bash_command="echo not yet; exit 4",
            retries=1,
            retry_delay=timedelta(hours=1),
        )

    with DAG("sleepy"):
        BashOperator(task_id="nap", bash_command="echo napping; sleep 120")

    with DAG("picky"):
        EmptyOperator(task_id="t")

    with DAG("dated"):
        EmptyOperator(task_id="t")
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, _postgres_reason: str | None) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("cli-logs")
    (root / "dags").mkdir()
    (root / "dags" / "cli_logs.py").write_text(textwrap.dedent(DAGS))
    with running_hub(
        root,
        "sqlite",
        _postgres_reason,
        root / "dags",
        wait_dags=("talky", "flaky", "sleepy", "picky", "dated"),
    ) as (hub, _):
        yield hub


def cli(hub: Hub, *args: str) -> str:
    result = tether_cli(*args, hub=hub)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(hub: Hub, *args: str) -> str:
    result = tether_cli(*args, hub=hub)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("[tether]")]


def test_the_log_of_a_finished_task_is_printed_whole(hub: Hub) -> None:
    run = hub.api.run_dag("talky")
    out = cli(hub, "tasks", "logs", "talky", run["run_id"], "count")
    assert _lines(out) == [f"line {i}" for i in range(1, 11)]
    assert "[tether] task ended: success" in out
    assert "has no try 2" in refused(
        hub, "tasks", "logs", "talky", run["run_id"], "count", "--try", "2"
    )


def test_follow_prints_the_log_as_it_grows_and_exits_with_the_try(hub: Hub) -> None:
    run_id = hub.api.trigger("talky")  # followed at once: it may not even be queued yet
    followed = tether_cli("tasks", "logs", "talky", run_id, "count", "--follow", hub=hub)
    assert followed.returncode == 0, followed.stderr
    assert "try 1 ended: success" in followed.stderr
    assert _lines(followed.stdout) == [f"line {i}" for i in range(1, 11)]
    # Complete and in order: byte for byte what the whole log reads once it has ended.
    assert followed.stdout == cli(hub, "tasks", "logs", "talky", run_id, "count")
    assert followed.stdout.rstrip().endswith("[tether] task ended: success")


@pytest.fixture(scope="module")
def flaky(hub: Hub) -> tuple[str, dict[str, Any]]:
    """A run of ``flaky`` once ``broken`` has failed and ``retried`` waits (an hour)
    for its second try: the run id and its tasks."""
    run_id = hub.api.trigger("flaky")

    def settled() -> dict[str, Any] | None:
        tasks = hub.api.tasks(hub.api.run("flaky", run_id))
        states = (tasks["broken"]["state"], tasks["retried"]["state"])
        return tasks if states == ("failed", "up_for_retry") else None

    return run_id, wait_for(settled, 60, "one task failed and one waiting to retry")


def test_runs_show_gives_each_failed_task_its_error_and_next_try(
    hub: Hub, flaky: tuple[str, dict[str, Any]]
) -> None:
    run_id, tasks = flaky
    out = cli(hub, "runs", "show", "flaky", run_id)
    broken = out.split("\n  broken")[1].split("\n  retried")[0]
    retried = out.split("\n  retried")[1]
    assert "error: Command exited with status 3: echo about to fail; exit 3" in broken
    assert "next try" not in broken
    assert "error: Command exited with status 4: echo not yet; exit 4" in retried
    assert f"next try at {tasks['retried']['next_retry_at']} (in " in retried

    # Following an ended try prints it and exits 1: it did not succeed.
    followed = tether_cli("tasks", "logs", "flaky", run_id, "broken", "--follow", hub=hub)
    assert followed.returncode == 1, followed.stderr
    assert "try 1 ended: failed" in followed.stderr


def test_a_failed_bash_command_is_logged_with_its_status_and_no_traceback(
    hub: Hub, flaky: tuple[str, dict[str, Any]]
) -> None:
    run_id, _ = flaky
    log = cli(hub, "tasks", "logs", "flaky", run_id, "broken")
    assert (
        "about to fail\n[tether] Command exited with status 3: echo about to fail; exit 3\n" in log
    )
    assert "Traceback" not in log
    assert "[tether] task ended: failed" in log


def test_latest_and_unique_prefixes_name_runs_everywhere(hub: Hub) -> None:
    made = ("pfx-alpha:1+0", "pfx-alpha:2+0", "pfx-beta+00:00")  # oldest first
    for run_id in made:
        hub.api.post("/dags/picky/runs", {"run_id": run_id})
    for run_id in made:
        hub.api.wait_run("picky", run_id)

    assert cli(hub, "runs", "show", "picky", "latest").startswith("run pfx-beta+00:00 of picky")
    assert cli(hub, "runs", "show", "picky", "pfx-b").startswith("run pfx-beta+00:00 of picky")
    assert "cleared 1 task(s) of run pfx-alpha:1+0: t" in cli(
        hub, "tasks", "clear", "picky", "pfx-alpha:1", "t"
    )
    hub.api.wait_run("picky", "pfx-alpha:1+0")
    assert "of run pfx-alpha:2+0 marked success" in cli(
        hub, "tasks", "mark", "picky", "pfx-alpha:2", "t", "success"
    )
    assert "[tether] task ended: success" in cli(hub, "tasks", "logs", "picky", "latest", "t")

    ambiguous = refused(hub, "runs", "show", "picky", "pfx-alpha")
    assert "2 runs of DAG picky start with 'pfx-alpha'" in ambiguous
    assert "\n  pfx-alpha:2+0\n  pfx-alpha:1+0" in ambiguous
    assert "no run of DAG picky starts with 'zzz'" in refused(hub, "runs", "clear", "picky", "zzz")
    assert "no runs yet" in refused(hub, "runs", "show", "dated", "latest")


def test_trigger_takes_a_run_id_and_a_logical_date(hub: Hub) -> None:
    args = ("dags", "trigger", "dated", "--run-id", "dated-1")
    out = cli(hub, *args, "--logical-date", "2024-05-01T08:00:00+02:00", "--wait")
    assert "triggered dated run dated-1" in out
    assert "run dated-1: success" in out
    run = hub.api.run("dated", "dated-1")
    assert run["logical_date"] == "2024-05-01T06:00:00+00:00"
    assert run["run_type"] == "manual"

    twice = refused(hub, *args, "--logical-date", "2024-05-02")
    assert "hub answered 409: DAG 'dated' already has a run 'dated-1'" in twice
    bad = refused(hub, "dags", "trigger", "dated", "--logical-date", "next tuesday")
    assert "hub answered 422" in bad
    assert "not an ISO 8601 date" in bad


def test_ctrl_c_stops_a_follow_cleanly(hub: Hub, tmp_path: Path) -> None:
    run_id = hub.api.trigger("sleepy")
    out_path, err_path = tmp_path / "follow.out", tmp_path / "follow.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        follow = subprocess.Popen(
            [sys.executable, "-m", "tether", "tasks", "logs", "sleepy", run_id, "nap", "-f"]
            + ["--hub", hub.url],
            env={**os.environ, "TETHER_TOKEN": ADMIN_TOKEN},
            stdout=out,
            stderr=err,
        )
        try:
            wait_for(lambda: b"napping" in out_path.read_bytes(), 60, "the first line followed")
            follow.send_signal(signal.SIGINT)
            follow.wait(timeout=30)
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
            hub.api.http.patch(f"/dags/sleepy/runs/{run_id}", json={"state": "failed"})
    assert follow.returncode == 130
    assert b"Traceback" not in err_path.read_bytes()
