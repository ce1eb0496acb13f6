"""Edge workers as a customer's security review and operations see them: real hub
and worker processes on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import Hub, Worker, wait_for
from tether.worker.launcher import TASK_PROCESS_MARKERS

pytestmark = pytest.mark.integration

DAGS = {
    "acme_only.py": """
        from tether import DAG, BashOperator
        with DAG("acme_only"):
            BashOperator(task_id="t", bash_command="echo acme work", queue="acme")
    """,
    "beta_only.py": """
        from tether import DAG, BashOperator
        with DAG("beta_only"):
            BashOperator(task_id="t", bash_command="echo beta work", queue="beta")
    """,
    "sleepy.py": """
        from datetime import timedelta
        from tether import DAG, BashOperator
        with DAG("sleepy", params={}):
            BashOperator(task_id="sleep", queue="acme",
                         bash_command='echo "PID=$$"; sleep "${SLEEP_FOR:-60}"; echo slept',
                         env={"SLEEP_FOR": "60"}, append_env=True)
        with DAG("short_sleep"):
            BashOperator(task_id="sleep", queue="acme",
                         bash_command='echo "PID=$$"; sleep 3; echo "slept well"')
        with DAG("timeout"):
            BashOperator(task_id="slow", queue="acme", bash_command="echo started; sleep 60",
                         execution_timeout=timedelta(seconds=1))
        with DAG("quick"):
            BashOperator(task_id="t", queue="acme", bash_command="echo quick")
    """,
}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    hub = Hub(tmp_path / "hub-home", dags, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        hub.api.wait_dags("acme_only", "beta_only", "sleepy", "timeout", "quick")
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def worker(hub: Hub, tmp_path: Path) -> Iterator[Worker]:
    """A worker enrolled for queue acme, registered with the hub."""
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
    try:
        worker.wait_registered()
        yield worker
    finally:
        worker.stop()


def _pid_in_log(hub: Hub, dag_id: str, run_id: str, task_id: str) -> int:
    def find() -> int | None:
        match = re.search(r"PID=(\d+)", hub.api.log(dag_id, run_id, task_id))
        return int(match.group(1)) if match else None

    return wait_for(find, 30, "the task to print its pid")


def _running(hub: Hub, dag_id: str, run_id: str, task_id: str = "sleep") -> None:
    wait_for(
        lambda: hub.api.tasks(hub.api.run(dag_id, run_id))[task_id]["state"] == "running",
        30,
        f"{dag_id}.{task_id} to run",
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_enrolled_worker_credential_is_private_and_revocable(hub: Hub, worker: Worker) -> None:
    credential = worker.home / "credential.json"
    assert credential.stat().st_mode & 0o777 == 0o600
    secret = json.loads(credential.read_text())["credential"]
    db = Path(hub.database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert secret.encode() not in stored
    run = hub.api.wait_run("acme_only", hub.api.trigger("acme_only"))
    assert run["state"] == "success"

    hub.api.post("/workers/acme-1/revoke", {})
    code = wait_for(lambda: worker.popen.poll(), 30, "the revoked worker to exit")
    assert code != 0
    assert "invalid or revoked worker credential" in worker.output()
    assert hub.api.worker("acme-1")["state"] == "revoked"


def test_a_worker_cannot_serve_another_tenants_queue(hub: Hub, tmp_path: Path) -> None:
    beta_run = hub.api.trigger("beta_only")
    sneaky = Worker(hub, tmp_path / "w", "acme", "acme-1", extra=["--queues", "acme,beta"])
    try:
        code = wait_for(lambda: sneaky.popen.poll(), 30, "the worker to be refused")
        assert code != 0
        assert "may not serve beta" in sneaky.output()
    finally:
        sneaky.stop()
    honest = Worker(hub, tmp_path / "w", "acme", "acme-1")  # same home: its credential
    try:
        honest.wait_registered()
        acme = hub.api.wait_run("acme_only", hub.api.trigger("acme_only"))
        assert acme["state"] == "success"
        beta = hub.api.tasks(hub.api.run("beta_only", beta_run))["t"]
        assert (beta["state"], beta["worker"]) == ("queued", None)
    finally:
        honest.stop()


def test_marking_a_running_task_failed_kills_it_at_once(hub: Hub, worker: Worker) -> None:
    run_id = hub.api.trigger("sleepy")
    _running(hub, "sleepy", run_id)
    pid = _pid_in_log(hub, "sleepy", run_id, "sleep")
    assert _alive(pid)
    response = hub.api.http.patch(
        f"/dags/sleepy/runs/{run_id}/tasks/sleep", json={"state": "failed"}
    )
    assert response.status_code == 200
    # The held poll answers with the kill at once. This bound, times the test
    # slack (4), stays below the heartbeat interval (10 s) and the poll's wait
    # (30 s), so a kill that waited for either would miss it.
    wait_for(lambda: not _alive(pid), 2, "the task process to die")
    run = hub.api.wait_run("sleepy", run_id)
    assert run["state"] == "failed"
    # The try's log ends with the hub's own word; nothing the worker sends follows it.
    log = hub.api.log("sleepy", run_id, "sleep")
    assert log.endswith("[tether] the hub ended this try: marked failed by an operator\n")


def test_execution_timeout_kills_the_task_and_fails_it(hub: Hub, worker: Worker) -> None:
    run = hub.api.wait_run("timeout", hub.api.trigger("timeout"))
    assert hub.api.tasks(run)["slow"]["state"] == "failed"
    log = hub.api.log("timeout", run["run_id"], "slow")
    assert "started" in log
    assert "execution_timeout of 1s exceeded" in log


def test_a_task_killed_by_a_signal_fails_and_says_which(hub: Hub, worker: Worker) -> None:
    run_id = hub.api.trigger("sleepy")
    _running(hub, "sleepy", run_id)
    bash_pid = _pid_in_log(hub, "sleepy", run_id, "sleep")
    runner_pid = int(Path(f"/proc/{bash_pid}/stat").read_text().split()[3])  # its parent
    cmdline = Path(f"/proc/{runner_pid}/cmdline").read_bytes()
    assert any(marker in cmdline for marker in TASK_PROCESS_MARKERS)
    assert runner_pid != worker.pid
    os.kill(runner_pid, signal.SIGKILL)  # as the OOM killer would
    run = hub.api.wait_run("sleepy", run_id)
    assert hub.api.tasks(run)["sleep"]["state"] == "failed"
    assert "killed by signal SIGKILL" in hub.api.log("sleepy", run_id, "sleep")
    wait_for(lambda: not _alive(bash_pid), 5, "the task's command to die with it")


def test_maintenance_from_the_centre_and_from_the_machine(hub: Hub, worker: Worker) -> None:
    running = hub.api.trigger("short_sleep")
    _running(hub, "short_sleep", running)
    hub.api.post("/workers/acme-1/maintenance", {"on": True, "comment": "disk swap"})
    wait_for(
        lambda: hub.api.worker("acme-1")["maintenance_comment"] == "disk swap",
        10,
        "the comment to show",
    )
    assert hub.api.worker("acme-1")["state"] == "maintenance"
    waiting = hub.api.trigger("quick")
    assert hub.api.wait_run("short_sleep", running)["state"] == "success"  # finishes
    time.sleep(1.0)  # a window in which a worker taking work would have taken it
    assert hub.api.tasks(hub.api.run("quick", waiting))["t"]["state"] == "queued"
    hub.api.post("/workers/acme-1/maintenance", {"on": False})
    assert hub.api.wait_run("quick", waiting)["state"] == "success"

    # The same from the worker's own machine, through its home.
    cli = [
        sys.executable,
        "-m",
        "tether",
        "worker",
        "maintenance",
        "on",
        "--comment",
        "patching",
        "--home",
        str(worker.home),
    ]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["maintenance"] is True
    wait_for(
        lambda: hub.api.worker("acme-1")["maintenance_comment"] == "patching",
        15,
        "the local comment to reach the hub",
    )
    local_wait = hub.api.trigger("quick")
    time.sleep(1.0)
    assert hub.api.tasks(hub.api.run("quick", local_wait))["t"]["state"] == "queued"
    status = subprocess.run(
        [sys.executable, "-m", "tether", "worker", "status", "--home", str(worker.home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(status.stdout)["state"] == "maintenance"
    subprocess.run(
        [*cli[:5], "off", "--home", str(worker.home)],
        check=True,
        timeout=30,
        capture_output=True,
    )
    assert hub.api.wait_run("quick", local_wait)["state"] == "success"


def test_sigterm_lets_the_running_task_finish(hub: Hub, tmp_path: Path) -> None:
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
    worker.wait_registered()
    run_id = hub.api.trigger("short_sleep")
    _running(hub, "short_sleep", run_id)
    code = worker.stop(signal.SIGTERM, timeout=60)
    assert code == 0
    run = hub.api.run("short_sleep", run_id)
    assert run["state"] == "success"
    assert "slept well" in hub.api.log("short_sleep", run_id, "sleep")
    assert hub.api.worker("acme-1")["state"] == "offline"


def test_worker_stop_timeout_bounds_the_drain(hub: Hub, worker: Worker) -> None:
    run_id = hub.api.trigger("sleepy")
    _running(hub, "sleepy", run_id)
    pid = _pid_in_log(hub, "sleepy", run_id, "sleep")
    stop = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether",
            "worker",
            "stop",
            "--timeout",
            "2",
            "--home",
            str(worker.home),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stderr
    assert "worker stopped" in stop.stdout
    assert not _alive(pid)  # killed after the 2 s timeout, not waited for (it sleeps 60 s)
    run = hub.api.run("sleepy", run_id)
    assert hub.api.tasks(run)["sleep"]["state"] == "failed"
    assert "drain timeout ran out" in hub.api.log("sleepy", run_id, "sleep")


def test_shutdown_from_the_centre_drains_and_exits(hub: Hub, tmp_path: Path) -> None:
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
    worker.wait_registered()
    hub.api.post("/workers/acme-1/shutdown", {})
    wait_for(lambda: worker.popen.poll() is not None, 30, "the worker to exit")
    assert worker.stop() == 0
    response = hub.api.http.delete("/workers/acme-1")
    assert response.status_code == 200
    assert all(w["name"] != "acme-1" for w in hub.api.get("/workers")["workers"])


def test_a_refused_version_takes_no_task_and_names_both(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "quick.py").write_text(textwrap.dedent(DAGS["sleepy.py"]))
    hub = Hub(
        tmp_path / "hub-home",
        dags,
        f"sqlite:///{tmp_path / 'hub.db'}",
        TETHER_MIN_WORKER_VERSION="99.0.0",
    )
    try:
        hub.api.wait_dags("quick")
        run_id = hub.api.trigger("quick")
        worker = Worker(hub, tmp_path / "w", "acme", "acme-1")
        code = wait_for(lambda: worker.popen.poll(), 30, "the worker to exit")
        worker.stop()
        assert code != 0
        assert "worker 0.1.0 is older than the minimum 99.0.0 accepted by hub 0.1.0" in (
            worker.output()
        )
        assert hub.api.tasks(hub.api.run("quick", run_id))["t"]["state"] == "queued"
    finally:
        hub.stop()


def test_install_service_prints_a_systemd_unit(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether",
            "worker",
            "install-service",
            "--print",
            "--home",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "[Service]" in result.stdout
    assert f"-m tether worker --home {tmp_path / 'w'}" in result.stdout
    assert not (tmp_path / "w").exists()  # printed, nothing written


def test_a_configured_drain_timeout_bounds_a_sigterm_drain(hub: Hub, tmp_path: Path) -> None:
    worker = Worker(hub, tmp_path / "w", "acme", "acme-1", extra=["--drain-timeout", "1"])
    worker.wait_registered()
    run_id = hub.api.trigger("sleepy")
    _running(hub, "sleepy", run_id)
    assert worker.stop(signal.SIGTERM, timeout=60) == 0
    # Cut after the 1 s drain timeout: a drain that waited would end it as success.
    assert hub.api.tasks(hub.api.run("sleepy", run_id))["sleep"]["state"] == "failed"


def test_a_worker_cannot_report_on_another_workers_attempt(hub: Hub, tmp_path: Path) -> None:
    import httpx

    holder = Worker(hub, tmp_path / "x", "acme", "worker-x")
    try:
        holder.wait_registered()
        run_id = hub.api.trigger("sleepy")
        _running(hub, "sleepy", run_id)
        status = json.loads((holder.home / "status.json").read_text())
        attempt = wait_for(
            lambda: json.loads((holder.home / "status.json").read_text())["running"],
            10,
            "the attempt in the status",
        )[0]["attempt_id"]
        assert status["name"] == "worker-x"
        # Worker Y, enrolled for the same queue, tries to end X's attempt.
        token = hub.api.enrolment_token("acme", "worker-y")
        with httpx.Client(base_url=hub.url + "/api/worker/v1", timeout=10) as y:
            credential = y.post("/enrol", json={"token": token}).json()["credential"]
            y.headers["Authorization"] = f"Bearer {credential}"
            finish = y.post(f"/attempts/{attempt}/finish", json={"state": "success"})
            logs = y.post(f"/attempts/{attempt}/logs", params={"offset": 0}, content=b"forged")
        assert (finish.status_code, logs.status_code) == (403, 403)
        assert "held by another worker" in finish.json()["detail"]
        task = hub.api.tasks(hub.api.run("sleepy", run_id))["sleep"]
        assert (task["state"], task["worker"]) == ("running", "worker-x")
        assert "forged" not in hub.api.log("sleepy", run_id, "sleep")
    finally:
        holder.stop(signal.SIGKILL)


def test_tasks_also_run_in_a_fresh_interpreter_each(hub: Hub, tmp_path: Path) -> None:
    spawner = Worker(hub, tmp_path / "s", "acme", "acme-spawn", extra=["--task-start", "spawn"])
    try:
        spawner.wait_registered()
        run = hub.api.wait_run("acme_only", hub.api.trigger("acme_only"))
        assert run["state"] == "success"
        assert "acme work" in hub.api.log("acme_only", run["run_id"], "t")
    finally:
        spawner.stop()


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_worker_goes_on(
    hub: Hub, worker: Worker
) -> None:
    """What an operator (or a test whose worker will not stop) asks a stuck worker:
    where is each thread? Answered from the signal itself, not the event loop."""
    worker.popen.send_signal(signal.SIGUSR1)
    wait_for(lambda: "Current thread 0x" in worker.output(), 10, "the stacks in the worker's log")
    assert "(most recent call first)" in worker.output()
    assert worker.popen.poll() is None
    run = hub.api.run_dag("acme_only")
    assert run["state"] == "success"
    assert worker.stop() == 0
