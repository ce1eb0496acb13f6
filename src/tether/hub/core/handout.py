"""Handing a running attempt the connections and variables its task declares.

The task process asks with its attempt's token (made at claim time, only its
hash is stored: ``task_attempt.token_hash``). The token is good while the
attempt runs, on a worker that is not revoked, and only for the names the
task declares in the run's pinned DAG; a connection or variable restricted to
queues is refused to a task on another queue. Every value handed out, and
every name a task read from its worker's own store instead, is written to
the audit log (the name, never the value).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import audit
from tether.hub.core import states as S
from tether.hub.core.secret_keys import SecretKeys
from tether.hub.core.vault import read_connection, read_variable
from tether.hub.store.models import DagRun, TaskAttempt, TaskInstance, Worker

Kind = Literal["connections", "variables"]


class Refused(Exception):
    """A request the audit log records as refused: who asked, about what."""

    def __init__(
        self, message: str, actor: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.actor = actor
        self.details = details or {}


class TokenRefused(Refused):
    """The token is not an attempt's that runs now (401)."""


class NotForThisTask(Refused):
    """The task does not declare the name, or may not read it from its queue (403)."""


class NoSuchSecret(LookupError):
    """The hub holds no connection or variable of that name (404)."""


def _attempt(session: Session, hashed: str) -> tuple[TaskAttempt, TaskInstance, dict[str, Any]]:
    """The running attempt a token belongs to, its task instance and its task's spec."""
    attempt = session.scalar(select(TaskAttempt).where(TaskAttempt.token_hash == hashed))
    if attempt is None:
        raise TokenRefused("invalid attempt token")
    actor = f"worker:{attempt.worker_name}"
    known = {"attempt_id": attempt.id}
    if attempt.state != S.RUNNING or attempt.ended_at is not None:
        raise TokenRefused(
            "this attempt has ended: its token fetches nothing any more", actor, known
        )
    ti = session.get(TaskInstance, attempt.task_instance_id)
    if ti is None or ti.attempt_id != attempt.id or ti.state != S.RUNNING:
        raise TokenRefused("this attempt no longer holds its task: its token is void", actor, known)
    worker = session.get(Worker, attempt.worker_name)
    if worker is None or worker.credential_hash is None:
        raise TokenRefused("the worker of this attempt was revoked or removed", actor, known)
    run = session.get(DagRun, ti.dag_run_id)
    assert run is not None  # a task instance's run is deleted with it
    spec = next(t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id)
    return attempt, ti, spec


def hand_out(
    session: Session,
    keys: SecretKeys,
    hashed: str,
    kind: Kind,
    name: str,
    *,
    local: bool = False,
    address: str | None = None,
) -> dict[str, Any] | None:
    """The connection or variable ``name`` for the attempt whose token hashes to ``hashed``.

    With ``local`` the task read it from its worker's own store: only that is
    recorded, and nothing is returned.
    """
    attempt, ti, spec = _attempt(session, hashed)
    word = kind[:-1]
    details = {
        "attempt_id": attempt.id,
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "queue": ti.queue,
    }
    actor = f"worker:{attempt.worker_name}"
    if name not in spec.get(kind, []):
        raise NotForThisTask(
            f"task {ti.task_id!r} of DAG {ti.dag_id!r} does not declare {word} {name!r}: "
            f"add {kind}=[{name!r}] to the task or its DAG",
            actor,
            details,
        )
    if local:
        audit.record(session, actor, "secret.local_use", f"{word}:{name}", details, address)
        return None
    answer: dict[str, Any]
    if kind == "connections":
        found = read_connection(session, keys, name)
        if found is None:
            raise NoSuchSecret(f"no connection {name!r} on the hub")
        conn, queues = found
        answer = conn.to_dict()
    else:
        held = read_variable(session, keys, name)
        if held is None:
            raise NoSuchSecret(f"no variable {name!r} on the hub")
        value, is_secret, queues = held
        answer = {"key": name, "value": value, "is_secret": is_secret}
    if queues and ti.queue not in queues:
        raise NotForThisTask(
            f"{word} {name!r} may be read by tasks of queues {', '.join(queues)}; "
            f"this task runs on queue {ti.queue!r}",
            actor,
            details,
        )
    audit.record(session, actor, "secret.read", f"{word}:{name}", details, address)
    return answer
