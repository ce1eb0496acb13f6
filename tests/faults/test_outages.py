"""Failures the edge must survive: a hub outage mid-task, a worker killed with
SIGKILL, a duplicated deployment, a worker started before its hub."""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.processes import Hub, Worker, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    from datetime import timedelta
    from tether import DAG, BashOperator, PythonOperator

    def chatter():
        import time
        for i in range(200):
            print(f"line {i:03d} " + "x" * 40, flush=True)
            time.sleep(0.1)

    with DAG("chatty"):
        PythonOperator(task_id="talk", python_callable=chatter, queue="acme")

    with DAG("retried"):
        BashOperator(task_id="work", queue="acme", retries=1, retry_delay=timedelta(0),
                     bash_command='echo "PID=$$ try=$TETHER_TRY_NUMBER"; sleep 4; echo done')

    with DAG("exclusive"):
        BashOperator(task_id="once", queue="acme", retries=2, retry_delay=timedelta(0),
                     bash_command=(
                         'exec 9>>"$LOCK"; flock -n 9 || { echo OVERLAP >> "$OUT"; exit 1; }; '
                         'echo "begin $TETHER_TRY_NUMBER" >> "$OUT"; '
                         # Try 1 runs until the takeover kills it, however slow
                         # the machine is to start the second deployment.
                         '[ "$TETHER_TRY_NUMBER" = 1 ] && sleep 300; sleep 1; '
                         'echo "end $TETHER_TRY_NUMBER" >> "$OUT"'))

    with DAG("quick"):
        BashOperator(task_id="t", queue="acme", bash_command="echo quick")
"""


def _hub(tmp_path: Path, **env: str) -> Hub:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    (dags / "faults.py").write_text(textwrap.dedent(DAGS))
    hub = Hub(tmp_path / "hub-home", dags, f"sqlite:///{tmp_path / 'hub.db'}", **env)
    hub.api.wait_dags("chatty", "retried", "exclusive", "quick")
    return hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = _hub(tmp_path)
    try:
        yield hub
    finally:
        hub.stop()


def _running(hub: Hub, dag_id: str, run_id: str, task_id: str) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        task = hub.api.tasks(hub.api.run(dag_id, run_id))[task_id]
        return task if task["state"] == "running" else None

    return wait_for(check, 30, f"{dag_id}.{task_id} to run")


def test_a_task_keeps_running_through_a_hub_outage_and_its_log_arrives_whole(
    hub: Hub, tmp_path: Path
) -> None:
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
    try:
        worker.wait_registered()
        run_id = hub.api.trigger("chatty")
        _running(hub, "chatty", run_id, "talk")
        hub.api.log_with("chatty", run_id, "talk", "line 010")
        assert hub.stop() == 0
        time.sleep(10)
        local = worker.home / "logs" / "dag_id=chatty" / f"run_id={quote(run_id, safe='')}"
        local = local / "task_id=talk" / "attempt=1.log"
        during = local.read_text()
        assert "line 050" in during  # the task went on while the hub was away
        assert worker.popen.poll() is None
        hub = hub.restart()
        run = hub.api.wait_run("chatty", run_id, timeout=120)
        assert run["state"] == "success"
        assert hub.api.tasks(run)["talk"]["try_number"] == 1
        shipped = hub.api.http.get(f"/dags/chatty/runs/{run_id}/tasks/talk/logs").content
        assert shipped == local.read_bytes()
        assert shipped.count(b"line ") == 200
    finally:
        worker.stop()
        hub.stop()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_lost_worker_task_is_retried_elsewhere_and_its_late_report_refused(
    tmp_path: Path, start: str
) -> None:
    """In both task start modes (``--task-start``): the task dies with its
    ``kill -9``-ed worker, runs again on another, and the first worker's report
    on it, delivered when it comes back, is refused."""
    mode = ["--task-start", start]
    hub = _hub(
        tmp_path,
        TETHER_WORKER_LOST_TIMEOUT="3",
        TETHER_WORKER_HEARTBEAT="1",
        TETHER_SCHEDULER_SWEEP="0.5",
    )
    first = Worker(hub, tmp_path / "w1", "acme", "acme-1", extra=mode)
    second = None
    try:
        first.wait_registered()
        run_id = hub.api.trigger("retried")
        _running(hub, "retried", run_id, "work")
        log = hub.api.log_with("retried", run_id, "work", " try=")  # the whole PID line
        task_pid = int(log.split("PID=")[1].split()[0])
        first.stop(signal.SIGKILL)
        # The task does not outlive its worker.
        wait_for(lambda: not Path(f"/proc/{task_pid}").exists(), 5, "the task to die too")
        wait_for(lambda: hub.api.worker("acme-1")["state"] == "lost", 30, "the worker lost")

        second = Worker(hub, tmp_path / "w2", "acme", "acme-2", extra=mode)
        run = hub.api.wait_run("retried", run_id, timeout=60)
        task = hub.api.tasks(run)["work"]
        assert (run["state"], task["try_number"], task["worker"]) == ("success", 2, "acme-2")
        assert "try=1" in hub.api.log("retried", run_id, "work", try_number=1)

        # The first worker comes back and delivers what it spooled: refused.
        first = Worker(hub, tmp_path / "w1", "acme", "acme-1", extra=mode)
        wait_for(
            lambda: "hub refused a report on attempt" in first.output(),
            30,
            "the stale report to be refused",
        )
        assert "already ended as lost" in first.output()
        assert not list((first.home / "spool").glob("*.json"))
        final = hub.api.tasks(hub.api.run("retried", run_id))["work"]
        assert (final["state"], final["worker"]) == ("success", "acme-2")
        wait_for(lambda: hub.api.worker("acme-1")["state"] == "idle", 30, "it to be back")
    finally:
        first.stop()
        if second is not None:
            second.stop()
        hub.stop()


def test_a_duplicated_worker_takes_over_without_running_a_task_twice(
    hub: Hub, tmp_path: Path
) -> None:
    out, lock = tmp_path / "out.txt", tmp_path / "task.lock"
    env = {"OUT": str(out), "LOCK": str(lock)}
    original = Worker(hub, tmp_path / "a", "acme", "acme-1", env=env)
    copy = None
    try:
        original.wait_registered()
        run_id = hub.api.trigger("exclusive")
        _running(hub, "exclusive", run_id, "once")
        wait_for(lambda: out.exists() and "begin 1" in out.read_text(), 30, "the task to begin")
        # A second deployment with the same credential (copied home).
        (tmp_path / "b").mkdir()
        shutil.copy(original.home / "credential.json", tmp_path / "b" / "credential.json")
        copy = Worker(hub, tmp_path / "b", "acme", "acme-1", env=env)
        code = wait_for(lambda: original.popen.poll(), 30, "the older process to stop")
        assert code != 0
        assert "took over" in original.output()
        run = hub.api.wait_run("exclusive", run_id, timeout=60)
        assert run["state"] == "success"
        lines = out.read_text().split()
        assert "OVERLAP" not in lines
        assert hub.api.tasks(run)["once"]["try_number"] == 2
        assert out.read_text().splitlines() == ["begin 1", "begin 2", "end 2"]

        # A worker restarted right after a crash is not locked out.
        copy.stop(signal.SIGKILL)
        copy = Worker(hub, tmp_path / "b", "acme", "acme-1", env=env)
        copy.wait_registered()  # its new session takes over the dead one's at once
        run = hub.api.wait_run("quick", hub.api.trigger("quick"))
        assert (run["state"], hub.api.tasks(run)["t"]["worker"]) == ("success", "acme-1")
    finally:
        original.stop()
        if copy is not None:
            copy.stop()


def test_tokens_do_not_limit_how_long_a_task_runs_or_waits(hub: Hub, tmp_path: Path) -> None:
    # Long enough for a worker on a loaded machine to start and enrol with it.
    lifetime = 15
    token = hub.api.enrolment_token("acme", "acme-1", expires_in=lifetime)
    expires = time.monotonic() + lifetime  # after the hub's own expiry time
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1", enrol=token)
    try:
        worker.wait_registered()
        time.sleep(max(0.0, expires - time.monotonic()) + 0.5)  # the token is over
        run = hub.api.wait_run("retried", hub.api.trigger("retried"))
        assert hub.api.tasks(run)["work"]["try_number"] == 1
        assert run["state"] == "success"
    finally:
        assert worker.stop() == 0
    waiting = hub.api.trigger("quick")
    time.sleep(3)  # it waits in the queue while no worker runs
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")  # its stored credential
    try:
        assert hub.api.wait_run("quick", waiting)["state"] == "success"
    finally:
        worker.stop()


def test_a_worker_started_before_its_hub_waits_for_it(hub: Hub, tmp_path: Path) -> None:
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
    worker.wait_registered()
    assert worker.stop() == 0
    hub.stop()
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")  # the hub is down
    try:
        wait_for(lambda: "retrying" in worker.output(), 30, "the worker to retry")
        time.sleep(2)
        assert worker.popen.poll() is None  # it waits; it does not exit
        # ... yet a SIGTERM still stops it while it waits.
        (tmp_path / "w2").mkdir()
        shutil.copy(worker.home / "credential.json", tmp_path / "w2" / "credential.json")
        impatient = Worker(hub, tmp_path / "w2", "acme", "acme-1")
        wait_for(lambda: "retrying" in impatient.output(), 30, "the second worker to retry")
        assert impatient.stop(signal.SIGTERM, timeout=15) == 0
        hub = hub.restart()
        run = hub.api.wait_run("quick", hub.api.trigger("quick"), timeout=60)
        assert run["state"] == "success"
        assert {t["worker"] for t in run["tasks"]} == {"acme-1"}
    finally:
        worker.stop()
        hub.stop()
        assert os.path.exists(worker.home / "credential.json")
