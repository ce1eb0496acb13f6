"""The edge worker's main loop.

One long-poll is always open: it brings jobs when the worker has free slots,
and directives (kill an attempt, maintenance, shutdown) at any time, so a busy
worker still hears the centre within a round trip. Beside it run the
heartbeat, the fence (``fence.py``: stop the tasks when heartbeats go
unanswered too long), the local control watcher and the delivery of spooled
reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import platform
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from tether import __version__
from tether.homes import WORKER_ENTRIES, private_home
from tether.protocol import (
    PROTOCOL_VERSION,
    UPDATED_EXIT,
    Directives,
    Job,
    PollRequest,
    WorkerFacts,
    sendable_text,
    validate_queue_name,
)
from tether.worker import control, update
from tether.worker.attempt import AttemptRunner, clear_workdirs, deliver, end_leftover
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient, HubError, Superseded
from tether.worker.fence import Fence
from tether.worker.launcher import make_launcher
from tether.worker.own_log import OwnLog, ship
from tether.worker.site_secrets import SiteSecrets, SiteSecretsError
from tether.worker.spool import Spool, clean_logs

log = logging.getLogger("tether.worker")


#: Seconds between shipments of the worker's own log, and the longest wait after
#: failed ones.
SHIP_INTERVAL = 2.0
SHIP_BACKOFF = 60.0

#: Exit status of a worker whose side task (poll, heartbeat, control, fence) died
#: of a bug: its service manager starts it again.
SIDE_TASK_DIED = 3


class WorkerExit(Exception):
    """The worker must stop with this message and a non-zero exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WorkerConfig:
    hub_url: str
    credential: str
    home: Path
    name: str
    #: Queues to serve; empty: all the credential allows.
    queues: list[str] = field(default_factory=list)
    concurrency: int = 4
    poll_wait: float = 30.0
    log_interval: float = 0.5
    #: Seconds between SIGTERM and SIGKILL when a task is killed.
    kill_grace: float = 1.5
    #: Seconds a drain may take before the remaining tasks are killed (None: no limit).
    drain_timeout: float | None = None
    ca_file: str | None = None
    proxy: str | None = None
    #: Local task logs: deleted after this many seconds, or oldest first beyond the size.
    log_max_age: float = 7 * 86400
    log_max_bytes: int = 1024**3
    #: Cached DAG bundles: deleted when unused this many seconds, or least recently
    #: used first beyond the size.
    bundle_max_age: float = 7 * 86400
    bundle_max_bytes: int = 1024**3
    #: How task processes start: "fork" (from a warm fork server) or "spawn".
    task_start: str = "fork"
    #: The umask task processes run with (the worker's own is 077).
    task_umask: int = 0o022

    def __post_init__(self) -> None:
        for q in self.queues:
            validate_queue_name(q)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


def lock_home(home: Path) -> IO[str]:
    """Take the home for this process (``HOME/worker.lock``) or raise WorkerExit.

    Held until the process exits. ``tether worker`` takes it before anything
    else, an enrolment included: a second process on a home in use must not
    re-enrol the worker (and so revoke the first one's credential).
    """
    private_home(home, WORKER_ENTRIES)
    lock = (home / "worker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise WorkerExit(f"another worker process is using {home}") from None
    return lock


class Worker:
    """Pulls jobs for its queues and runs up to ``concurrency`` slots at once.

    ``home_lock`` is the home's lock if the caller took it already (:func:`lock_home`).
    """

    def __init__(
        self,
        config: WorkerConfig,
        client: HubClient | None = None,
        *,
        home_lock: IO[str] | None = None,
    ) -> None:
        self.config = config
        self.client = client or HubClient(
            config.hub_url, config.credential, ca_file=config.ca_file, proxy=config.proxy
        )
        self.home = config.home
        self.bundles = BundleCache(
            self.home / "bundles",
            self.client.fetch_bundle,
            max_age=config.bundle_max_age,
            max_bytes=config.bundle_max_bytes,
        )
        self.spool = Spool(self.home / "spool")
        self.launcher = make_launcher(config.task_start)
        self.running: dict[str, AttemptRunner] = {}
        self.delivering: set[str] = set()
        self.queues: list[str] = list(config.queues)
        self.heartbeat_interval = 10.0
        self.fence = Fence(config.kill_grace)
        self.local_maintenance = False
        self.local_comment: str | None = None
        #: What is wrong with control.json, if anything (logged once).
        self._control_problem: str | None = None
        self.central_maintenance = False
        self.central_comment: str | None = None
        self.state = "starting"
        #: Host facts, read once (platform.platform() reads the interpreter's binary).
        self.host = {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        # Two waiters, two events: a single event cleared by one would hide a
        # change from the other.
        self._poll_wake = asyncio.Event()
        self._drain_wake = asyncio.Event()
        self._idle_wake = asyncio.Event()  # an update waiting for its drain
        self._last_clean = 0.0
        self._last_status: dict[str, Any] | None = None
        #: The spool problem the poll and the hub were last told of.
        self._spool_problem: str | None = None
        self._stopping = asyncio.Event()
        self._drain_deadline: float | None = None
        self._exit: WorkerExit | None = None
        self._lock_file = home_lock
        #: The worker's own connections and variables (read when it starts).
        self.site_secrets: SiteSecrets | None = None
        #: An update is under way: no new task (``update.py``).
        self.updating = False
        #: The update request last acted on, and why it failed (heartbeat facts).
        self.update_id: str | None = None
        self.update_error: str | None = None
        self._updates_seen: set[str] = set()
        #: The worker's own log, shipped to the hub (``own_log.py``).
        self.own_log = OwnLog()
        self.own_log.mask(config.credential)
        if config.proxy:
            with contextlib.suppress(ValueError):
                self.own_log.mask(urlsplit(config.proxy).password)

    # -- state ---------------------------------------------------------------------------

    @property
    def used_slots(self) -> int:
        return sum(r.job.pool_slots for r in self.running.values())

    @property
    def free_slots(self) -> int:
        return max(0, self.config.concurrency - self.used_slots)

    @property
    def maintenance(self) -> bool:
        return self.local_maintenance or self.central_maintenance

    @property
    def maintenance_comment(self) -> str | None:
        return self.local_comment if self.local_maintenance else self.central_comment

    @property
    def accepting(self) -> bool:
        """Whether to take new tasks: not in maintenance, not stopping, and the
        spool can be written (a task without a spool entry would be forgotten
        by a restart)."""
        return (
            not self.maintenance
            and not self.updating
            and not self._stopping.is_set()
            and self.spool.problem is None
        )

    def stop(self, timeout: float | None = None) -> None:
        """Drain: take no new work, let running tasks finish (at most ``timeout`` s)."""
        loop = asyncio.get_running_loop()
        limit = timeout if timeout is not None else self.config.drain_timeout
        if limit is not None:
            deadline = loop.time() + limit
            if self._drain_deadline is None or deadline < self._drain_deadline:
                self._drain_deadline = deadline
        if not self._stopping.is_set():
            log.info(
                "draining: %d running task(s)%s",
                len(self.running),
                f", at most {limit:g}s" if limit is not None else "",
            )
        self._stopping.set()
        self._notify()
        self._tell_hub()

    def _notify(self) -> None:
        """Something changed: slots, maintenance, stopping."""
        self._poll_wake.set()
        self._drain_wake.set()
        self._idle_wake.set()

    def _tell_hub(self) -> None:
        """Send a heartbeat now: the hub then answers the held poll without a job."""
        if self.state in ("starting", "stopped"):
            return

        async def beat() -> None:
            sent = asyncio.get_running_loop().time()
            with contextlib.suppress(ConnectionError, HubError):
                self._apply(await self.client.heartbeat(self.facts(), retry_for=5))
                self.fence.acknowledged(sent)

        self._spawn(beat())

    def kill_all(self, reason: str) -> None:
        for runner in list(self.running.values()):
            self._spawn(runner.kill(reason))

    def _fence_tasks(self, reason: str) -> int:
        """Stop every running task: the hub may be about to run them elsewhere."""
        runners = [r for r in self.running.values() if r.stoppable]
        for runner in runners:
            self._spawn(runner.kill(reason, grace=self.fence.kill_grace))
        return len(runners)

    def facts(self) -> WorkerFacts:
        return WorkerFacts(
            concurrency=self.config.concurrency,
            free_slots=self.free_slots,
            version=__version__,
            protocol=PROTOCOL_VERSION,
            running=sorted(set(self.running) | self.delivering),
            maintenance=self.maintenance,
            maintenance_comment=self.maintenance_comment,
            draining=self._stopping.is_set() or self.updating,
            spool_error=self.spool.problem,
            hostname=self.host["hostname"],
            platform=self.host["platform"],
            python=self.host["python"],
            queues=self.queues,
            update_id=self.update_id,
            update_error=self.update_error,
        )

    def _write_status(self) -> None:
        if self._stopping.is_set():
            state = "draining"
        elif self.updating:
            state = "updating"
        elif self.maintenance:
            state = "maintenance"
        else:
            state = self.state
        status = {
            "name": self.config.name,
            "pid": os.getpid(),
            "state": state,
            "queues": self.queues,
            "maintenance": self.maintenance,
            "maintenance_comment": self.maintenance_comment,
            "free_slots": self.free_slots,
            "spool_error": self.spool.problem,
            "running": [
                {
                    "attempt_id": a,
                    "dag_id": r.job.dag_id,
                    "task_id": r.job.task_id,
                    "run_id": r.job.run_id,
                    "try_number": r.job.try_number,
                }
                for a, r in sorted(self.running.items())
            ],
            "version": __version__,
        }
        if status != self._last_status:  # the control loop calls this twice a second
            control.write_status(self.home, status)
            self._last_status = status

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- life cycle ----------------------------------------------------------------------

    def _lock_home(self) -> bool:
        """Take the home unless the caller did; True if this call took it."""
        took = self._lock_file is None
        if self._lock_file is None:
            self._lock_file = lock_home(self.home)
        (self.home / control.PID).write_text(f"{os.getpid()}\n")
        return took

    async def run(self) -> None:
        """Serve until stopped and drained. Raises WorkerExit for a non-zero exit."""
        took_lock = self._lock_home()
        logging.getLogger("tether.worker").addHandler(self.own_log)
        try:
            await self._serve()
        finally:
            logging.getLogger("tether.worker").removeHandler(self.own_log)
            if took_lock and self._lock_file is not None:  # the caller's lock stays the caller's
                self._lock_file.close()
                self._lock_file = None
        if self._exit is not None:
            raise self._exit

    async def _serve(self) -> None:
        try:
            self.site_secrets = SiteSecrets(self.home)
        except SiteSecretsError as exc:
            raise WorkerExit(f"site-local secrets: {exc}") from None
        held = self.site_secrets.names()
        if held["connections"] or held["variables"]:
            log.info(
                "site-local secrets (they never leave this machine): connections %s, variables %s",
                ", ".join(held["connections"]) or "-",
                ", ".join(held["variables"]) or "-",
            )
        try:
            await self._run()
        finally:
            (self.home / control.PID).unlink(missing_ok=True)
            await self.client.aclose()

    async def _run(self) -> None:
        # A stop asked for before this start is stale.
        control.update_control(self.home, stop=False)
        self._read_control()
        log.info("worker %s connecting to %s", self.config.name, self.config.hub_url)
        asked = asyncio.get_running_loop().time()
        hello_task = asyncio.create_task(self.client.start_session(self.facts()))
        stop_task = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({hello_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not hello_task.done():  # stopped while still waiting for the hub
            hello_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hello_task
            log.info("stopped before the hub answered")
            return
        try:
            hello = hello_task.result()
        except HubError as exc:
            raise WorkerExit(f"the hub refused this worker: {exc.reason}") from None
        self.queues = hello.queues
        self.heartbeat_interval = hello.heartbeat_interval
        self.fence.start(self.client.lost_timeout, asked)
        self.state = "idle"
        log.info(
            "worker %s connected to hub %s; serving %s",
            self.config.name,
            hello.hub_version,
            ",".join(self.queues),
        )
        leftovers = self.spool.leftovers()  # what a previous process left behind
        for entry in leftovers:
            end_leftover(entry)
            self.spool.write(entry)
            self.delivering.add(entry.job.attempt_id)
        clear_workdirs(self.home)  # their tasks were ended just above
        if leftovers:
            self._spawn(self._deliver_leftovers(leftovers))
        self._write_status()
        side = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.fence.watch(self._fence_tasks), name="fence"),
            asyncio.create_task(self._control_loop(), name="control"),
            asyncio.create_task(self._poll_loop(), name="poll"),
            asyncio.create_task(self._own_log_loop(), name="log shipping"),
        ]
        for task in side:
            task.add_done_callback(self._supervise)
        try:
            await self._until_drained()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self.state = "stopped"
            self._write_status()
            with contextlib.suppress(Exception):  # the last lines, if the hub is there
                async with asyncio.timeout(2):
                    await ship(self.own_log, self.client)
            if self._exit is None:
                with contextlib.suppress(Exception):
                    await self.client.heartbeat(replace(self.facts(), state="offline"), retry_for=2)

    async def _until_drained(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._stopping.is_set() and not self.running and not self.delivering):
            timeout = None
            if self._drain_deadline is not None and self.running:
                timeout = self._drain_deadline - loop.time()
                if timeout <= 0:
                    log.warning("drain timeout: killing %d running task(s)", len(self.running))
                    self.kill_all("the worker's drain timeout ran out")
                    self._drain_deadline = None
                    timeout = None
            self._drain_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._drain_wake.wait()

    def _supervise(self, task: asyncio.Task[Any]) -> None:
        """A side task ended. Cancelled (the worker stops) or ended by ``_fatal``
        (it said why) is normal; anything else is a bug that would leave a worker
        that heartbeats and never takes work: log it with its traceback, kill the
        tasks, and exit 3 so that the service manager starts a fresh process."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None and self._exit is not None:
            return  # it stopped the worker itself, and said why
        name = task.get_name()
        why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        log.error("the worker's %s loop died (%s); stopping", name, why, exc_info=error)
        if self._exit is None:  # logged just above, with the traceback: _fatal says no more
            self._exit = WorkerExit(f"the worker's {name} loop died ({why})", code=SIDE_TASK_DIED)
        self._fatal(self._exit)

    def _fatal(self, exit_: WorkerExit) -> None:
        if self._exit is None:
            log.error("%s", exit_)
            self._exit = exit_
        self.kill_all(str(exit_))
        self.stop()

    # -- loops ---------------------------------------------------------------------------

    async def _deliver_leftovers(self, entries: list[Any]) -> None:
        """Deliver spooled reports one after another, oldest first.

        ``deliver`` drops a report the hub refuses or that cannot be sent, so
        one bad entry never keeps the others from going.
        """
        for entry in entries:
            try:
                await deliver(self.client, self.spool, entry)
            finally:
                self.delivering.discard(entry.job.attempt_id)
                self._notify()

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        while True:
            # One interval from send to send, however long the answer took: the
            # fence counts from the sending.
            await asyncio.sleep(max(0.0, sent + self.heartbeat_interval - loop.time()))
            sent = loop.time()
            try:
                directives = await self.client.heartbeat(
                    self.facts(), retry_for=self.heartbeat_interval
                )
            except Superseded as exc:
                self._fatal(WorkerExit(f"stopping: {exc.reason}", code=4))
                return
            except (ConnectionError, HubError) as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self.fence.acknowledged(sent)
            self._apply(directives)

    async def _own_log_loop(self) -> None:
        """Ship the worker's own log; after a failed shipment wait longer, up to
        SHIP_BACKOFF (the buffer keeps its newest lines meanwhile)."""
        wait = SHIP_INTERVAL
        while True:
            await asyncio.sleep(wait)
            shipped = await ship(self.own_log, self.client)
            wait = SHIP_INTERVAL if shipped else min(wait * 2, SHIP_BACKOFF)

    def _read_control(self) -> bool:
        """Apply ``control.json``; True if something changed."""
        wanted, problem = control.checked_control(control.read_control(self.home))
        if problem != self._control_problem:  # said once, not at every look
            self._control_problem = problem
            if problem is not None:
                log.warning("%s: %s; it is ignored", self.home / control.CONTROL, problem)
        changed = False
        on = bool(wanted.get("maintenance", False))
        comment = wanted.get("comment") if on else None
        if (on, comment) != (self.local_maintenance, self.local_comment):
            log.info(
                "maintenance %s (local)%s", "on" if on else "off", f": {comment}" if comment else ""
            )
            self.local_maintenance, self.local_comment = on, comment
            changed = True
            self._tell_hub()
        if wanted.get("stop") and not self._stopping.is_set():
            self.stop(wanted.get("timeout"))
            changed = True
        return changed

    def _check_spool(self) -> None:
        """Retry a spool that could not be written; tell the poll and the hub when
        that starts or ends (the spool logs it, once)."""
        self.spool.recover()
        if self.spool.problem != self._spool_problem:
            self._spool_problem = self.spool.problem
            self._notify()
            self._tell_hub()

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._read_control():
                self._notify()
            self._check_spool()
            self._write_status()

    async def _poll_loop(self) -> None:
        while True:
            slots = self.free_slots if self.accepting else 0
            self._poll_wake.clear()
            body = PollRequest(
                slots=slots,
                running=sorted(self.running),
                maintenance=not self.accepting,
                central_maintenance=self.central_maintenance,
                draining=self._stopping.is_set(),
                wait=self.config.poll_wait,
            )
            poll = asyncio.create_task(self.client.poll(body))
            if slots == 0:
                # A poll without slots never carries a job, so it is safe to drop
                # when slots free up; one with slots is always read to the end, or
                # a job claimed in that instant would be lost in transit.
                changed = asyncio.create_task(self._poll_wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        {poll, changed}, return_when=asyncio.FIRST_COMPLETED
                    )
                except asyncio.CancelledError:
                    poll.cancel()  # the worker stops; a poll without slots holds no job
                    raise
                finally:
                    changed.cancel()
                if poll not in done:
                    await _let_go(poll)
                    continue
            else:
                await asyncio.wait({poll})
            try:
                jobs, directives = poll.result()
            except Superseded as exc:
                self._fatal(WorkerExit(f"stopping: {exc.reason}", code=4))
                return
            except HubError as exc:
                self._fatal(WorkerExit(f"the hub refused this worker: {exc.reason}"))
                return
            except ConnectionError as exc:
                log.warning("poll failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._apply(directives)
            for job in jobs:
                if not self.accepting:  # claimed in the instant before the hub heard
                    log.info(
                        "starting %s.%s, claimed just before this worker stopped taking work",
                        job.dag_id,
                        job.task_id,
                    )
                self._start(job)

    def _apply(self, directives: Directives) -> None:
        """Act on the hub's directives; a reply without them (``{}``) changes nothing."""
        for attempt_id in directives.kill:
            runner = self.running.get(attempt_id)
            if runner is not None and runner.stoppable:  # not when only its report is left
                log.info("the hub ended attempt %s; killing it", attempt_id)
                self._spawn(runner.kill("the hub ended this attempt"))
        request = directives.update
        if request is not None and request not in self._updates_seen:
            # Each request once: replies repeat it until the hub hears the outcome.
            self._updates_seen.add(request)
            if not self._stopping.is_set():
                self._spawn(self._update(request))
        if directives.maintenance is None:
            return
        on = directives.maintenance
        comment = directives.maintenance_comment if on else None
        if (on, comment) != (self.central_maintenance, self.central_comment):
            log.info(
                "maintenance %s (from the hub)%s",
                "on" if on else "off",
                f": {comment}" if comment else "",
            )
            self.central_maintenance, self.central_comment = on, comment
            self._notify()
            self._write_status()
            self._tell_hub()  # the hub shows, and the poll obeys, what the worker does
        if directives.shutdown and not self._stopping.is_set():
            log.info("the hub asked this worker to shut down")
            self.stop()

    async def _update(self, request: str) -> None:
        """Move to the hub's version (``update.py``): fetch, drain, install, exit
        UPDATED_EXIT; on any failure go on serving with the old version."""
        log.info("the hub asked this worker to update to its version")
        try:
            fetched = await update.fetch(self.client, self.home)
        except update.UpdateFailed as exc:
            self._updated(request, str(exc))
            return
        if fetched is None:
            log.info("this worker already runs the hub's version %s: nothing to do", __version__)
            self._updated(request, None)
            return
        wheel, version = fetched
        self.updating = True
        self._notify()
        self._write_status()
        self._tell_hub()
        log.info(
            "updating to tether %s: draining %d running task(s) first", version, len(self.running)
        )
        while (self.running or self.delivering) and not self._stopping.is_set():
            self._idle_wake.clear()
            await self._idle_wake.wait()
        if self._stopping.is_set():  # stopped meanwhile: the stop wins, nothing installed
            log.info("stopping before the update to %s was installed", version)
            return
        try:
            await update.install(wheel, version)
        except update.UpdateFailed as exc:
            self.updating = False
            self._updated(request, str(exc))
            self._notify()
            return
        self.update_id, self.update_error = request, None
        log.info("installed tether %s; exiting %d to be started again", version, UPDATED_EXIT)
        self._exit = WorkerExit(
            f"updated to tether {version}: start the worker again", code=UPDATED_EXIT
        )
        self.stop()

    def _updated(self, request: str, error: str | None) -> None:
        """An update request ended without an update: tell the hub how."""
        self.update_id = request
        self.update_error = sendable_text(error) if error is not None else None
        if error is not None:
            log.error("update failed; this worker goes on with tether %s: %s", __version__, error)
        self._write_status()
        self._tell_hub()

    def _start(self, job: Job) -> None:
        runner = AttemptRunner(
            job,
            self.client,
            self.bundles,
            self.spool,
            self.home,
            log_interval=self.config.log_interval,
            kill_grace=self.config.kill_grace,
            launcher=self.launcher,
            umask=self.config.task_umask,
            site_secrets=self.site_secrets,
        )
        self.running[job.attempt_id] = runner
        self.fence.poke()  # a task started while fenced is stopped too
        self.state = "running"
        log.info(
            "running %s.%s try %d (attempt %s)",
            job.dag_id,
            job.task_id,
            job.try_number,
            job.attempt_id,
        )
        self._write_status()

        async def run() -> None:
            try:
                result = await runner.run()
                log.info("attempt %s ended %s", job.attempt_id, result.state)
            except Exception:
                log.exception("attempt %s crashed in the worker", job.attempt_id)
            finally:
                del self.running[job.attempt_id]
                if not self.running:
                    self.state = "idle"
                self._notify()
                self._write_status()
                self._clean_logs()

        self._spawn(run())

    def _clean_logs(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_clean < 60:
            return
        self._last_clean = now
        keep = {r.log_path for r in self.running.values()}
        keep |= {e.log_path for e in self.spool.leftovers()}
        clean_logs(self.home / "logs", self.config.log_max_age, self.config.log_max_bytes, keep)
        for sha in self.bundles.evict({r.job.bundle_sha for r in self.running.values()}):
            log.info("deleted cached bundle %s (unused)", sha[:12])


async def _let_go(poll: asyncio.Task[Any]) -> None:
    """Cancel a held poll and wait until it has let go of its connection.

    Only the poll's own cancellation and failure are swallowed: if this loop is
    itself cancelled meanwhile (the worker is stopping), that goes on up, or
    the loop would outlive the stop and the worker would wait for it for ever.
    """
    poll.cancel()
    try:
        await poll
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:  # the dropped poll's answer, whatever it was, is not wanted
        pass
