"""Simulated edge workers for bench/fleet.py: one client process's share of the fleet.

Each simulated worker is what ``tether worker`` is on the wire, without
running anything: its own enrolment token (made through the REST API), its
own httpx client, ``POST /enrol`` then ``POST /sessions`` with the facts a
real worker sends, one held poll at a time (re-opened as soon as it is
answered), and a heartbeat every interval the session's answer gives,
counted from send to send as the real worker does. Every request and answer
is a :mod:`tether.protocol` message (``to_wire`` / ``from_wire``), so the
bench speaks exactly the protocol. A worker that gets a job fetches the
job's bundle once (cached by sha, as a real worker does), uploads a short
log and reports success; it records when the job arrived.

A failed request (a transport error, a 5xx or 429) is counted by kind and
retried with backoff as the real worker's client does (a heartbeat for one
interval, the offline one for 2 s, a report or a connection for 120 s);
a 4xx is counted and not retried. What the real worker does and these do
not: run a task process, spool reports to disk, watch its fence, hold a
poll without slots while all its slots are taken. The first heartbeat of
each worker comes at a random point of its first interval: a real fleet
was not started in one instant, and heartbeats all due together would
measure a burst of the bench's making.

Worker ``i`` of the fleet is ``fleet-NNNNN`` on queue ``site-i`` (the DAG
fleet.py writes gives work to the first ``--active`` share of those
queues); this client takes every ``i`` with ``i % clients == client``. It
talks to fleet.py in JSON lines:
``{"ready": ...}`` once its tokens exist; on ``go`` (stdin) it connects
every worker at once, says ``{"connected": ...}`` and keeps them going; on
``stop`` or the end of stdin it stops them (an ``offline`` heartbeat, as a
real worker's last) and says ``{"result": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import resource
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from tether import __version__
from tether.protocol import (
    MAX_CLAIM_WAIT,
    PROTOCOL_VERSION,
    SESSION_HEADER,
    WORKER_API_PREFIX,
    AttemptResult,
    EnrolReply,
    EnrolRequest,
    FinishReply,
    HeartbeatReply,
    InvalidJob,
    Job,
    LogAck,
    MalformedMessage,
    Message,
    PollReply,
    PollRequest,
    SessionReply,
    WorkerFacts,
)

M = TypeVar("M", bound=Message)
#: Seconds a worker keeps trying to connect, or a report to be taken.
PERSIST = 120.0
LOG = b"[fleet] a trivial task: nothing to do\n"
HOST = {
    "hostname": socket.gethostname(),
    "platform": platform.platform(),
    "python": platform.python_version(),
}


class Refused(Exception):
    """A 4xx answer: trying again would be refused again."""


class Tally:
    """What this client's workers saw: errors by kind, heartbeats, jobs."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        #: (wall-clock time sent, round trip in seconds) of every answered heartbeat.
        self.heartbeats: list[tuple[float, float]] = []
        #: One entry per job handed to a worker of this client.
        self.jobs: list[dict[str, Any]] = []
        self.finished = 0


class SimWorker:
    """One simulated worker with its own client (its own connections to the hub)."""

    def __init__(self, args: argparse.Namespace, index: int, tally: Tally) -> None:
        self.name = f"fleet-{index:05d}"
        self.queue = f"site-{index}"
        self.concurrency: int = args.concurrency
        self.poll_wait: float = args.poll_wait
        self.tally = tally
        self.http = httpx.AsyncClient(
            base_url=args.hub.rstrip("/") + WORKER_API_PREFIX,
            headers={"User-Agent": f"tether-worker/{__version__}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            trust_env=False,
        )
        self.session_id = ""
        self.interval = 10.0
        self.running: set[str] = set()
        self.slot_freed = asyncio.Event()
        self.bundles: set[str] = set()
        self.loops: list[asyncio.Task[None]] = []
        self.reports: set[asyncio.Task[None]] = set()

    def facts(self) -> WorkerFacts:
        return WorkerFacts(
            concurrency=self.concurrency,
            free_slots=self.concurrency - len(self.running),
            version=__version__,
            protocol=PROTOCOL_VERSION,
            running=sorted(self.running),
            queues=[self.queue],
            hostname=HOST["hostname"],
            platform=HOST["platform"],
            python=HOST["python"],
        )

    async def call(self, what: str, path: str, kind: type[M], **kwargs: Any) -> M:
        """POST ``path`` and read a ``kind``; every failure is counted under ``what``."""
        try:
            answer = await self.http.post(path, **kwargs)
        except httpx.HTTPError as exc:
            self.tally.errors[f"{what}: {type(exc).__name__}"] += 1
            raise
        if answer.status_code >= 400:
            self.tally.errors[f"{what}: HTTP {answer.status_code}"] += 1
            if answer.status_code < 500 and answer.status_code != 429:
                raise Refused(f"{what}: HTTP {answer.status_code}: {answer.text[:200]}")
            raise ConnectionError(f"{what}: HTTP {answer.status_code}")
        try:
            return kind.from_wire(answer.json())
        except (ValueError, MalformedMessage) as exc:
            self.tally.errors[f"{what}: {type(exc).__name__}"] += 1
            raise ConnectionError(f"{what}: {exc}") from None

    async def persist(
        self, what: str, path: str, kind: type[M], retry_for: float = PERSIST, **kwargs: Any
    ) -> M:
        """:meth:`call` until answered, backing off as the real worker's client does,
        for ``retry_for`` seconds; each failed try is counted."""
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            try:
                return await self.call(what, path, kind, **kwargs)
            except (httpx.HTTPError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 10.0)

    async def connect(self, token: str) -> float | None:
        """Enrol and start a session; the seconds it took, or None if it failed."""
        began = time.perf_counter()
        try:
            enrolled = await self.persist(
                "enrol", "/enrol", EnrolReply, json=EnrolRequest(token).to_wire()
            )
            self.http.headers["Authorization"] = f"Bearer {enrolled.credential}"
            hello = await self.persist(
                "session", "/sessions", SessionReply, json=self.facts().to_wire()
            )
        except (httpx.HTTPError, ConnectionError, Refused) as exc:
            print(f"{self.name} did not connect: {exc}", file=sys.stderr)
            return None
        self.session_id = hello.session_id
        self.interval = hello.heartbeat_interval
        return time.perf_counter() - began

    def start(self) -> None:
        self.loops = [
            asyncio.create_task(self.heartbeat_loop()),
            asyncio.create_task(self.poll_loop()),
        ]

    async def heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            # Timed from the first try, as the real worker's fence counts it.
            sent, wall = loop.time(), time.time()
            with contextlib.suppress(httpx.HTTPError, ConnectionError, Refused):
                await self.persist(
                    "heartbeat",
                    "/heartbeat",
                    HeartbeatReply,
                    retry_for=self.interval,
                    json=self.facts().to_wire(),
                    headers={SESSION_HEADER: self.session_id},
                )
                self.tally.heartbeats.append((wall, loop.time() - sent))
            await asyncio.sleep(max(0.0, sent + self.interval - loop.time()))

    async def poll_loop(self) -> None:
        while True:
            free = self.concurrency - len(self.running)
            if free <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            body = PollRequest(slots=free, running=sorted(self.running), wait=self.poll_wait)
            try:
                reply = await self.call(
                    "poll",
                    "/poll",
                    PollReply,
                    json=body.to_wire(),
                    headers={SESSION_HEADER: self.session_id},
                    timeout=httpx.Timeout(self.poll_wait + 30.0, connect=10.0),
                )
            except (httpx.HTTPError, ConnectionError, Refused):
                await asyncio.sleep(1.0)
                continue
            received = time.time()
            for item in reply.jobs:
                try:
                    job = Job.from_dict(item)
                except InvalidJob:
                    self.tally.errors["poll: InvalidJob"] += 1
                    continue
                self.tally.jobs.append(
                    {"run_id": job.run_id, "task_id": job.task_id, "received": received}
                )
                self.running.add(job.attempt_id)
                report = asyncio.create_task(self.run(job))
                self.reports.add(report)
                report.add_done_callback(self.reports.discard)

    async def run(self, job: Job) -> None:
        """What a real worker sends for a task that succeeds at once."""
        try:
            if job.bundle_sha not in self.bundles:
                await self.fetch_bundle(job.bundle_sha)
            await self.persist(
                "logs",
                f"/attempts/{job.attempt_id}/logs",
                LogAck,
                params={"offset": 0},
                content=LOG,
                headers={"Content-Type": "application/octet-stream"},
            )
            result = AttemptResult("success")
            await self.persist(
                "finish", f"/attempts/{job.attempt_id}/finish", FinishReply, json=result.to_wire()
            )
            self.tally.finished += 1
        except (httpx.HTTPError, ConnectionError, Refused) as exc:
            print(f"{self.name}: attempt {job.attempt_id}: {exc}", file=sys.stderr)
        finally:
            self.running.discard(job.attempt_id)
            self.slot_freed.set()

    async def fetch_bundle(self, sha: str) -> None:
        try:
            answer = await self.http.get(f"/bundles/{sha}", timeout=120.0)
        except httpx.HTTPError as exc:
            self.tally.errors[f"bundle: {type(exc).__name__}"] += 1
            return
        if answer.status_code != 200:
            self.tally.errors[f"bundle: HTTP {answer.status_code}"] += 1
        elif hashlib.sha256(answer.content).hexdigest() != sha:
            self.tally.errors["bundle: wrong sha256"] += 1
        else:
            self.bundles.add(sha)

    async def stop(self) -> None:
        for task in self.loops:
            task.cancel()
        await asyncio.gather(*self.loops, *self.reports, return_exceptions=True)
        if self.session_id:
            offline = replace(self.facts(), state="offline")
            with contextlib.suppress(httpx.HTTPError, ConnectionError, Refused):
                await self.persist(
                    "offline heartbeat",
                    "/heartbeat",
                    HeartbeatReply,
                    retry_for=2.0,
                    json=offline.to_wire(),
                    headers={SESSION_HEADER: self.session_id},
                )
        await self.http.aclose()


async def make_tokens(args: argparse.Namespace, workers: list[SimWorker]) -> list[str]:
    """One enrolment token per worker, from the REST API (a few at a time)."""
    admin = os.environ["FLEET_ADMIN_TOKEN"]
    gate = asyncio.Semaphore(4)
    async with httpx.AsyncClient(
        base_url=args.hub.rstrip("/") + "/api/v1",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=60.0,
        trust_env=False,
    ) as api:

        async def one(worker: SimWorker) -> str:
            async with gate:
                made = await api.post(
                    "/workers/enrolment-tokens",
                    json={"queues": [worker.queue], "name": worker.name},
                )
                made.raise_for_status()
                token: str = made.json()["token"]
                return token

        return list(await asyncio.gather(*(one(w) for w in workers)))


def say(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    tally = Tally()
    indices = range(args.client, args.workers, args.clients)
    workers = [SimWorker(args, i, tally) for i in indices]
    tokens = await make_tokens(args, workers)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    say(ready=len(workers))
    if (await stdin.readline()).strip() != b"go":
        return
    began = time.perf_counter()
    took = await asyncio.gather(*(w.connect(t) for w, t in zip(workers, tokens, strict=True)))
    connected = [w for w, t in zip(workers, took, strict=True) if t is not None]
    for worker in connected:
        worker.start()
    say(
        connected={
            "workers": len(connected),
            "failed": len(workers) - len(connected),
            "seconds": [t for t in took if t is not None],
            "total": time.perf_counter() - began,
        }
    )
    while (line := (await stdin.readline()).strip()) not in (b"stop", b""):
        print(f"unknown command {line!r}", file=sys.stderr)
    await asyncio.gather(*(w.stop() for w in workers))
    say(
        result={
            "errors": dict(tally.errors),
            "heartbeats": tally.heartbeats,
            "jobs": tally.jobs,
            "finished": tally.finished,
        }
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hub", required=True)
    parser.add_argument("--client", type=int, required=True, help="this client's number")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True, help="workers in the whole fleet")
    parser.add_argument("--concurrency", type=int, default=4, help="slots of each worker")
    parser.add_argument("--poll-wait", type=float, default=MAX_CLAIM_WAIT)
    return parser.parse_args()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: fleet.py stops its clients itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Two sockets a worker at rest (its held poll, its heartbeat), more while it reports.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(parse()))
