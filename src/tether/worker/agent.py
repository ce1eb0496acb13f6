"""The edge worker's main loop: heartbeat, long-poll claim, run attempts, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tether import __version__
from tether.protocol import Job, validate_queue_name
from tether.worker.attempt import AttemptRunner
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient, HubError, Unauthorized

log = logging.getLogger("tether.worker")


@dataclass
class WorkerConfig:
    hub_url: str
    token: str
    queues: list[str]
    home: Path
    name: str = field(default_factory=socket.gethostname)
    concurrency: int = 4
    heartbeat_interval: float = 10.0
    claim_wait: float = 30.0
    log_interval: float = 0.5

    def __post_init__(self) -> None:
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        for q in self.queues:
            validate_queue_name(q)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


class Worker:
    """Pulls jobs for its queues and runs up to ``concurrency`` at once."""

    def __init__(self, config: WorkerConfig, client: HubClient | None = None) -> None:
        self.config = config
        self.client = client or HubClient(config.hub_url, config.token, config.name)
        self.bundles = BundleCache(config.home / "bundles", self.client.fetch_bundle)
        self.running: dict[str, AttemptRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def free_slots(self) -> int:
        return self.config.concurrency - len(self.running)

    def stop(self) -> None:
        """Stop taking work; running tasks finish. Safe to call more than once."""
        self._stopping.set()
        self._slot_freed.set()

    def _info(self) -> dict[str, object]:
        return {
            "name": self.config.name,
            "queues": self.config.queues,
            "concurrency": self.config.concurrency,
            "free_slots": self.free_slots,
            "running": sorted(self.running),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "worker_version": __version__,
        }

    async def run(self) -> None:
        """Serve until :meth:`stop`; then wait for running tasks to finish."""
        self.config.home.mkdir(parents=True, exist_ok=True)
        log.info(
            "worker %s connecting to %s for queues %s",
            self.config.name,
            self.config.hub_url,
            ",".join(self.config.queues),
        )
        await self.client.heartbeat(self._info())  # waits until the hub answers
        log.info("worker %s connected", self.config.name)
        beat = asyncio.create_task(self._heartbeat_loop())
        try:
            await self._claim_loop()
            if self._tasks:
                log.info("draining: waiting for %d running task(s)", len(self._tasks))
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            with contextlib.suppress(Exception):
                await self.client.heartbeat({**self._info(), "state": "offline"}, retry_for=2)
            await self.client.aclose()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self.client.heartbeat(self._info(), retry_for=self.config.heartbeat_interval)
            except (ConnectionError, HubError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            if self.free_slots <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            claim = asyncio.create_task(
                self.client.claim(self.config.queues, self.free_slots, self.config.claim_wait)
            )
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if claim not in done:
                # Stopping while the claim is held open: give it up. The hub
                # hands out no job on a request whose client has gone.
                claim.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await claim
                return
            jobs = await _claim_result(claim)
            for job in jobs:
                self._start(job)

    def _start(self, job: Job) -> None:
        runner = AttemptRunner(
            job,
            self.client,
            self.bundles,
            self.config.home,
            log_interval=self.config.log_interval,
        )
        self.running[job.attempt_id] = runner
        log.info(
            "running %s.%s try %d (attempt %s)",
            job.dag_id,
            job.task_id,
            job.try_number,
            job.attempt_id,
        )

        async def run() -> None:
            try:
                result = await runner.run()
                log.info("attempt %s ended %s", job.attempt_id, result.state)
            except Exception:
                log.exception("attempt %s crashed in the worker", job.attempt_id)
            finally:
                del self.running[job.attempt_id]
                self._slot_freed.set()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _claim_result(claim: asyncio.Task[list[Job]]) -> list[Job]:
    try:
        return await claim
    except Unauthorized:
        raise
    except Exception as exc:
        log.warning("claim failed: %s", exc)
        await asyncio.sleep(1.0)
        return []
