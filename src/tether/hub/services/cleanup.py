"""Housekeeping: delete finished runs, and bundles nothing uses, older than a cutoff;
and audit entries older than a cutoff of their own.

Behind ``tether db clean``, which works on the database directly while the
hub keeps serving. Runs go in batches, each batch its own short
transaction, so the hub's writers (SQLite has one write lock) wait at most
one batch. Deleting a ``dag_run`` row deletes its task instances, their
attempts and the attempts' log chunks through the foreign keys'
``ON DELETE CASCADE``, in the store's lock order (run, task instances,
attempts).

The audit log is kept longer than runs (a year by default): a reviewer asks
who revoked a worker months after its runs stopped mattering. So its entries
have their own cutoff, and nothing else deletes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from tether.hub.core import states as S
from tether.hub.store.db import Store
from tether.hub.store.dialect import foreign_keys_enforced, lock_row, pause_between_batches
from tether.hub.store.models import (
    AuditEntry,
    Bundle,
    CallbackRequest,
    Dag,
    DagRun,
    LogChunk,
    TaskAttempt,
    TaskInstance,
)

#: The tables ``db clean`` deletes from, in the order its counts are printed.
TABLES: dict[str, type[DagRun | TaskInstance | TaskAttempt | LogChunk | Bundle]] = {
    "dag_run": DagRun,
    "task_instance": TaskInstance,
    "task_attempt": TaskAttempt,
    "log_chunk": LogChunk,
    "bundle": Bundle,
}


class CleanupRefused(Exception):
    """Cleaning this database would do harm (see the message)."""


@dataclass
class Result:
    batches: int = 0
    runs: int = 0
    bundles: int = 0
    audit_entries: int = 0


def count_rows(session: Session) -> dict[str, int]:
    """Rows in each table ``db clean`` deletes from."""
    return {
        name: session.scalar(select(func.count()).select_from(model)) or 0
        for name, model in TABLES.items()
    }


def _old_runs(cutoff: datetime) -> Select[Any]:
    """Runs that finished before ``cutoff``. Unfinished runs are never old."""
    return select(DagRun.id).where(DagRun.state.in_(S.RUN_FINISHED), DagRun.ended_at < cutoff)


def _unused_bundles(
    cutoff: datetime, *, without_old_runs: bool = False
) -> list[ColumnElement[bool]]:
    """Bundles no DAG, run or pending DAG callback uses, replaced by a newer bundle
    before ``cutoff``.

    The age of a bundle is when it stopped being the newest, not when it was
    made: one that was current at any time since the cutoff is kept, so a run
    created from it just as a re-parse replaced it cannot lose its code.
    ``without_old_runs``: as if the old runs were gone already (for counting).
    """
    used_by_runs = select(DagRun.bundle_sha)
    if without_old_runs:
        used_by_runs = used_by_runs.where(DagRun.id.not_in(_old_runs(cutoff)))
    newer = aliased(Bundle)
    return [
        Bundle.sha.not_in(select(Dag.bundle_sha)),
        Bundle.sha.not_in(used_by_runs),
        Bundle.sha.not_in(select(CallbackRequest.bundle_sha)),  # a DAG callback yet to run
        exists(
            select(newer.sha).where(newer.created_at > Bundle.created_at, newer.created_at < cutoff)
        ),
    ]


def count_old(session: Session, cutoff: datetime) -> dict[str, int]:
    """Rows that cleaning at ``cutoff`` would delete now, per table."""
    runs = _old_runs(cutoff)
    tis = select(TaskInstance.id).where(TaskInstance.dag_run_id.in_(runs))
    attempts = select(TaskAttempt.id).where(TaskAttempt.task_instance_id.in_(tis))
    chunks = select(LogChunk.id).where(LogChunk.attempt_id.in_(attempts))
    bundles = select(Bundle.sha).where(*_unused_bundles(cutoff, without_old_runs=True))

    def count(stmt: Select[Any]) -> int:
        return session.scalar(select(func.count()).select_from(stmt.subquery())) or 0

    return {
        "dag_run": count(runs),
        "task_instance": count(tis),
        "task_attempt": count(attempts),
        "log_chunk": count(chunks),
        "bundle": count(bundles),
    }


def _old_audit(cutoff: datetime) -> Select[Any]:
    return select(AuditEntry.id).where(AuditEntry.at < cutoff)


def count_audit(session: Session, cutoff: datetime) -> tuple[int, int]:
    """``(all, older)``: audit entries in the store, and those written before ``cutoff``."""
    total = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    old = session.scalar(select(func.count()).select_from(_old_audit(cutoff).subquery())) or 0
    return total, old


def delete_old_audit(session: Session, cutoff: datetime, batch_size: int) -> int:
    """Delete up to ``batch_size`` of the oldest audit entries written before ``cutoff``."""
    ids = session.scalars(_old_audit(cutoff).order_by(AuditEntry.id).limit(batch_size)).all()
    if ids:
        session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
    return len(ids)


def delete_old_runs(session: Session, cutoff: datetime, batch_size: int) -> int:
    """Delete up to ``batch_size`` runs that finished before ``cutoff``; their rows go too.

    The runs are locked first (PostgreSQL), and the condition is checked
    again under the lock, so a run cleared meanwhile (running again) stays.
    """
    ids = session.scalars(
        lock_row(
            _old_runs(cutoff).order_by(DagRun.id).limit(batch_size),
            session,
        )
    ).all()
    if ids:
        session.execute(delete(DagRun).where(DagRun.id.in_(ids)))
    return len(ids)


def clean(
    store: Store,
    cutoff: datetime,
    batch_size: int,
    progress: Callable[[Result], None] = lambda _: None,
    *,
    audit_cutoff: datetime | None = None,
) -> Result:
    """Delete every run that finished before ``cutoff``, batch by batch, then the
    bundles nothing uses any more, one per transaction, then (if ``audit_cutoff``
    is given) the audit entries written before ``audit_cutoff``, batch by batch."""
    result = Result()
    with store.transaction() as s:
        if not foreign_keys_enforced(s):
            raise CleanupRefused("foreign keys are off: deleting runs would orphan their rows")
        pause = pause_between_batches(s)
    while True:
        with store.transaction() as s:
            deleted = delete_old_runs(s, cutoff, batch_size)
        if deleted:
            result.batches += 1
            result.runs += deleted
            progress(result)
        if deleted < batch_size:
            break
        time.sleep(pause)
    with store.transaction() as s:
        shas = s.scalars(select(Bundle.sha).where(*_unused_bundles(cutoff))).all()
    for sha in shas:
        with store.transaction() as s:  # the conditions again: a run may use it by now
            gone = s.execute(delete(Bundle).where(Bundle.sha == sha, *_unused_bundles(cutoff)))
            result.bundles += cast(CursorResult[Any], gone).rowcount
    while audit_cutoff is not None:
        with store.transaction() as s:
            deleted = delete_old_audit(s, audit_cutoff, batch_size)
        result.audit_entries += deleted
        if deleted < batch_size:
            break
        time.sleep(pause)
    return result
