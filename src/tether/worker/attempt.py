"""Run one attempt: a child process, its log shipped by tailing a file, its result reported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from tether.protocol import ATTEMPT_END_STATES, ATTEMPT_FAILED, AttemptResult, Job
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient, HubError

log = logging.getLogger("tether.worker")

#: Largest log chunk sent in one request.
CHUNK_SIZE = 512 * 1024


class LogShipper:
    """Sends a growing log file to the hub in offset-addressed chunks."""

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
                data = f.read(CHUNK_SIZE)
            if not data:
                return
            self.offset = await self.client.upload_log(self.attempt_id, self.offset, data)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.ship_available()


class AttemptRunner:
    """Runs one job to its end and reports it."""

    def __init__(
        self,
        job: Job,
        client: HubClient,
        bundles: BundleCache,
        home: Path,
        *,
        log_interval: float = 0.5,
        kill_grace: float = 5.0,
    ) -> None:
        self.job = job
        self.client = client
        self.bundles = bundles
        self.log_interval = log_interval
        self.kill_grace = kill_grace
        self.workdir = home / "attempts" / job.attempt_id
        self.log_path = (
            home / "logs" / job.dag_id / job.run_id / job.task_id / f"attempt={job.try_number}.log"
        )
        self.process: asyncio.subprocess.Process | None = None

    async def run(self) -> AttemptResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        shipper = LogShipper(self.client, self.job.attempt_id, self.log_path)
        shipping = asyncio.create_task(shipper.run(self.log_interval))
        try:
            result = await self._execute()
        finally:
            shipping.cancel()
            try:
                await shipping
            except asyncio.CancelledError:
                pass
            except HubError as exc:  # the hub refused a chunk; the result still goes
                log.warning("log upload for attempt %s refused: %s", self.job.attempt_id, exc)
        for step in (
            shipper.ship_available,
            lambda: self.client.finish(self.job.attempt_id, result),
        ):
            try:
                await step()
            except HubError as exc:
                log.warning("hub refused a report on attempt %s: %s", self.job.attempt_id, exc)
        shutil.rmtree(self.workdir, ignore_errors=True)  # scratch space; the log stays
        return result

    def _note(self, text: str) -> None:
        with self.log_path.open("a") as f:
            f.write(f"[tether] {text}\n")

    async def _execute(self) -> AttemptResult:
        job = self.job
        try:
            bundle_dir = await self.bundles.ensure(job.bundle_sha)
        except Exception as exc:
            self._note(f"could not get DAG bundle {job.bundle_sha}: {exc}")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"bundle unavailable: {exc}")
        job_file = self.workdir / "job.json"
        result_file = self.workdir / "result.json"
        job_file.write_text(json.dumps({"job": job.to_dict(), "bundle_dir": str(bundle_dir)}))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as logf:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tether.worker.runner",
                str(job_file),
                str(result_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own process group: we can kill the whole tree
            )
        try:
            code = await asyncio.wait_for(self.process.wait(), job.execution_timeout)
        except TimeoutError:
            self._note(f"execution_timeout of {job.execution_timeout}s exceeded; killing the task")
            await self.kill()
            return AttemptResult(state=ATTEMPT_FAILED, error="execution_timeout exceeded")
        return self._result(code, result_file)

    def _result(self, code: int, result_file: Path) -> AttemptResult:
        if code < 0:
            name = signal.Signals(-code).name
            self._note(f"task process was killed by signal {name}")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"killed by signal {name}")
        try:
            data = json.loads(result_file.read_text())
        except (OSError, ValueError):
            self._note(f"task process exited with code {code} without a result")
            return AttemptResult(state=ATTEMPT_FAILED, error=f"exit code {code}, no result")
        if code != 0 or data.get("state") not in ATTEMPT_END_STATES:
            return AttemptResult(state=ATTEMPT_FAILED, error=f"exit code {code}")
        return AttemptResult(
            state=data["state"],
            output=data.get("output"),
            error=data.get("error"),
            no_retry=bool(data.get("no_retry", False)),
        )

    async def kill(self) -> None:
        """SIGTERM the task's process group, then SIGKILL after the grace period."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
