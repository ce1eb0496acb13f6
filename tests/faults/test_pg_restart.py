"""PostgreSQL restarted under a busy hub: the hub reconnects and nothing is lost.

The shared PostgreSQL on 127.0.0.1:5432 serves other tests in parallel, so
this module starts a private cluster of its own (``initdb`` as the
``postgres`` user, which PostgreSQL needs when the suite runs as root) on a
free loopback port, and restarts that one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.processes import Hub, Worker, free_port, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    from tether import DAG, BashOperator

    # Each body appends one line to $OUT: a body run twice shows as two lines.
    STEP = 'echo "$TETHER_RUN_ID $TETHER_TASK_ID" >> "$OUT"; sleep 1.5'

    with DAG("pg_restart"):
        first = BashOperator(task_id="first", bash_command=STEP)
        middle = [BashOperator(task_id=f"middle_{i}", bash_command=STEP) for i in range(3)]
        last = BashOperator(task_id="last", bash_command=STEP)
        first >> middle >> last
"""
TASKS = {"first", "middle_0", "middle_1", "middle_2", "last"}
RUNS = 3


def _skip_or_fail(reason: str) -> None:
    """As tests/conftest.py does for an unreachable PostgreSQL: CI must not skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Cluster:
    """A private PostgreSQL cluster, run as the ``postgres`` user."""

    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        # Its output goes to a file, not a pipe: a postmaster it starts inherits the
        # descriptors, and a pipe would never reach its end.
        with (self.root / "pg_ctl.out").open("ab") as output:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl")]
                + ["-D", str(self.data), *args],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                timeout=120,
            )

    def postmaster(self) -> int | None:
        """The postmaster's pid from its pid file, if it has one."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
            " -c fsync=off -c full_page_writes=off"
        )
        self.pg_ctl("-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: sessions are ended, the server is back at once."""
        self.pg_ctl("-m", "fast", "-l", str(self.root / "postgres.log"), "-w", "restart")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: as a crash, no session is told."""
        self.pg_ctl("-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin/postgres") if p.parts[-3].isdigit()),
        key=lambda p: int(p.parts[-3]),  # the newest major version
    )
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        found = []
    if not found or shutil.which("runuser") is None:
        _skip_or_fail(
            "a private PostgreSQL needs /usr/lib/postgresql/<version>/bin, runuser "
            "and a postgres user"
        )
    # Not under pytest's tmp_path: its root is 0700 root's, out of the postgres user's reach.
    root = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    cluster = Cluster(found[-1].parent, root, free_port())
    try:
        shutil.chown(root, "postgres", "postgres")
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(cluster.bindir / "initdb")]
            + ["-D", str(cluster.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        yield cluster
    finally:
        pid = cluster.postmaster()  # the current one: a restart writes a new pid file
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.pg_ctl("-m", "immediate", "stop")
        if pid is not None and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # pg_ctl could not stop it
        shutil.rmtree(root, ignore_errors=True)


def _bodies(out: Path) -> Counter[str]:
    """How often each ``run_id task_id`` body ran."""
    return Counter(out.read_text().splitlines()) if out.exists() else Counter()


@pytest.mark.parametrize("outage", ["restart", "crash"])
def test_runs_finish_with_each_task_run_once_across_a_postgres_restart(
    cluster: Cluster, tmp_path: Path, outage: str
) -> None:
    """``restart``: a fast restart, over in a moment. ``crash``: an immediate stop,
    and the server stays down until the hub has answered the worker 503."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "pg_restart.py").write_text(textwrap.dedent(DAGS))
    out = tmp_path / "bodies.txt"
    hub = Hub(
        tmp_path / "hub",
        dags,
        cluster.url,
        TETHER_WORKER_HEARTBEAT="1",
        TETHER_SCHEDULER_SWEEP="0.5",
    )
    worker = None
    try:
        worker = Worker(hub, tmp_path / "w", "default", "w1", env={"OUT": str(out)})
        worker.wait_registered()
        hub.api.wait_dags("pg_restart")
        run_ids = [hub.api.trigger("pg_restart") for _ in range(RUNS)]
        # Restart while bodies run and reports come in: some middles have started.
        wait_for(
            lambda: sum(" middle_" in body for body in _bodies(out)) >= 2,
            60,
            "tasks to be under way",
        )
        if outage == "restart":
            cluster.restart()
        else:
            cluster.stop()
            wait_for(lambda: "HTTP 503" in worker.output(), 30, "the worker to be told 503")
            cluster.start()
        assert hub.popen.poll() is None, hub.output()
        for run_id in run_ids:
            run = hub.api.wait_run("pg_restart", run_id, timeout=120)
            assert run["state"] == "success", run
        assert hub.popen.poll() is None
        bodies = _bodies(out)
        assert set(bodies) == {f"{r} {t}" for r in run_ids for t in TASKS}
        assert set(bodies.values()) == {1}, bodies  # no body ran twice
        log = hub.output()
        assert "Traceback" not in log, log
        assert log.count("the database is unreachable") == 1, log  # once, not per attempt
        assert "the database is back" in log
        # The worker was answered 503 (retried) while the database was away, never 500.
        assert "HTTP 500" not in worker.output(), worker.output()
    finally:
        if worker is not None:
            worker.stop()
        hub.stop()
