"""How the worker starts a task process.

``spawn`` starts a fresh interpreter per task (``python -m
tether.worker.runner``): simple, about 60 ms of start-up per task. ``fork``
(the default on Linux) keeps a fork server with the SDK and the runner
already imported, and forks it per task: a few milliseconds. Either way the
task runs in its own session (process group) with its output in the log file,
and dies with the worker.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

#: Markers in a task process's command line; a restarted worker kills only those.
TASK_PROCESS_MARKERS = (b"tether.worker.runner", b"multiprocessing.forkserver")


class TaskProcess(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class Launcher(Protocol):
    async def start(
        self, job_file: Path, result_file: Path, log_path: Path, cwd: Path, env: dict[str, str]
    ) -> TaskProcess: ...


class SpawnLauncher:
    """A new interpreter per task."""

    async def start(
        self, job_file: Path, result_file: Path, log_path: Path, cwd: Path, env: dict[str, str]
    ) -> TaskProcess:
        with log_path.open("ab") as logf:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tether.worker.runner",
                str(job_file),
                str(result_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env={**env, "TETHER_WORKER_PID": str(os.getpid())},
                start_new_session=True,  # its own process group: we can kill the whole tree
            )
        return process


def _forked_task(
    job_file: str, result_file: str, log_path: str, cwd: str, env: dict[str, str]
) -> None:
    """Runs in the forked child: become a task process, then run the task."""
    os.setsid()  # its own process group, as with spawn
    from tether.sdk._process import die_with_parent
    from tether.worker import fork_server

    # The fork server, which dies with the worker; by its pid, not getppid(): if
    # the server died already, getppid() names whoever adopted this process.
    server = fork_server.SERVER_PID
    die_with_parent(server if server != os.getpid() else os.getppid())
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from tether.worker import runner

    code = runner.main([job_file, result_file])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


#: Serialises every read of a forked task's exit status. With the forkserver
#: start method the status travels over a pipe that only one reader may
#: read: ``Process.start`` also reads those of finished children (to reap
#: them), and two reads at once make one of them see EOF and report 255, so
#: a task that succeeded was reported failed.
_STATUS_LOCK = threading.Lock()


def _start(process: Any) -> None:
    with _STATUS_LOCK:
        process.start()


def _exit_code(process: Any) -> int:
    with _STATUS_LOCK:
        process.join()  # the status pipe is readable: this does not wait
        code: int = process.exitcode
        return code


class _Forked:
    """A forked task process, awaited through its sentinel (one reader for all waiters)."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.pid: int = process.pid
        self._exited: asyncio.Future[None] | None = None

    @property
    def returncode(self) -> int | None:
        """The exit code if known now; None while it runs or while a start holds the lock."""
        if not _STATUS_LOCK.acquire(blocking=False):
            return None
        try:
            code: int | None = self._process.exitcode
            return code
        finally:
            _STATUS_LOCK.release()

    def _watch(self) -> asyncio.Future[None]:
        if self._exited is None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            fd = self._process.sentinel

            def ready() -> None:
                loop.remove_reader(fd)
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(fd, ready)
            self._exited = exited
        return self._exited

    async def wait(self) -> int:
        code = self.returncode
        if code is None:
            # Shielded: a waiter that gives up (a timeout) must not cancel it for the others.
            await asyncio.shield(self._watch())
            code = await asyncio.to_thread(_exit_code, self._process)
        return code


class ForkLauncher:
    """Forks each task from a server that has the SDK and the runner imported.

    The server is started by the thread that calls :meth:`start` (the worker's
    event loop, its main thread): on Linux the kernel kills the server when
    the thread that started it ends, so it must be one that lasts as long as
    the worker.
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        # First the module that ties the server to the worker. Jinja too: the
        # runner imports it only when a task has templates; and the HTTP client
        # a task makes on its first read of a connection or variable.
        self._ctx.set_forkserver_preload(
            [
                "tether.worker.fork_server",
                "tether.worker.runner",
                "jinja2.sandbox",
                "tether.worker.warm",
            ]
        )

    def _ensure_server(self) -> None:
        """Start the fork server if it is not running, telling it the worker's pid."""
        from multiprocessing import forkserver

        from tether.worker.fork_server import PARENT_VARIABLE

        os.environ[PARENT_VARIABLE] = str(os.getpid())
        try:
            forkserver.ensure_running()
        finally:
            os.environ.pop(PARENT_VARIABLE, None)

    async def start(
        self, job_file: Path, result_file: Path, log_path: Path, cwd: Path, env: dict[str, str]
    ) -> TaskProcess:
        self._ensure_server()  # here, in this thread, not in the one that forks
        task_env = {k: v for k, v in env.items() if k != "TETHER_WORKER_PID"}
        process = self._ctx.Process(
            target=_forked_task,
            args=(str(job_file), str(result_file), str(log_path), str(cwd), task_env),
            daemon=False,
        )
        await asyncio.to_thread(_start, process)
        return _Forked(process)


def make_launcher(kind: str) -> Launcher:
    if kind == "fork":
        if "forkserver" not in multiprocessing.get_all_start_methods():
            raise ValueError("--task-start fork needs a POSIX system; use spawn")
        return ForkLauncher()
    if kind == "spawn":
        return SpawnLauncher()
    raise ValueError(f"unknown task start method {kind!r}: use fork or spawn")
