"""Worker sessions, heartbeats, directives and lost workers.

A worker process opens a session when it starts; the newest session of a
credential wins and an older one is refused (409) at its next request, so a
duplicated deployment stops itself while a restarted worker is never locked
out. Replies to polls and heartbeats carry *directives*: attempts to kill,
maintenance asked for from the centre, shutdown. They are computed from the
store each time, so a lost reply loses nothing.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import states as S
from tether.hub.core.runs import fail_task_instance, give_up_attempt, lock_run_of, utcnow
from tether.hub.store import effects
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import TaskAttempt, TaskInstance, Worker
from tether.protocol import PROTOCOL_VERSION, Directives

_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class Superseded(Exception):
    """A newer process of this worker has taken over (409)."""


class IncompatibleVersion(Exception):
    """The hub does not accept this worker's version (426)."""


class QueueRefused(Exception):
    """A process asks to serve a queue its credential does not allow (403)."""


def parse_version(text: str) -> tuple[int, int, int]:
    match = _VERSION_RE.match(text or "")
    if not match:
        return (0, 0, 0)
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def check_version(
    worker_version: str, protocol: int, hub_version: str, min_worker_version: str
) -> None:
    """The compatibility rule: same protocol, and a release no older than the minimum."""
    if protocol != PROTOCOL_VERSION:
        raise IncompatibleVersion(
            f"worker {worker_version} speaks protocol {protocol}; hub {hub_version} speaks "
            f"protocol {PROTOCOL_VERSION}"
        )
    if parse_version(worker_version) < parse_version(min_worker_version):
        raise IncompatibleVersion(
            f"worker {worker_version} is older than the minimum {min_worker_version} "
            f"accepted by hub {hub_version}"
        )


def serve_queues(worker: Worker, requested: list[str]) -> list[str]:
    """Record and return the queues the worker's process serves, as it says in its
    session's start and in every heartbeat: the requested ones, or all the
    credential allows when none are requested. QueueRefused for any other.
    """
    queues = list(requested or worker.allowed_queues)
    refused = [q for q in queues if q not in worker.allowed_queues]
    if refused:
        raise QueueRefused(
            f"worker {worker.name!r} may not serve {', '.join(refused)}; its credential "
            f"allows {', '.join(worker.allowed_queues)}"
        )
    worker.queues = queues
    return queues


def start_session(session: Session, worker: Worker, info: dict[str, Any]) -> tuple[str, list[str]]:
    """Open a new session for ``worker``, taking over from any older one.

    Returns the session id and the queues to serve (see :func:`serve_queues`).
    """
    queues = serve_queues(worker, info.get("queues") or [])
    now = utcnow()
    worker.session_id = secrets.token_hex(16)
    # A shutdown asked for from the centre ends the process it reached; a
    # process started afterwards (by an operator or a service manager) runs.
    worker.shutdown_requested = False
    # So does an update: the new process is the updated one (or an operator's
    # restart; either way it was not asked).
    worker.update_requested = None
    worker.first_seen = worker.first_seen or now
    record_heartbeat(worker, info, now)
    effects.tell(session, worker.name)  # an older process's held poll learns at once
    return worker.session_id, queues


def check_session(worker: Worker, session_id: str | None) -> None:
    if not session_id or session_id != worker.session_id:
        raise Superseded(
            f"another process of worker {worker.name!r} took over (session {session_id} is "
            "no longer current); this one must stop"
        )


def record_heartbeat(worker: Worker, info: dict[str, Any], now: datetime) -> None:
    worker.concurrency = int(info.get("concurrency", worker.concurrency or 0))
    worker.free_slots = int(info.get("free_slots", worker.free_slots or 0))
    worker.version = info.get("version", worker.version)
    worker.maintenance = bool(info.get("maintenance", False))
    worker.maintenance_comment = info.get("maintenance_comment")
    running = list(info.get("running", []))
    worker.info = {
        **{k: info[k] for k in ("hostname", "platform", "python") if k in info},
        "running": running,
        "spool_error": info.get("spool_error"),
        "update_error": info.get("update_error"),
    }
    if info.get("update_id") is not None and info["update_id"] == worker.update_requested:
        # Acted on: it failed (the old version runs on, and says why) or there was
        # nothing to do. Asked again, it is a new request.
        worker.update_requested = None
    if info.get("state") == "offline":
        state = S.WorkerState.OFFLINE
    elif info.get("draining"):
        state = S.WorkerState.DRAINING
    elif worker.maintenance:
        state = S.WorkerState.MAINTENANCE
    else:
        state = S.WorkerState.RUNNING if running else S.WorkerState.IDLE
    S.move_worker(worker, state, "reported", now)
    worker.last_heartbeat = now


def record_poll(worker: Worker, running: list[str], now: datetime) -> None:
    """A poll arrived: a sign of life, as a heartbeat is, that brings a lost worker back.

    Only its arrival counts: a held poll looked at again later, when work
    comes, says nothing of whether the worker is still there.
    """
    worker.last_heartbeat = now
    if worker.state == S.WorkerState.LOST:  # it is back
        back = S.WorkerState.RUNNING if running else S.WorkerState.IDLE
        S.move_worker(worker, back, "polled", now)


def accepting(worker: Worker) -> bool:
    """Whether the worker, as it last reported, takes new tasks: not in
    maintenance, not stopping, and its spool can be written."""
    return (
        not worker.maintenance
        and worker.state not in ("draining", "offline")
        and not (worker.info or {}).get("spool_error")
    )


def directives(session: Session, worker: Worker, running: list[str]) -> Directives:
    """What the worker must do: kill attempts the hub gave up on, maintenance,
    shutdown, update."""
    kill: list[str] = []
    if running:
        rows = session.execute(
            select(
                TaskAttempt.id,
                TaskAttempt.worker_name,
                TaskAttempt.state,
                TaskInstance.attempt_id,
                TaskInstance.state,
            )
            .join(TaskInstance, TaskInstance.id == TaskAttempt.task_instance_id)
            .where(TaskAttempt.id.in_(running))
        ).all()
        current = {
            attempt_id
            for attempt_id, owner, state, ti_attempt, ti_state in rows
            if owner == worker.name
            and state == S.RUNNING
            and ti_attempt == attempt_id
            and ti_state == S.RUNNING
        }
        kill = sorted(set(running) - current)
    return Directives(
        kill=kill,
        maintenance=worker.requested_maintenance,
        maintenance_comment=worker.requested_comment,
        shutdown=worker.shutdown_requested,
        update=worker.update_requested,
    )


def fail_attempt(session: Session, attempt: TaskAttempt, reason: str) -> None:
    """End a running attempt the hub gives up on; its task retries if it may.

    The attempt becomes ``lost``: any later report on it is refused (409).
    """
    now = utcnow()
    run = lock_run_of(session, attempt.task_instance_id)
    ti = session.scalar(
        lock_row(select(TaskInstance).where(TaskInstance.id == attempt.task_instance_id), session)
    )
    # Read again, locked, in that order: the caller selected the attempt before
    # the run lock, and a finish that held the lock meanwhile may have ended it
    # (PostgreSQL); giving up on it then would write ``lost`` over its result.
    session.scalar(
        lock_row(
            select(TaskAttempt).where(TaskAttempt.id == attempt.id), session
        ).execution_options(populate_existing=True)
    )
    if attempt.state != S.AttemptState.RUNNING:
        return
    give_up_attempt(session, attempt, reason, now)
    if ti is None or ti.attempt_id != attempt.id or ti.state != S.RUNNING:
        return
    fail_task_instance(session, run, ti, now, "attempt_lost")


def fail_attempts_of(session: Session, worker_name: str, reason: str) -> None:
    attempts = session.scalars(
        select(TaskAttempt)
        .where(TaskAttempt.worker_name == worker_name, TaskAttempt.state == S.RUNNING)
        .order_by(TaskAttempt.id)
    ).all()
    for attempt in attempts:
        fail_attempt(session, attempt, reason)


def mark_lost_workers(session: Session, now: datetime, timeout: timedelta) -> None:
    """Workers silent for longer than ``timeout`` become lost; their attempts fail or retry."""
    silent = session.scalars(
        lock_row(
            select(Worker)
            .where(
                Worker.state.in_(S.WORKER.sources(S.WorkerState.LOST, "silent")),
                Worker.last_heartbeat < now - timeout,
            )
            .order_by(Worker.name),
            session,
        )
    ).all()
    for worker in silent:
        S.move_worker(worker, S.WorkerState.LOST, "silent", now)
        fail_attempts_of(
            session, worker.name, f"worker {worker.name} lost: no heartbeat for {timeout}"
        )


def reconcile(
    session: Session, worker: Worker, running: list[str], now: datetime, grace: timedelta
) -> None:
    """Give up on attempts the hub thinks ``worker`` runs but the worker does not know.

    A job handed out on a poll whose answer never arrived (the worker gave up
    on the request in that instant) would otherwise stay ``running`` for ever
    on a worker that is alive and well. ``grace`` covers the time between a
    claim and the worker listing the attempt in its heartbeat.
    """
    unknown = session.scalars(
        select(TaskAttempt)
        .where(
            TaskAttempt.worker_name == worker.name,
            TaskAttempt.state == S.RUNNING,
            TaskAttempt.started_at < now - grace,
            TaskAttempt.id.not_in(running or [""]),
        )
        .order_by(TaskAttempt.id)
    ).all()
    for attempt in unknown:
        fail_attempt(session, attempt, f"worker {worker.name} does not run it")
