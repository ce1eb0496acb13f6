"""Run one attempt: a child process, its log shipped by tailing a file, its result
spooled and reported."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tether.protocol import (
    ATTEMPT_END_STATES,
    ATTEMPT_FAILED,
    AttemptResult,
    Job,
    sendable_result,
    sendable_text,
)
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient, HubError
from tether.worker.launcher import TASK_PROCESS_MARKERS, Launcher, SpawnLauncher, TaskProcess
from tether.worker.site_secrets import SiteSecrets
from tether.worker.spool import Spool, SpoolEntry

log = logging.getLogger("tether.worker")

#: Seconds past its execution_timeout before a task that did not stop is killed.
KILL_GRACE = 5.0


#: Longest file name most file systems take, in bytes.
MAX_NAME_BYTES = 255


def path_part(key: str, value: object) -> str:
    """``key=value`` as one file name: ``value`` percent-encoded but for letters,
    digits and ``_ . - ~``. The ``key=`` prefix means it is never ``.`` or
    ``..``, and no ``/`` survives the encoding, so an id, whatever the hub
    sent, names exactly one folder under the worker's own. A name the
    encoding makes longer than a file system takes is cut and ends with a
    hash of the whole value, so that it stays one name per id."""
    part = f"{key}={quote(str(value), safe='')}"  # ASCII: characters are bytes
    if len(part) <= MAX_NAME_BYTES:
        return part
    digest = hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{part[: MAX_NAME_BYTES - len(digest) - 1]}~{digest}"


def log_path_for(home: Path, job: Job) -> Path:
    """Where a try's log is kept on the worker (laid out as Airflow's task logs)."""
    folder = (
        home
        / "logs"
        / path_part("dag_id", job.dag_id)
        / path_part("run_id", job.run_id)
        / path_part("task_id", job.task_id)
    )
    if job.map_index >= 0:
        folder = folder / path_part("map_index", job.map_index)
    return folder / f"attempt={int(job.try_number)}.log"


class LogShipper:
    """Sends a growing log file to the hub in offset-addressed chunks.

    The hub answers each chunk with the size it holds, which becomes the next
    offset; a chunk re-sent after a lost answer is not duplicated.
    """

    def __init__(self, client: HubClient, attempt_id: str, path: Path) -> None:
        self.client = client
        self.attempt_id = attempt_id
        self.path = path
        self.offset = 0

    async def ship_available(self) -> None:
        """Send everything written since the last call."""
        while True:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(self.client.log_chunk_bytes)
            if not data:
                return
            self.offset = await self.client.upload_log(self.attempt_id, self.offset, data)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.ship_available()


def note(path: Path, text: str) -> None:
    """Add a line of Tether's own to a task log."""
    with path.open("a") as f:
        f.write(f"[tether] {text}\n")


async def deliver(
    client: HubClient, spool: Spool, entry: SpoolEntry, offset: int | None = None
) -> None:
    """Send the rest of the log, then the result; forget the entry once the hub has both.

    ``offset`` is how much of the log the hub is known to hold; when unknown
    (a report left by a previous process) the hub is asked. Transport errors
    are retried until the hub answers (the link may be down for minutes); a
    refusal (the hub gave up on the attempt) ends delivery.
    """
    assert entry.result is not None
    shipper = LogShipper(client, entry.job.attempt_id, entry.log_path)
    try:
        try:
            if offset is None:
                offset = await client.upload_log(entry.job.attempt_id, 0, b"")
            shipper.offset = offset
            await shipper.ship_available()
        except HubError as exc:
            # A refused log (the attempt ended, a chunk too large) never keeps the result back.
            log.warning("hub refused the log of attempt %s: %s", entry.job.attempt_id, exc)
        await client.finish(entry.job.attempt_id, entry.result)
    except HubError as exc:
        # Refused (4xx): sending it again would be refused again. One line, then on.
        log.warning("hub refused a report on attempt %s: %s", entry.job.attempt_id, exc)
    except (ConnectionError, asyncio.CancelledError):
        raise  # the entry stays in the spool; a later start delivers it
    except Exception:
        # A report that cannot even be sent (it should not exist: results are
        # made sendable) must not wedge the spool behind it.
        log.exception("dropping the report on attempt %s: it cannot be sent", entry.job.attempt_id)
    spool.remove(entry)


def task_environment() -> dict[str, str]:
    """What a task process inherits of the worker's environment: all of it but
    Tether's own variables (an enrolment token among them); the task process
    sets its context variables (TETHER_DAG_ID, ...) itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}


class AttemptRunner:
    """Runs one job to its end and reports it."""

    def __init__(
        self,
        job: Job,
        client: HubClient,
        bundles: BundleCache,
        spool: Spool,
        home: Path,
        *,
        log_interval: float = 0.5,
        kill_grace: float = 1.5,
        launcher: Launcher | None = None,
        umask: int = 0o022,
        site_secrets: SiteSecrets | None = None,
    ) -> None:
        self.job = job
        self.umask = umask
        self.site_secrets = site_secrets
        self.client = client
        self.bundles = bundles
        self.spool = spool
        self.log_interval = log_interval
        self.kill_grace = kill_grace
        self.workdir = home / "attempts" / job.attempt_id
        self.log_path = log_path_for(home, job)
        self.launcher: Launcher = launcher or SpawnLauncher()
        self.process: TaskProcess | None = None
        self.kill_reason: str | None = None
        self.entry: SpoolEntry | None = None

    async def run(self) -> AttemptResult:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            self.entry = entry = self.spool.open(self.job, self.log_path)
        except OSError as exc:
            # No log file, no spool entry (a full disk, say): nothing can run, but
            # the hub is told why rather than left to find out it never ran.
            result = AttemptResult(
                state=ATTEMPT_FAILED,
                error=sendable_text(f"the worker could not prepare this task: {exc}"),
            )
            log.error("attempt %s: %s", self.job.attempt_id, result.error)
            with contextlib.suppress(HubError):
                await self.client.finish(self.job.attempt_id, result)
            return result
        shipper = LogShipper(self.client, self.job.attempt_id, self.log_path)
        shipping = asyncio.create_task(shipper.run(self.log_interval))
        try:
            result = await self._execute()
        finally:
            # Scratch space, job.json with its site-local secrets among it: gone as soon
            # as the task ended, not after a report that may wait long for the hub.
            shutil.rmtree(self.workdir, ignore_errors=True)
            await self._stop_shipping(shipping)
        entry.result = result
        self.spool.write(entry)
        await deliver(self.client, self.spool, entry, shipper.offset)
        return result

    async def _stop_shipping(self, shipping: asyncio.Task[None]) -> None:
        """Cancel the log shipper and wait until it has let go (``deliver`` sends
        the rest with the result). Only the shipper's own cancellation is
        swallowed: one of this attempt meanwhile (the worker stops) goes on up."""
        shipping.cancel()
        try:
            await shipping
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except HubError as exc:  # the hub refused a chunk; the result still goes
            log.warning("log upload for attempt %s refused: %s", self.job.attempt_id, exc)

    async def _execute(self) -> AttemptResult:
        job = self.job
        try:
            bundle_dir = await self.bundles.ensure(job.bundle_sha)
        except Exception as exc:
            note(self.log_path, f"could not get DAG bundle {job.bundle_sha}: {exc}")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"bundle unavailable: {exc}")
        if self.kill_reason is not None:
            note(self.log_path, f"not started: {self.kill_reason}")
            return AttemptResult(state=ATTEMPT_FAILED, error=self.kill_reason)
        job_file = self.workdir / "job.json"
        result_file = self.workdir / "result.json"
        job_file.write_text(
            json.dumps(
                {
                    "job": job.to_dict(),
                    "bundle_dir": str(bundle_dir),
                    "max_output_bytes": self.client.max_output_bytes,
                    "umask": self.umask,
                    "secrets": self._secrets(),
                }
            )
        )
        env = {**task_environment(), "PYTHONUNBUFFERED": "1"}
        self.process = await self.launcher.start(
            job_file, result_file, self.log_path, self.workdir, env
        )
        if self.kill_reason is not None:
            # Killed while the launcher started it: kill() found no process to
            # signal then, so the task would have run to its end.
            await self.kill(self.kill_reason)
        assert self.entry is not None
        self.entry.pid = self.process.pid
        self.spool.write(self.entry)
        # The task raises at its execution_timeout by itself (so its failure
        # callback runs); a task that does not stop is killed a little later.
        deadline = job.execution_timeout + KILL_GRACE if job.execution_timeout else None
        try:
            async with asyncio.timeout(deadline):
                code = await self.process.wait()
        except TimeoutError:
            await self.kill(
                f"execution_timeout of {job.execution_timeout:g}s exceeded "
                f"and the task did not stop within {KILL_GRACE:g}s"
            )
            code = await self.process.wait()
        return self._result(code, result_file)

    def _secrets(self) -> dict[str, Any] | None:
        """How the task process gets the connections and variables its task declares:
        the hub to ask (with the attempt's token) and this worker's own values of
        those names. In the job file only (private, deleted when the attempt ends)."""
        job = self.job
        if not (job.connections or job.variables):
            return None
        return {
            **self.client.task_access,
            "token": job.secrets_token,
            "site": self.site_secrets.for_job(job) if self.site_secrets else {},
        }

    def _result(self, code: int, result_file: Path) -> AttemptResult:
        if self.kill_reason is not None:
            return AttemptResult(state=ATTEMPT_FAILED, error=f"killed: {self.kill_reason}")
        if code < 0:
            name = signal.Signals(-code).name
            note(self.log_path, f"task process was killed by signal {name}")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"killed by signal {name}")
        try:
            data = json.loads(result_file.read_text())
        except (OSError, ValueError):
            note(self.log_path, f"task process exited with code {code} without a result")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"exit code {code}, no result")
        if code != 0 or not isinstance(data, dict) or data.get("state") not in ATTEMPT_END_STATES:
            return AttemptResult(state=ATTEMPT_FAILED, error=f"exit code {code}")
        # The task process made it sendable, but the file is the task's to overwrite.
        return sendable_result(
            data["state"],
            data.get("output"),
            data.get("error"),
            bool(data.get("no_retry", False)),
            max_output=self.client.max_output_bytes,
        )

    @property
    def stoppable(self) -> bool:
        """Whether a kill would still stop something: not killed yet, not ended."""
        proc = self.process
        return self.kill_reason is None and (proc is None or proc.returncode is None)

    async def kill(self, reason: str, grace: float | None = None) -> None:
        """SIGTERM the task's process group, then SIGKILL after ``grace`` seconds
        (default: the runner's kill grace).

        A task that already ended is left alone (its log is not touched).
        """
        proc = self.process
        if proc is not None and proc.returncode is not None:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
            note(self.log_path, f"killing the task: {reason}")
        if proc is None:
            return  # not started yet: _execute sees kill_reason
        signal_task(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.kill_grace if grace is None else grace):
                await proc.wait()
        except TimeoutError:
            signal_task(proc.pid, signal.SIGKILL)
            await proc.wait()


def signal_task(pid: int, sig: int) -> None:
    """Send ``sig`` to the task process ``pid`` and everything it started.

    A task process makes itself a process group first thing (``setsid``), and
    its group is what is signalled. Killed in the instant after it started,
    before its ``setsid``, it has no group yet (ESRCH): then it alone gets the
    signal, and there is nothing else yet.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def is_our_task_process(pid: int) -> bool:
    """Whether ``pid`` is still a task process of ours (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(marker in cmdline for marker in TASK_PROCESS_MARKERS)


def end_leftover(entry: SpoolEntry) -> None:
    """A task a previous worker process started: kill it if alive, record it failed."""
    if entry.result is not None:
        return
    if entry.pid is not None and is_our_task_process(entry.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry.pid, signal.SIGKILL)
    reason = "the worker restarted while the task ran"
    with contextlib.suppress(OSError):
        note(entry.log_path, f"{reason}; the task was stopped")
    entry.result = AttemptResult(state=ATTEMPT_FAILED, error=reason)


def clear_workdirs(home: Path) -> None:
    """Delete the scratch folders a previous worker process left (it was killed, or
    stopped while a report waited): their ``job.json`` holds the site-local secrets
    of their tasks. Call it when no task of this home runs."""
    shutil.rmtree(home / "attempts", ignore_errors=True)
