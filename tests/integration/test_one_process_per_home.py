"""A second hub, standalone or worker started by mistake on a home or port in
use refuses to start, before it changes anything, and says which is in use;
the first one goes on serving."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import (
    ADMIN_TOKEN,
    PROXY_VARIABLES,
    Api,
    Hub,
    Process,
    Worker,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration

DAG = """
    from tether import DAG, BashOperator

    with DAG("hello"):
        BashOperator(task_id="t", bash_command="echo hello")
"""


def _env(home: Path) -> dict[str, str]:
    return {
        "TETHER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TETHER_DATABASE_URL": f"sqlite:///{home / 'tether.db'}",
        "TETHER_DAG_SCAN_INTERVAL": "0.3",
    }


def _second(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``tether ARGS`` that should refuse to start; killed if it runs 60 s."""
    base = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env={**base, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[Process, Api, Path, int]]:
    """A ``tether standalone`` whose worker has registered: (process, api, home, port)."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "hello.py").write_text(textwrap.dedent(DAG))
    home, port = tmp_path / "home", free_port()
    proc = Process(
        ["standalone", "--home", str(home), "--port", str(port), "--dags", str(dags)],
        env=_env(home),
        cwd=tmp_path,
        log=tmp_path / "standalone.log",
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"standalone exited:\n{proc.output()}")
            try:
                workers = api.get("/workers")["workers"]
            except Exception:
                return False
            return any(w["state"] == "idle" for w in workers)

        wait_for(ready, 60, "the standalone hub and its worker")
        api.wait_dags("hello")
        yield proc, api, home, port
    finally:
        api.http.close()
        proc.stop()


def _still_serves(proc: Process, api: Api) -> None:
    assert proc.popen.poll() is None, proc.output()
    run = api.run_dag("hello")
    assert run["state"] == "success", proc.output()
    assert "standalone-worker" in {t["worker"] for t in run["tasks"]}
    assert [w["state"] for w in api.get("/workers")["workers"]] in (["idle"], ["running"])
    assert "revoked" not in proc.output()


@pytest.mark.parametrize("command", ["standalone", "hub"])
def test_a_second_hub_on_the_same_home_refuses_and_names_it(
    standalone: tuple[Process, Api, Path, int], tmp_path: Path, command: str
) -> None:
    proc, api, home, _ = standalone
    second = _second(
        command,
        "--home",
        str(home),
        "--port",
        str(free_port()),
        "--dags",
        str(tmp_path / "dags"),
        env=_env(home),
        cwd=tmp_path,
    )
    assert second.returncode != 0, second.stdout + second.stderr
    assert f"{home} is in use" in second.stderr, second.stdout + second.stderr
    _still_serves(proc, api)


@pytest.mark.parametrize("command", ["standalone", "hub"])
def test_a_second_hub_on_the_same_port_refuses_and_names_it(
    standalone: tuple[Process, Api, Path, int], tmp_path: Path, command: str
) -> None:
    proc, api, _, port = standalone
    other = tmp_path / "other-home"
    second = _second(
        command,
        "--home",
        str(other),
        "--port",
        str(port),
        "--dags",
        str(tmp_path / "dags"),
        env=_env(other),
        cwd=tmp_path,
    )
    assert second.returncode != 0, second.stdout + second.stderr
    assert f"port {port}" in second.stderr, second.stdout + second.stderr
    assert "in use" in second.stderr
    # It changed nothing: not even a store of its own.
    assert not (other / "tether.db").exists()
    _still_serves(proc, api)


def test_a_second_worker_on_the_same_home_refuses_before_it_enrols(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "hello.py").write_text(textwrap.dedent(DAG).replace('"echo hello"', '"echo hi"'))
    hub = Hub(tmp_path / "hub", dags, f"sqlite:///{tmp_path / 'hub.db'}")
    first = None
    try:
        hub.api.wait_dags("hello")
        first = Worker(hub, tmp_path / "w", "default", "w1")
        first.wait_registered()
        credential = (first.home / "credential.json").read_text()
        token = hub.api.enrolment_token("default", "w1", replace=True)
        second = _second(
            "worker",
            "--hub",
            hub.url,
            "--home",
            str(first.home),
            "--enrol",
            token,
            env={},
            cwd=tmp_path,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"another worker process is using {first.home}" in second.stderr
        # The token was not spent and the first worker's credential still stands.
        tokens = hub.api.get("/workers/enrolment-tokens")["tokens"]
        newest = next(t for t in tokens if t["name"] == "w1")  # newest first
        assert newest["state"] == "unspent"
        assert (first.home / "credential.json").read_text() == credential
        run = hub.api.run_dag("hello")
        assert run["state"] == "success"
        assert hub.api.tasks(run)["t"]["worker"] == "w1"
        assert first.popen.poll() is None
    finally:
        if first is not None:
            first.stop()
        hub.stop()
