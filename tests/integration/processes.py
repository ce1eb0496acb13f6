"""Real hub and worker processes on loopback, and a small client for the hub's API.

Everything here starts real ``tether`` commands as child processes and stops
them by their own pid; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import ctypes
import html
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

ADMIN_TOKEN = "test-admin-token-" + "a" * 20
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "dags"
T = TypeVar("T")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def _resolve_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


#: Resolved once here: a child between fork and exec should call nothing that locks.
_PRCTL = _resolve_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_pytest() -> None:
    """``preexec_fn`` for what the suite starts: the kernel kills the child when
    the pytest process that started it dies, however it dies (Linux), so no hub
    or worker outlives a killed or timed-out test run."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_bench(script: str, args: list[str], timeout: float = 280) -> dict[str, Any]:
    """Run ``bench/SCRIPT`` with ``args`` (it dies with the suite) and give the
    figures of its final JSON line; a non-zero exit fails with its output."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=die_with_pytest,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


@contextlib.contextmanager
def sqlite_write_lock(database_url: str, hold: float = 30.0) -> Iterator[threading.Event]:
    """Hold SQLite's write lock (``BEGIN IMMEDIATE`` on a connection of its own)
    for at most ``hold`` seconds, or until the block ends. Yields an event set
    when the lock is let go, so that a test can tell an answer given while it
    was held from one that waited for it."""
    locked, release, let_go = threading.Event(), threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(hold)
        db.execute("ROLLBACK")
        let_go.set()
        db.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10), "could not take SQLite's write lock"
        yield let_go
    finally:
        release.set()
        holder.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: Every bound in this suite only detects a failure; each is this many times
#: what an idle machine needs, so that the suite passes on a loaded one too
#: (a passing test never waits for a bound). TETHER_TEST_SLACK overrides it.
SLACK = float(os.environ.get("TETHER_TEST_SLACK", "4"))


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``
    seconds times :data:`SLACK`."""
    timeout *= SLACK
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose output goes to a file, stopped by its pid."""

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        python: str = sys.executable,
    ) -> None:
        self.log_path = log
        self._log = log.open("wb")
        # The machine's proxy settings must not steer loopback traffic in tests.
        base = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        self.popen = subprocess.Popen(
            [python, "-m", "tether", *args],
            env={**base, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_pytest,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    #: Sent to a process that did not stop in time, before it is killed: a worker
    #: writes every thread's stack to its log then (``tether worker``, faulthandler).
    STACKS_SIGNAL: signal.Signals | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.STACKS_SIGNAL is not None:
                    self.popen.send_signal(self.STACKS_SIGNAL)  # why it is stuck, in its log
                    time.sleep(1)
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Hub(Process):
    """A ``tether hub`` process. Give ``port`` to restart one where it was;
    ``verbose`` runs it with debug logging (``tether -v hub``)."""

    def __init__(
        self,
        home: Path,
        dags: Path,
        database_url: str,
        *,
        port: int | None = None,
        scheme: str = "http",
        extra: list[str] | None = None,
        verify: str | bool = True,
        verbose: bool = False,
        **env: str,
    ) -> None:
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.home, self.dags, self.database_url = home, dags, database_url
        self.env, self.extra, self.scheme, self.verbose = env, extra, scheme, verbose
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [
                *(["-v"] if verbose else []),
                "hub",
                "--home",
                str(home),
                "--dags",
                str(dags),
                "--port",
                str(self.port),
                *(extra or []),
            ],
            env={
                "TETHER_DATABASE_URL": database_url,
                "TETHER_ADMIN_TOKEN": ADMIN_TOKEN,
                "TETHER_DAG_SCAN_INTERVAL": "0.3",
                "TETHER_DAG_FILE_TIMEOUT": "3",
                **env,
            },
            cwd=home,
            log=home / f"hub-{self.port}-{time.monotonic_ns()}.log",
        )
        self.verify = verify
        self.ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self.api = Api(self.url, verify=self.ssl)
        try:
            wait_for(self._healthy, 30, f"the hub on {self.url} to answer")
        except BaseException:
            self.stop()  # the caller never gets the object that would stop it
            raise

    def restart(self) -> Hub:
        """A new hub process on the same port, home and database."""
        return Hub(
            self.home,
            self.dags,
            self.database_url,
            port=self.port,
            scheme=self.scheme,
            extra=self.extra,
            verify=self.verify,
            verbose=self.verbose,
            **self.env,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.api.http.close()
        return super().stop(sig, timeout)

    def _healthy(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"the hub exited:\n{self.output()}")
        try:
            return (
                httpx.get(self.url + "/api/v1/health", timeout=1, verify=self.ssl).status_code
                == 200
            )
        except httpx.TransportError:
            return False


class Worker(Process):
    """A ``tether worker`` process, enrolled for ``queues`` unless its home holds a credential.

    ``enrol`` overrides the enrolment token (for tests of bad tokens);
    ``extra`` adds command-line arguments; ``python`` runs it with another
    interpreter (a virtualenv's).
    """

    STACKS_SIGNAL = signal.SIGUSR1

    def __init__(
        self,
        hub: Hub,
        home: Path,
        queues: str,
        name: str,
        *,
        cwd: Path | None = None,
        concurrency: int = 4,
        enrol: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        hub_url: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.home = home
        self.name = name
        workdir = cwd or home.parent / f"{name}-cwd"
        workdir.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        args = [
            "worker",
            "--hub",
            hub_url or hub.url,
            "--home",
            str(home),
            "--concurrency",
            str(concurrency),
            *(extra or []),
        ]
        if not (home / "credential.json").exists():
            token = enrol if enrol is not None else hub.api.enrolment_token(queues, name)
            args += ["--enrol", token]
        super().__init__(args, env=env or {}, cwd=workdir, log=home / "worker.log", python=python)
        self.hub = hub

    def wait_registered(self, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()}")
            return any(
                w["name"] == self.name and w["state"] in ("idle", "running")
                for w in self.hub.api.get("/workers")["workers"]
            )

        wait_for(seen, timeout, f"worker {self.name} to register")


class Api:
    """The hub's REST API as a test sees it (admin token)."""

    def __init__(
        self, url: str, token: str = ADMIN_TOKEN, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.http = httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=verify,
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.http.get(path, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def enrolment_token(
        self, queues: str, name: str, expires_in: float = 3600, *, replace: bool = False
    ) -> str:
        answer = self.post(
            "/workers/enrolment-tokens",
            {
                "queues": queues.split(","),
                "name": name,
                "expires_in": expires_in,
                "replace": replace,
            },
        )
        token: str = answer["token"]
        return token

    def worker(self, name: str) -> dict[str, Any]:
        return next(w for w in self.get("/workers")["workers"] if w["name"] == name)

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.get("/dags")["dags"]}

    def wait_dags(self, *dag_ids: str, timeout: float = 30) -> None:
        wait_for(lambda: set(dag_ids) <= self.dag_ids(), timeout, f"DAGs {dag_ids} to load")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        response = self.http.post(f"/dags/{dag_id}/runs", json={"conf": conf or {}})
        response.raise_for_status()
        run_id: str = response.json()["run_id"]
        return run_id

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/dags/{dag_id}/runs/{run_id}")
        return result

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = self.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return wait_for(finished, timeout, f"run {run_id} of {dag_id} to finish")

    def run_dag(
        self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Trigger a run of ``dag_id`` and wait for it to finish."""
        return self.wait_run(dag_id, self.trigger(dag_id, conf), timeout)

    def run_log(self, run: dict[str, Any], task_id: str) -> str:
        """The latest try's log of ``task_id`` in ``run``."""
        return self.log(run["dag_id"], run["run_id"], task_id)

    def tasks(self, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {t["task_id"]: t for t in run["tasks"]}

    def log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int | None = None,
        map_index: int | None = None,
    ) -> str:
        params = {} if try_number is None else {"try_number": try_number}
        if map_index is not None:
            params["map_index"] = map_index
        response = self.http.get(
            f"/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs", params=params
        )
        response.raise_for_status()
        return response.text

    def log_with(
        self, dag_id: str, run_id: str, task_id: str, text: str, timeout: float = 30
    ) -> str:
        """The latest try's log of ``task_id`` once it holds ``text``. Before the
        task's first try begins its log is a 404; so it is while the worker that
        claimed it is slow to start it, on a busy machine."""

        def holding() -> str | None:
            response = self.http.get(f"/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            return response.text if text in response.text else None

        return wait_for(holding, timeout, f"{text!r} in the log of {dag_id}.{task_id}")


def csrf_in(html_text: str) -> str:
    """The CSRF value a console page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', html_text)
    assert found, html_text
    return found.group(1)


def confirmation(html_text: str) -> tuple[str, dict[str, str]]:
    """A console confirmation page's form: its action and its fields (hidden ones)."""
    form = re.search(
        r'<form method="post" action="([^"]+)" class="confirm-form">(.*?)</form>',
        html_text,
        re.S,
    )
    assert form, html_text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form[2]))
    return html.unescape(form[1]), {k: html.unescape(v) for k, v in fields.items()}


class Console:
    """A browser's view of the console, without script: signed in with ``token``
    (the admin's by default), a session cookie and the forms' CSRF value; it
    follows no redirect by itself."""

    def __init__(self, hub: Hub, token: str = ADMIN_TOKEN) -> None:
        self.http = httpx.Client(base_url=hub.url, timeout=30, verify=hub.ssl)
        form = self.http.get("/ui/login")
        signed = self.http.post(
            "/ui/login", data={"csrf": csrf_in(form.text), "token": token, "next": "/ui/dags"}
        )
        assert signed.status_code == 303, signed.text
        self.csrf = csrf_in(self.get("/ui/dags").text)

    def get(self, path: str, **params: Any) -> httpx.Response:
        answer = self.http.get(path, params=params)
        assert answer.status_code < 500, answer.text
        return answer

    def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        answer = self.http.post(path, data={**({"csrf": self.csrf} if csrf else {}), **data})
        assert answer.status_code < 500, answer.text
        return answer

    def confirm(self, page: httpx.Response) -> httpx.Response:
        """Post the confirmation form of ``page`` as it stands (the button)."""
        assert page.status_code == 200, page.text
        action, fields = confirmation(page.text)
        answer = self.http.post(action, data=fields)
        assert answer.status_code < 500, answer.text
        return answer

    def close(self) -> None:
        self.http.close()


class RawWorker:
    """A worker that speaks the protocol by hand, for reports no real worker sends.

    Enrolled through the hub's REST API and given a session, as ``tether
    worker`` is; each method is one request, answered as it comes.
    """

    def __init__(self, hub: Hub, name: str, queues: str = "default") -> None:
        from tether import __version__
        from tether.protocol import PROTOCOL_VERSION, SESSION_HEADER

        self.name = name
        self.facts = {
            "concurrency": 4,
            "free_slots": 4,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }
        self.http = httpx.Client(base_url=hub.url + "/api/worker/v1", timeout=60, verify=hub.ssl)
        token = hub.api.enrolment_token(queues, name)
        enrolled = self.http.post("/enrol", json={"token": token})
        enrolled.raise_for_status()
        self.credential: str = enrolled.json()["credential"]
        self.http.headers["Authorization"] = f"Bearer {self.credential}"
        started = self.http.post("/sessions", json=self.facts)
        started.raise_for_status()
        self.http.headers[SESSION_HEADER] = started.json()["session_id"]

    def poll(self, slots: int = 1, wait: float = 10.0, **body: Any) -> httpx.Response:
        return self.http.post("/poll", json={"slots": slots, "wait": wait, **body})

    def jobs(self, slots: int = 1, wait: float = 10.0) -> list[dict[str, Any]]:
        """Poll until jobs come (each poll waits up to ``wait`` s); fail after 60 s."""

        def found() -> list[dict[str, Any]]:
            answer = self.poll(slots, wait)
            answer.raise_for_status()
            jobs: list[dict[str, Any]] = answer.json()["jobs"]
            return jobs

        return wait_for(found, 60, f"jobs for {self.name}", interval=0)

    def heartbeat(self, **facts: Any) -> httpx.Response:
        return self.http.post("/heartbeat", json={**self.facts, **facts})

    def finish(self, attempt_id: str, body: dict[str, Any] | str) -> httpx.Response:
        """``body`` as JSON, or as raw text (for what json.dumps would not write)."""
        if isinstance(body, str):
            return self.http.post(
                f"/attempts/{attempt_id}/finish",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        return self.http.post(f"/attempts/{attempt_id}/finish", json=body)

    def log(self, attempt_id: str, offset: int, data: bytes) -> httpx.Response:
        return self.http.post(
            f"/attempts/{attempt_id}/logs", params={"offset": offset}, content=data
        )

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def running_hub(
    root: Path,
    backend: str,
    postgres_reason: str | None,
    dags: Path,
    *,
    workers: Sequence[tuple[str, str, int]] = (("default", "w1", 4),),
    wait_dags: Sequence[str] = (),
    **hub_env: str,
) -> Iterator[tuple[Hub, list[Worker]]]:
    """A hub over ``dags`` on a fresh database of ``backend``, with registered
    workers given as ``(queues, name, concurrency)``; all stopped on exit."""
    from tests.conftest import make_database_url

    urls = make_database_url(backend, root, postgres_reason)
    hub = Hub(root / "hub", dags, next(urls), **hub_env)
    started: list[Worker] = []
    try:
        for queues, name, concurrency in workers:
            started.append(Worker(hub, root / name, queues, name, concurrency=concurrency))
        for worker in started:
            worker.wait_registered()
        hub.api.wait_dags(*wait_dags)
        yield hub, started
    finally:
        for worker in started:
            worker.stop()
        hub.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


def tether_cli(
    *args: str, hub: Hub, timeout: float = 60, token: str = ADMIN_TOKEN
) -> subprocess.CompletedProcess[str]:
    """Run a ``tether`` client command against ``hub`` with ``token`` (the admin's
    by default)."""
    return subprocess.run(
        [sys.executable, "-m", "tether", *args, "--hub", hub.url],
        env={**os.environ, "TETHER_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
