"""What the benchmarks share: a real hub and real workers as processes on loopback.

``Bench`` starts ``tether hub`` in a temporary home (SQLite, or the store
TETHER_DATABASE_URL names) over a DAGs folder, enrols and starts workers, and
stops everything it started when it is left, even when start-up failed.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ADMIN = "bench-admin-token-" + "x" * 24


def _resolve_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: Resolved once here: a child between fork and exec should call nothing that locks.
_PRCTL = _resolve_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for what a bench starts: the kernel kills the child when the
    bench dies, however it dies (Linux), so no hub or worker outlives a killed bench."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop ``processes``, the last started first: SIGTERM, then SIGKILL for one
    that has not exited 30 s later."""
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Bench:
    """A hub over ``dags`` (a folder the caller fills) and the workers it starts."""

    def __init__(self, **env: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tether-bench-"))
        self.dags = self.root / "dags"
        self.dags.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "TETHER_ADMIN_TOKEN": ADMIN,
            "TETHER_DAG_SCAN_INTERVAL": "0.5",
            **env,
        }
        self.env.setdefault("TETHER_DATABASE_URL", f"sqlite:///{self.root / 'tether.db'}")
        self.store = self.env["TETHER_DATABASE_URL"].split(":", 1)[0]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api = httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()
        stop(self.processes)

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tether", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self.processes.append(proc)
        return proc

    def start_hub(self, *dag_ids: str) -> None:
        """Start the hub and wait until it serves ``dag_ids``."""
        self._start(
            "hub",
            ["hub", "--home", str(self.root / "hub"), "--dags", str(self.dags)]
            + ["--port", str(self.port)],
            self.env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                found = {d["dag_id"] for d in self.api.get("/dags").json()["dags"]}
                if set(dag_ids) <= found:
                    return
            except (httpx.TransportError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the hub did not come up; see {self.root / 'hub.log'}")
            time.sleep(0.1)

    def start_replica(self, number: int) -> str:
        """Another hub process on the same database (PostgreSQL), with a home and
        port of its own; returns its URL once it answers."""
        port = free_port()
        self._start(
            f"hub-{number}",
            ["hub", "--home", str(self.root / f"hub-{number}"), "--dags", str(self.dags)]
            + ["--port", str(port)],
            self.env,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/v1/health", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"hub {number} did not come up; see {self.root}/hub-{number}.log")
            time.sleep(0.1)

    def start_worker(
        self, name: str, queues: str = "default", concurrency: int = 8, **env: str
    ) -> subprocess.Popen[bytes]:
        token = self.api.post(
            "/workers/enrolment-tokens", json={"queues": queues.split(","), "name": name}
        ).json()["token"]
        return self._start(
            name,
            ["worker", "--hub", self.url, "--queues", queues, "--home", str(self.root / name)]
            + ["--enrol", token, "--concurrency", str(concurrency)],
            {**self.env, **env},
        )

    def run(self, dag_id: str, timeout: float = 600) -> dict[str, Any]:
        """Trigger ``dag_id`` and wait for the run to end."""
        run_id = self.api.post(f"/dags/{dag_id}/runs", json={}).json()["run_id"]
        deadline = time.monotonic() + timeout
        while True:
            # The run's state from the list (one row), not its detail: a run of
            # thousands of tasks read 20 times a second would load the hub it measures.
            (row,) = self.api.get(
                f"/dags/{dag_id}/runs", params={"run_id_prefix": run_id, "limit": 1}
            ).json()["dag_runs"]
            if row["state"] in ("success", "failed"):
                detail: dict[str, Any] = self.api.get(f"/dags/{dag_id}/runs/{run_id}").json()
                return detail
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} of {dag_id} did not end in {timeout} s")
            time.sleep(0.2)  # its timings are the hub's; this only finds its end

    def log(self, run: dict[str, Any], task_id: str) -> str:
        path = f"/dags/{run['dag_id']}/runs/{run['run_id']}/tasks/{task_id}/logs"
        return str(self.api.get(path).text)


def run_and_report(
    name: str,
    env: dict[str, str],
    measure: Callable[[Bench], dict[str, Any]],
    failed: Callable[[dict[str, Any]], bool],
    width: int,
) -> int:
    """Run ``measure`` in a ``Bench``, print its figures as a table (keys ``width``
    wide) and a final JSON line, and give the exit status: 0, 1 if ``failed``
    says so, 130 on Ctrl-C. The temporary home (logs among it) is removed only
    when nothing failed; otherwise the message says where it is."""
    with Bench(**env) as bench:
        try:
            figures = measure(bench)
        except KeyboardInterrupt:
            print(f"interrupted; logs kept in {bench.root}", file=sys.stderr)
            return 130
        except BaseException:
            print(f"the {name} bench failed; logs kept in {bench.root}", file=sys.stderr)
            raise
    for key, value in figures.items():
        print(f"{key:{width}} {value}")
    print(json.dumps({"bench": name, **figures}))
    if failed(figures):
        print(f"something failed; logs kept in {bench.root}", file=sys.stderr)
        return 1
    shutil.rmtree(bench.root, ignore_errors=True)
    return 0
