"""No process Tether starts outlives the process that started it: a task dies
with its worker, a DAG file's parse child with its hub, however they end.

Linux only (``/proc``, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.pids import alive, descendants, kill_left, parent
from tests.integration.processes import (
    ADMIN_TOKEN,
    Api,
    Hub,
    Process,
    Worker,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def seen() -> Iterator[dict[int, int]]:
    """Processes a test saw its hub or worker start; any still running at the end are killed."""
    found: dict[int, int] = {}
    try:
        yield found
    finally:
        kill_left(found)


def _pid_in(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip().isdigit() else None


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_task_dies_with_its_killed_worker(
    tmp_path: Path, start: str, seen: dict[int, int]
) -> None:
    pid_file = tmp_path / "task.pid"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sleeper.py").write_text(
        textwrap.dedent(
            f"""
            import os, time
            from tether import DAG, PythonOperator

            def sleep():
                with open({str(pid_file)!r}, "w") as f:
                    f.write(str(os.getpid()))
                while True:
                    print("still here", flush=True)
                    time.sleep(0.2)

            with DAG("sleeper"):
                PythonOperator(task_id="sleep", python_callable=sleep)
            """
        )
    )
    hub = Hub(tmp_path / "hub", dags, f"sqlite:///{tmp_path / 'hub.db'}")
    worker = None
    try:
        hub.api.wait_dags("sleeper")
        worker = Worker(hub, tmp_path / "w", "default", "w1", extra=["--task-start", start])
        worker.wait_registered()
        hub.api.trigger("sleeper")
        task = wait_for(lambda: _pid_in(pid_file), 60, "the task to write its pid")
        seen.update(descendants(worker.pid))
        assert task in seen
        if start == "fork":  # the task's parent is the fork server, not the worker
            assert parent(task) != worker.pid
            assert parent(task) in seen

        worker.stop(signal.SIGKILL)

        def survivors() -> dict[int, int]:
            return {pid: t for pid, t in seen.items() if alive(pid, t)}

        wait_for(lambda: not survivors(), 30, "the worker's processes to die")
    finally:
        if worker is not None:
            worker.stop()
        hub.stop()


HANGS_AT_IMPORT = """
import os, time

with open({pid_file!r}, "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.2)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_hanging_parse_child_dies_with_its_hub(
    tmp_path: Path, sig: signal.Signals, seen: dict[int, int]
) -> None:
    pid_file = tmp_path / "parse.pid"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "hangs.py").write_text(HANGS_AT_IMPORT.format(pid_file=str(pid_file)))
    # No parse timeout to end the child first.
    hub = Hub(
        tmp_path / "hub", dags, f"sqlite:///{tmp_path / 'hub.db'}", TETHER_DAG_FILE_TIMEOUT="3600"
    )
    try:
        child = wait_for(lambda: _pid_in(pid_file), 60, "the DAG file's import to start")
        seen.update(descendants(hub.pid))
        assert child in seen
        code = hub.stop(sig)
        if sig == signal.SIGTERM:
            assert code == 0, hub.output()  # it stopped by itself, not killed after a wait
        wait_for(
            lambda: not any(alive(pid, t) for pid, t in seen.items()),
            30,
            "the hub's children to die",
        )
    finally:
        hub.stop()


CALLBACK_HANGS = """
import os, time
from tether import DAG, BashOperator

def hang(context):
    with open({pid_file!r}, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.2)

with DAG("calls_back", on_success_callback=hang):
    BashOperator(task_id="t", bash_command="true")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_hanging_dag_callback_dies_with_its_hub(
    tmp_path: Path, sig: signal.Signals, seen: dict[int, int]
) -> None:
    pid_file = tmp_path / "callback.pid"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "calls_back.py").write_text(CALLBACK_HANGS.format(pid_file=str(pid_file)))
    hub = Hub(
        tmp_path / "hub", dags, f"sqlite:///{tmp_path / 'hub.db'}", TETHER_DAG_FILE_TIMEOUT="3600"
    )
    worker = None
    try:
        hub.api.wait_dags("calls_back")
        worker = Worker(hub, tmp_path / "w", "default", "w1")
        worker.wait_registered()
        hub.api.run_dag("calls_back")
        child = wait_for(lambda: _pid_in(pid_file), 60, "the DAG's callback to start")
        seen.update(descendants(hub.pid))
        assert child in seen
        code = hub.stop(sig)
        if sig == signal.SIGTERM:
            assert code == 0, hub.output()
        wait_for(
            lambda: not any(alive(pid, t) for pid, t in seen.items()),
            30,
            "the hub's children to die",
        )
    finally:
        if worker is not None:
            worker.stop()
        hub.stop()


def test_a_standalones_local_worker_and_its_task_die_with_it(
    tmp_path: Path, seen: dict[int, int]
) -> None:
    """``tether standalone`` killed with SIGKILL takes its local worker, and the
    task that worker runs, with it (before, the worker ran on, orphaned)."""
    pid_file = tmp_path / "task.pid"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sleeper.py").write_text(
        textwrap.dedent(
            f"""
            import os, time
            from tether import DAG, PythonOperator

            def sleep():
                with open({str(pid_file)!r}, "w") as f:
                    f.write(str(os.getpid()))
                while True:
                    time.sleep(0.2)

            with DAG("sleeper"):
                PythonOperator(task_id="sleep", python_callable=sleep)
            """
        )
    )
    home, port = tmp_path / "home", free_port()
    standalone = Process(
        ["standalone", "--home", str(home), "--port", str(port), "--dags", str(dags)],
        env={
            "TETHER_ADMIN_TOKEN": ADMIN_TOKEN,
            "TETHER_DATABASE_URL": f"sqlite:///{home / 'tether.db'}",
            "TETHER_DAG_SCAN_INTERVAL": "0.3",
        },
        cwd=tmp_path,
        log=tmp_path / "standalone.log",
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _serves(api), 60, "the standalone hub to answer")
        api.wait_dags("sleeper")
        api.trigger("sleeper")
        task = wait_for(lambda: _pid_in(pid_file), 60, "the task to start")
        seen.update(descendants(standalone.pid))
        assert task in seen
        assert len(seen) >= 3  # the worker, its task, and what else the two started
        standalone.stop(signal.SIGKILL)
        wait_for(
            lambda: not any(alive(pid, t) for pid, t in seen.items()),
            30,
            "the standalone's worker and its task to die",
        )
    finally:
        api.http.close()
        standalone.stop()


def _serves(api: Api) -> bool:
    try:
        return bool(api.get("/health"))
    except httpx.HTTPError:
        return False
