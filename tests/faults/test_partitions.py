"""Network partitions between a worker and its hub, made by the test proxy's
black-hole mode (``--blackhole-while``): connections are accepted and read, but
nothing is forwarded or answered until the partition heals.

A short partition must cost nothing: the task runs on and its log arrives
whole. One longer than the lost timeout must not let a task run twice: the
cut-off worker stops its attempt (self-fencing) before the hub can hand the
retry to another worker, and its late reports are refused once it is back.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.faults.test_networks import _proxy
from tests.integration.processes import Hub, Worker, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    import shlex
    from datetime import timedelta
    from tether import DAG, BashOperator, PythonOperator

    def chatter():
        import time
        for i in range(250):
            print(f"line {i:03d} " + "x" * 40, flush=True)
            time.sleep(0.2)

    with DAG("chatty"):
        PythonOperator(task_id="talk", python_callable=chatter, queue="acme")

    # Try 1 would run for minutes, the retry for a second; each line says which
    # try and which bash wrote it, and when. The lock shows any overlap, and a
    # watcher outside the task's process group notes when try 1 lets go of it.
    WATCH = 'flock "$LOCK" true; echo "released 1 $0 $(date +%s.%N)" >> "$OUT"'
    with DAG("fenced"):
        BashOperator(task_id="once", queue="acme", retries=1, retry_delay=timedelta(0),
                     bash_command=(
                         'exec 9>>"$LOCK"; flock -n 9 || { echo OVERLAP >> "$OUT"; exit 1; }; '
                         'say() { echo "$1 $TETHER_TRY_NUMBER $$ $(date +%s.%N)" >> "$OUT"; }; '
                         'say begin; if [ "$TETHER_TRY_NUMBER" = 1 ]; then '
                         f"setsid sh -c {shlex.quote(WATCH)} $$ 9>&- & "
                         "sleep 300; else sleep 1; fi; say end"))
"""

#: Resolves nowhere but inside the proxy: a worker using it can only go through it.
HIDDEN_HOST = "hub.tether-test.invalid"
#: How the worker says it stopped its tasks because the hub stopped answering.
FENCED = "no heartbeat acknowledged by the hub for"


def _dags(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "partitions.py").write_text(textwrap.dedent(DAGS))
    return dags


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The proxy, and the file whose existence cuts every link through it."""
    control = tmp_path / "partition.on"
    proxy, port, _ = _proxy(tmp_path, "--blackhole-while", str(control))
    try:
        yield control, port
    finally:
        control.unlink(missing_ok=True)
        proxy.terminate()
        proxy.wait(10)


def _local_log(worker: Worker, dag_id: str, run_id: str, task_id: str, try_number: int) -> Path:
    folder = worker.home / "logs" / f"dag_id={dag_id}" / f"run_id={quote(run_id, safe='')}"
    return folder / f"task_id={task_id}" / f"attempt={try_number}.log"


def test_a_task_runs_through_a_30s_partition_and_its_log_arrives_whole(
    partition: tuple[Path, int], tmp_path: Path
) -> None:
    control, port = partition
    # Well above the partition: the hub must not judge the worker, nor the worker fence.
    hub = Hub(
        tmp_path / "hub-home",
        _dags(tmp_path),
        f"sqlite:///{tmp_path / 'hub.db'}",
        TETHER_WORKER_LOST_TIMEOUT="120",
        TETHER_WORKER_HEARTBEAT="2",
    )
    worker = None
    try:
        hub.api.wait_dags("chatty")
        worker = Worker(
            hub,
            tmp_path / "w",
            "acme",
            "acme-1",
            hub_url=f"http://{HIDDEN_HOST}:{hub.port}",  # plain HTTP: forwarded requests
            extra=["--proxy", f"http://edge:s3cret@127.0.0.1:{port}", "--insecure-http"],
        )
        worker.wait_registered()
        run_id = hub.api.trigger("chatty")
        hub.api.log_with("chatty", run_id, "talk", "line 010")
        local = _local_log(worker, "chatty", run_id, "talk", 1)

        control.touch()
        time.sleep(5)  # what was in flight when the link went has landed by now
        shipped_early = hub.api.log("chatty", run_id, "talk")
        before = local.read_text()
        time.sleep(25)
        assert hub.api.log("chatty", run_id, "talk") == shipped_early  # nothing got through
        during = local.read_text()
        assert during.startswith(before)
        assert len(during) > len(before)  # the task went on
        assert worker.popen.poll() is None
        assert hub.api.worker("acme-1")["state"] == "running"
        control.unlink()

        run = hub.api.wait_run("chatty", run_id, timeout=120)
        assert run["state"] == "success"
        assert hub.api.tasks(run)["talk"]["try_number"] == 1
        shipped = hub.api.http.get(f"/dags/chatty/runs/{run_id}/tasks/talk/logs").content
        assert shipped == local.read_bytes()
        assert shipped.count(b"line ") == 250
        assert FENCED not in worker.output()
        assert worker.popen.poll() is None
    finally:
        if worker is not None:
            worker.stop()
        hub.stop()


def test_a_worker_cut_off_past_the_lost_timeout_stops_its_task_before_the_retry_starts(
    partition: tuple[Path, int], tls: dict[str, Path], tmp_path: Path
) -> None:
    control, port = partition
    out, lock = tmp_path / "out.txt", tmp_path / "task.lock"
    env = {"OUT": str(out), "LOCK": str(lock)}
    hub = Hub(
        tmp_path / "hub-home",
        _dags(tmp_path),
        f"sqlite:///{tmp_path / 'hub.db'}",
        scheme="https",
        extra=["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])],
        verify=str(tls["ca"]),
        TETHER_WORKER_LOST_TIMEOUT="6",
        TETHER_WORKER_HEARTBEAT="1",
        TETHER_SCHEDULER_SWEEP="0.5",
    )
    ca = ["--ca-file", str(tls["ca"])]
    cut_off = second = None
    try:
        hub.api.wait_dags("fenced")
        cut_off = Worker(
            hub,
            tmp_path / "w1",
            "acme",
            "acme-1",
            hub_url=f"https://{HIDDEN_HOST}:{hub.port}",  # HTTPS: a CONNECT tunnel
            extra=[*ca, "--proxy", f"http://edge:s3cret@127.0.0.1:{port}"],
            env=env,
        )
        cut_off.wait_registered()
        run_id = hub.api.trigger("fenced")
        wait_for(lambda: out.exists() and "begin 1" in out.read_text(), 30, "try 1 to begin")
        second = Worker(hub, tmp_path / "w2", "acme", "acme-2", extra=ca, env=env)
        second.wait_registered()

        control.touch()
        wait_for(lambda: hub.api.worker("acme-1")["state"] == "lost", 60, "acme-1 lost")
        run = hub.api.wait_run("fenced", run_id, timeout=60)
        task = hub.api.tasks(run)["once"]
        lines = out.read_text().splitlines()
        assert "OVERLAP" not in lines  # try 1 had let go of the lock when try 2 took it
        assert (run["state"], task["try_number"], task["worker"]) == ("success", 2, "acme-2")
        # The cut-off worker killed try 1 itself, before the retry began.
        events = {(e[0], e[1]): e[2:] for e in (line.split() for line in lines)}
        assert sorted(events) == [("begin", "1"), ("begin", "2"), ("end", "2"), ("released", "1")]
        assert events["begin", "1"][0] == events["released", "1"][0]  # try 1's bash
        order = [("begin", "1"), ("released", "1"), ("begin", "2"), ("end", "2")]
        stamps = [float(events[e][1]) for e in order]
        assert stamps == sorted(stamps)
        assert not Path(f"/proc/{events['begin', '1'][0]}").exists()
        assert FENCED in cut_off.output()
        assert cut_off.popen.poll() is None  # it fenced its task, not itself

        control.unlink()
        # Back on the network: its spooled report on try 1 is refused as stale.
        wait_for(
            lambda: "hub refused a report on attempt" in cut_off.output(),
            30,
            "the stale report to be refused",
        )
        assert "already ended as lost" in cut_off.output()
        wait_for(lambda: hub.api.worker("acme-1")["state"] == "idle", 30, "acme-1 to be back")
        assert not list((cut_off.home / "spool").glob("*.json"))
        final = hub.api.tasks(hub.api.run("fenced", run_id))["once"]
        assert (final["state"], final["try_number"], final["worker"]) == ("success", 2, "acme-2")
        assert cut_off.popen.poll() is None
    finally:
        control.unlink(missing_ok=True)
        for worker in (cut_off, second):
            if worker is not None:
                worker.stop()
        hub.stop()
