"""``tether standalone``: hub, a local worker and the example DAGs in one command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import REPO, die_with_pytest, free_port, wait_for

pytestmark = pytest.mark.integration


def test_standalone_runs_the_examples_on_its_local_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "TETHER_ADMIN_TOKEN",
            "TETHER_DATABASE_URL",
            "TETHER_DAGS_FOLDER",
        )
    }
    out = (tmp_path / "standalone.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "standalone",
            "--home",
            str(tmp_path / "home"),
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_pytest,
    )

    def output() -> str:
        return (tmp_path / "standalone.log").read_text()

    try:
        token = wait_for(
            lambda: re.search(r"admin token:\s+(\S+)", output()),
            30,
            "the admin token to be printed",
        ).group(1)
        assert f"http://127.0.0.1:{port}" in output()
        assert token == (tmp_path / "home" / "admin_token").read_text().strip()
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        with api:

            def listening() -> bool:
                try:
                    return api.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(listening, 30, "the hub to listen")
            wait_for(
                lambda: "taskflow_etl" in {d["dag_id"] for d in api.get("/dags").json()["dags"]},
                30,
                "the example DAGs",
            )
            run_id = api.post("/dags/taskflow_etl/runs", json={}).json()["run_id"]

            def finished() -> dict[str, object] | None:
                run = api.get(f"/dags/taskflow_etl/runs/{run_id}").json()
                return run if run["state"] in ("success", "failed") else None

            run = wait_for(finished, 60, "the example run")
            assert run["state"] == "success"
            assert {t["worker"] for t in run["tasks"]} == {"standalone-worker"}
            workers = api.get("/workers").json()["workers"]
            assert [(w["name"], w["queues"]) for w in workers] == [
                ("standalone-worker", ["default"])
            ]
            # The console, on 127.0.0.1: / leads to its sign-in page.
            page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True)
            assert page.status_code == 200
            assert page.url.path == "/ui/login"
            assert 'name="token"' in page.text
        worker_pid = int(re.search(r"local worker: pid (\d+)", output()).group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            out.close()
    assert code == 0, output()
    # The local worker went down with the hub.
    assert (
        not Path(f"/proc/{worker_pid}").exists()
        or "zombie" in Path(f"/proc/{worker_pid}/status").read_text()
    )
